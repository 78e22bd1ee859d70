"""``ganomaly-bench items``: the item-mode latency benchmark runs end to end (a real mosquitto, the
agent as a process, the fake GigE Vision camera or a looping video) and prints its figures; what
they hold, not how fast (the machine is shared)."""

import json


def test_items_bench_prints_one_result_per_trigger_and_exits_cleanly(tiny_bundle, capsys):
    from ganomaly_edge.tools.bench import main

    # it used to print its figures and then fall through into the agent benchmark and crash
    assert main(["items", tiny_bundle, "--items", "6", "--rate", "4", "--workers", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["workers"] == 1 and r["items"] == 6
    assert r["results"] == 6 and r["missed"] == 0, r
    for key in ("trigger_to_decision_agent", "trigger_published_to_result_received"):
        assert r[key]["n"] == 6 and 0 < r[key]["p50_ms"] <= r[key]["p99_ms"] <= r[key]["max_ms"]
