"""A GPIO line as the item trigger (agent/gpio.py, items.trigger = "gpio").

No GPIO chip exists here (no /dev/gpiochip*, no gpio-sim module), so these tests run against a
fake of libgpiod's v2 Python bindings (tests/support/fakes/libgpiod/gpiod), put first on the agent
process's PYTHONPATH: the agent runs unmodified, against a real mosquitto and real ONNX Runtime.
The fake's own fidelity is checked first: it fails where the real library fails.
"""

import errno
import importlib.util
import json
import os
import re
import sys
import time
import types
from datetime import timedelta

import pytest

from support.agent import start_agent, stop, write_config
from support.fakes.gpio import FakeGpio, forget_gpiod
from support.plant import PREFIX, check_results, line_video, plant, subscriber, wait

LINES = ["", "PQ.05", "PX.00", ""]  # offset 1 is named PQ.05, as on a Jetson Orin header


@pytest.fixture
def fake_gpio(tmp_path):
    yield FakeGpio(tmp_path / "gpio")
    forget_gpiod()  # an in-process import of the fake goes with the test


def gpio_items(chip, line="PQ.05", timeout_s=10.0, **gpio):
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {"chip": chip, "line": line, **gpio}.items())
    return f'[cameras.items]\ntrigger = "gpio"\ntimeout_s = {timeout_s}\n[cameras.items.gpio]\n{keys}'


def line_config(tmp_path, port, bundle, items, **kw):
    line_video(tmp_path / "line.avi")
    return write_config(tmp_path / "a.toml", port,
                        {"kind": "file", "uri": str(tmp_path / "line.avi"), "loop": True, "fps": 20.0},
                        tmp_path / "ev.db", **plant(bundle=bundle, camera_tables=items, **kw))


# -- the fake fails where libgpiod fails --------------------------------------------------------

def test_the_fake_fails_where_libgpiod_fails(fake_gpio, monkeypatch):
    chip = fake_gpio.add_chip(lines=LINES, used={3: "other-daemon"})
    gpiod = fake_gpio.install(monkeypatch)
    from gpiod.line import Direction, Edge

    def settings(**kw):
        return gpiod.LineSettings(**{"direction": Direction.INPUT, **kw})

    with gpiod.Chip(chip) as c:
        assert c.get_info().num_lines == 4 and c.line_offset_from_id("PQ.05") == 1
        assert c.line_offset_from_id("2") == 2  # a number that names no line is an offset
        with pytest.raises(FileNotFoundError):
            c.line_offset_from_id("PZ.99")
        with pytest.raises(ValueError, match="out of range|of out range"):
            c.line_offset_from_id(9)
        info = c.get_line_info(3)
        assert info.used and info.consumer == "other-daemon"
    with pytest.raises(gpiod.ChipClosedError):
        c.get_info()
    with pytest.raises(OSError) as busy:
        gpiod.request_lines(chip, {3: settings()}, consumer="t")
    assert busy.value.errno == errno.EBUSY
    with pytest.raises(AttributeError):  # an enum's name instead of the enum: fails at the request
        gpiod.request_lines(chip, {1: settings(edge_detection="rising")})
    with pytest.raises(AttributeError):  # the debounce period is a timedelta
        gpiod.request_lines(chip, {1: settings(debounce_period=5)})
    with pytest.raises(ValueError):  # EINVAL: edge detection on a line not requested as an input
        gpiod.request_lines(chip, {1: gpiod.LineSettings(edge_detection=Edge.RISING)})
    with pytest.raises(FileNotFoundError):
        gpiod.Chip(str(fake_gpio.folder) + "/gpiochip9")
    with pytest.raises(OSError) as not_chip:
        gpiod.Chip(fake_gpio.state)  # a file, but no GPIO chip
    assert not_chip.value.errno == errno.ENOTTY
    req = gpiod.request_lines(chip, {"PQ.05": settings(edge_detection=Edge.RISING,
                                                       debounce_period=timedelta(milliseconds=1))}, consumer="t")
    with pytest.raises(OSError):  # held by this request now
        gpiod.request_lines(chip, {1: settings()})
    fake_gpio.pulse(chip, 1, 3)
    assert req.wait_edge_events(5.0)
    time.sleep(0.05)
    events = req.read_edge_events()
    assert [e.line_seqno for e in events] == [1, 2, 3]  # rising edges only, numbered from 1
    assert all(e.event_type == gpiod.EdgeEvent.Type.RISING_EDGE and e.line_offset == 1 for e in events)
    assert all(0 <= time.monotonic_ns() - e.timestamp_ns < 5e9 for e in events)  # CLOCK_MONOTONIC
    assert not req.wait_edge_events(0.05)
    fake_gpio.unplug(chip)
    assert req.wait_edge_events(5.0)  # a vanished chip wakes the reader ...
    with pytest.raises(OSError) as gone:
        req.read_edge_events()
    assert gone.value.errno == errno.ENODEV  # ... to ENODEV
    req.release()
    with pytest.raises(gpiod.RequestReleasedError):
        req.read_edge_events()


