"""The k-of-n debounce and cooldown (agent/decision.py)."""

from ganomaly_edge.agent.decision import Debouncer


def test_k_of_n_raises_one_alarm_per_passing_defect():
    d = Debouncer(threshold=1.0, k=2, n=3, cooldown_s=0.0)
    scores = [0.1, 1.5, 0.2, 1.6, 1.7, 1.8, 1.9, 0.1, 0.2, 0.1, 2.0, 2.1]
    fired = [i for i, s in enumerate(scores) if d.update(s, float(i), i) is not None]
    assert fired == [3, 11]  # one alarm for frames 3..6, re-armed after the window cleared


def test_alarm_carries_the_most_anomalous_frame_of_the_window():
    d = Debouncer(1.0, 2, 3, 0.0)
    d.update(3.0, 0.0, "a")
    assert d.update(1.2, 1.0, "b") == "a"


def test_cooldown():
    d = Debouncer(1.0, 1, 1, cooldown_s=5.0)
    assert d.update(2, 0.0, 1) is not None
    assert d.update(2, 1.0, 2) is None  # inside the cooldown
    assert d.update(2, 6.0, 3) is not None


def test_single_frame_items_each_alarm():
    d = Debouncer(1.0, 1, 1, 0.0)
    assert [d.update(2.0, float(i), i) for i in range(3)] == [0, 1, 2]