def test_a_full_kernel_buffer_drops_the_oldest_edges_and_the_gap_counts_them_missed(fake_gpio, monkeypatch):
    from ganomaly_edge.agent.config import CameraConfig
    from ganomaly_edge.agent.gpio import GpioTrigger
    from ganomaly_edge.agent.items import Triggers
    from ganomaly_edge.agent.stats import CameraStats

    chip = fake_gpio.add_chip(lines=LINES)
    fake_gpio.install(monkeypatch)
    cam = CameraConfig(name="c", source={"kind": "file", "uri": "x", "retry_min_s": 0.1, "retry_max_s": 0.2},
                       items={"trigger": "gpio", "timeout_s": 60,
                              "gpio": {"chip": chip, "line": 1, "edge": "falling", "event_buffer_size": 4}})
    stats, missed = CameraStats(time.monotonic()), []
    t = Triggers("c", cam.items, stats, on_missed=lambda trig, why: missed.append((trig.item, why)))
    g = GpioTrigger(cam, t, stats)
    g.thread.start()
    try:
        fake_gpio.pulse(chip, 1)
        assert wait(lambda: len(t.pending) == 1, 10)
        fake_gpio.pulse(chip, 1, 10)  # ten parts at once: the kernel keeps the last four
        assert wait(lambda: len(t.pending) == 5, 10)
        assert [p.item for p in t.pending] == ["c-1", "c-8", "c-9", "c-10", "c-11"]
        assert [m[0] for m in missed] == [f"c-{i}" for i in range(2, 8)]
        assert all("buffer overflowed" in m[1] for m in missed)
        assert stats["triggers"] == 11 and stats["missed_triggers"] == 6
        assert all(0 <= time.monotonic() - p.mono < 10 for p in t.pending)  # the edges' kernel time
    finally:
        g.close()
    assert not g.thread.is_alive() and g.req is None


def test_chips_by_path_number_name_or_label_and_what_is_wrong(fake_gpio, monkeypatch):
    from ganomaly_edge.agent import gpio as agent_gpio
    from ganomaly_edge.agent.config import GpioConfig

    fake_gpio.add_chip("gpiochip0", label="tegra234-gpio-aon", lines=4)
    chip1 = fake_gpio.add_chip("gpiochip1", label="tegra234-gpio", lines=LINES, used={2: "other-daemon"})
    gpiod = fake_gpio.install(monkeypatch)
    monkeypatch.setattr(agent_gpio, "DEV", fake_gpio.folder)

    for name in (chip1, "1", "gpiochip1", "tegra234-gpio"):
        req, offset, path = agent_gpio.open_line(gpiod, GpioConfig(chip=name, line="PQ.05"), "t")
        assert (offset, path) == (1, chip1)
        req.release()
    for cfg, expect in [({"chip": "nope"}, "no GPIO chip labelled 'nope': found gpiochip0 [tegra234-gpio-aon], "
                                           "gpiochip1 [tegra234-gpio]"),
                        ({"chip": "7"}, "no GPIO chip at"),
                        ({"line": "PZ.99"}, "has no line named 'PZ.99'"),
                        ({"line": 4}, "it has 4 lines, offsets 0 to 3"),
                        ({"line": "PX.00"}, "line 'PX.00' of " + chip1 + " (offset 2) is in use by other-daemon")]:
        with pytest.raises(agent_gpio.GpioError, match=re.escape(expect)):
            agent_gpio.open_line(gpiod, GpioConfig(**{"chip": chip1, "line": "PQ.05", **cfg}), "t")


def test_the_older_v1_bindings_are_named_as_such(monkeypatch):
    from ganomaly_edge.agent.gpio import gpiod_module

    v1 = types.ModuleType("gpiod")  # Debian's python3-libgpiod: a C module with Chip, Line, ... and no request_lines
    v1.__version__, v1.Chip = "1.6.3", object
    monkeypatch.setitem(sys.modules, "gpiod", v1)
    with pytest.raises(ImportError, match=r"pip install 'ganomaly-edge\[gpio\]'.*older v1 API"):
        gpiod_module()


# -- the agent as a process, on a real mosquitto --------------------------------------------------

def test_edges_give_one_result_each_with_their_item_ids(broker, tiny_bundle, tmp_path, fake_gpio):
    chip = fake_gpio.add_chip(lines=LINES)
    cfg = line_config(tmp_path, broker.port, tiny_bundle, gpio_items(chip, debounce_ms=2.0, bias="pull-up"))
    sub = subscriber(broker.port)
    log = tmp_path / "agent.log"
    p = start_agent(cfg, log, env=fake_gpio.env())
    try:
        assert wait(lambda: sub.last(f"{PREFIX}/cam1/status") == "online", 60), open(log).read()
        for _ in range(5):
            fake_gpio.pulse(chip, 1)  # a part passes the photo-eye: one rising edge (and a falling one)
            fake_gpio.pulse(chip, 2)  # another line's edges are not this camera's
            time.sleep(0.4)
        assert wait(lambda: len(sub.results()) >= 5, 60), open(log).read()
        assert wait(lambda: sub.stats("cam1").get("results") == 5, 30)
        time.sleep(1.0)  # nothing more comes
        st = sub.stats("cam1")
    finally:
        assert stop(p) == 0
        sub.close()
    got = sub.results()
    check_results(got)
    assert [r["item"] for r in got] == [f"cam1-{i}" for i in range(1, 6)]
    assert all(r["score"] is not None and r["error"] is None and r["latency_ms"] > 0 for r in got)
    assert st["triggers"] == 5 and st["missed_triggers"] == 0 and st["trigger_reconnects"] == 0
    assert f"rising edges of line PQ.05 on {chip}" in open(log).read()


def reader_live(fake_gpio, chip, sub, log) -> None:
    """One part, and its result: the agent's reader has the line and reads it (a burst written
    before then would be history to the request, as to the kernel)."""
    n = len(sub.results())
    fake_gpio.pulse(chip, 1)
    assert wait(lambda: len(sub.results()) > n, 60), open(log).read()


def test_lost_edges_and_an_unplugged_chip(broker, tiny_bundle, tmp_path, fake_gpio):
    """Edges the kernel's full buffer dropped each get a missed result; a chip that vanishes is
    reopened when it comes back, counted, and its edges are items again."""
    chip = fake_gpio.add_chip(lines=LINES)
    cfg = line_config(tmp_path, broker.port, tiny_bundle, gpio_items(chip, line=1, event_buffer_size=4),
                      retry_s=(0.2, 0.5))
    sub = subscriber(broker.port)
    log = tmp_path / "agent.log"
    p = start_agent(cfg, log, env=fake_gpio.env())
    try:
        assert wait(lambda: sub.last(f"{PREFIX}/cam1/status") == "online", 60), open(log).read()
        reader_live(fake_gpio, chip, sub, log)  # cam1-1
        fake_gpio.pulse(chip, 1, 10)  # ten parts before the agent can read: the kernel keeps four
        assert wait(lambda: len(sub.results()) >= 11, 60), open(log).read()
        fake_gpio.unplug(chip)
        assert wait(lambda: "the GPIO trigger line" in open(log).read(), 30), open(log).read()
        time.sleep(1.0)
        fake_gpio.plug(chip)
        assert wait(lambda: "reopened (reconnect 1)" in open(log).read(), 30), open(log).read()
        fake_gpio.pulse(chip, 1)
        time.sleep(0.4)
        fake_gpio.pulse(chip, 1)
        assert wait(lambda: len(sub.results()) >= 13, 60), open(log).read()
        assert wait(lambda: sub.stats("cam1").get("trigger_reconnects") == 1, 30)
        st = sub.stats("cam1")
    finally:
        assert stop(p) == 0
        sub.close()
    got = sub.results()
    check_results(got)
    by_item = {r["item"]: r for r in got}
    assert sorted(by_item, key=lambda i: int(i.split("-")[1])) == [f"cam1-{i}" for i in range(1, 14)]
    for i in range(2, 8):  # the six dropped: not inspected, said why
        r = by_item[f"cam1-{i}"]
        assert not r["ok"] and r["score"] is None and "buffer overflowed" in r["error"]
    assert all(by_item[f"cam1-{i}"]["score"] is not None for i in [1, *range(8, 14)])
    assert st["triggers"] == 13 and st["missed_triggers"] == 6
    assert "6 edge(s) on" in open(log).read()


@pytest.mark.parametrize("case", ["missing extra", "missing chip", "bad edge", "no line", "unknown line",
                                  "line in use", "check-config"])
def test_bad_gpio_settings_stop_the_agent_at_start_with_what_to_do(tiny_bundle, tmp_path, fake_gpio, case):
    chip = fake_gpio.add_chip(lines=LINES, used={2: "other-daemon"})
    env = fake_gpio.env()
    args = []
    items, expect = {
        "missing extra": (gpio_items(chip), "pip install 'ganomaly-edge[gpio]'"),
        "missing chip": (gpio_items(chip + "x"), f"no GPIO chip at {chip}x"),
        "bad edge": (gpio_items(chip, edge="up"), "cameras.0.items.gpio.edge: Input should be 'rising', 'falling' "
                                                  "or 'both'"),
        "no line": ('[cameras.items]\ntrigger = "gpio"\n', "needs items.gpio.line"),
        "unknown line": (gpio_items(chip, line="PZ.99"), "has no line named 'PZ.99'"),
        "line in use": (gpio_items(chip, line="PX.00"), "(offset 2) is in use by other-daemon"),
        "check-config": (gpio_items(chip, line=2), "is in use by other-daemon"),
    }[case]
    if case == "missing extra":
        if importlib.util.find_spec("gpiod") is not None:
            pytest.skip("a real gpiod is installed in this Python")
        env = dict(os.environ)
    if case == "check-config":
        args = ["--check-config"]
    cfg = line_config(tmp_path, 1, tiny_bundle, items)
    p = start_agent(cfg, tmp_path / "agent.log", *args, env=env)
    assert p.wait(120) == 2
    err = open(tmp_path / "agent.log").read()
    assert expect in err, err
    assert "camera cam1: " in err or case in ("bad edge", "no line"), err
