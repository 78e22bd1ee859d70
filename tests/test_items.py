"""A result for every item: folder files and MQTT-triggered items, through the real agent process,
a real mosquitto on loopback and real ONNX Runtime; the result's typed schema; bad triggers."""

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from support.data import digits_u8
from support.agent import start_agent, stop, write_config
from support.plant import PREFIX, check_results, line_video, plant, subscriber, wait


def scanner_folder(folder):
    """12 items in name order: unseen digits (normal) and every fourth one a stripe pattern (foreign)."""
    x, _ = digits_u8(16)
    os.makedirs(folder)
    stripes = ((np.arange(16) % 4 < 2) * 255).astype(np.uint8)
    names, foreign = [], []
    for i in range(12):
        img = np.tile(stripes, (16, 1)) if i % 4 == 3 else x[1000 + i, :, :, 0]
        name = f"item_{i:03d}.png"
        assert cv2.imwrite(os.path.join(folder, name), cv2.resize(img, (48, 48), interpolation=cv2.INTER_NEAREST))
        names.append(name)
        if i % 4 == 3:
            foreign.append(name)
    return names, foreign


def test_folder_files_give_exactly_one_result_each_in_order_kept_across_a_broker_outage(broker, tiny_bundle,
                                                                                        tmp_path):
    names, foreign = scanner_folder(str(tmp_path / "scans"))
    cfg = write_config(tmp_path / "a.toml", broker.port,
                       {"kind": "folder", "uri": str(tmp_path / "scans"), "watch": False}, tmp_path / "ev.db",
                       **plant(bundle=tiny_bundle, camera="xray"))
    sub = subscriber(broker.port)
    broker.stop()  # the broker is away while every item is decided: results wait in the store
    p = start_agent(cfg, tmp_path / "agent.log", "--flush-timeout", "120")
    log = tmp_path / "agent.log"
    assert wait(lambda: open(log).read().count("camera xray: item ") == len(names), 120), open(log).read()
    time.sleep(1.0)
    broker.start()
    assert p.wait(180) == 0, open(log).read()
    assert wait(lambda: len(sub.results()) >= len(names), 60)
    sub.close()
    got = sub.results()
    check_results(got)
    assert [r["item"] for r in got] == names  # exactly N, in order, none twice
    assert [r["seq"] for r in got] == list(range(len(names)))
    ok = {r["item"]: r["ok"] for r in got}
    assert not any(ok[n] for n in foreign)  # every foreign item is NG ...
    assert sum(ok[n] for n in names if n not in foreign) >= 6  # ... and most normal ones OK
    for r in got:
        assert (r["score"] > r["threshold"]) == (not r["ok"])
        assert (r["alarm"] is not None) == (not r["ok"])  # NG items carry their alarm (with crops)
    alarms = {a["id"]: a for a in sub.json("/alarm")}
    assert all(alarms[r["alarm"]]["item"] == r["item"] for r in got if r["alarm"])


def test_mqtt_triggers_give_one_result_each_with_the_item_id(broker, tiny_bundle, tmp_path):
    line_video(tmp_path / "line.avi")
    cfg = write_config(tmp_path / "a.toml", broker.port,
                       {"kind": "file", "uri": str(tmp_path / "line.avi"), "loop": True, "fps": 20.0},
                       tmp_path / "ev.db",
                       **plant(bundle=tiny_bundle, camera_tables='[cameras.items]\ntrigger = "mqtt"\ntimeout_s = 10.0\n',
                               model_extra=""))  # workers: the agent's own choice
    sub = subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent.log")
    payloads = ["SN-001", "SN-002", "", b"\xff\xfe\x00", "two words", "SN-003"]
    try:
        assert wait(lambda: sub.last(f"{PREFIX}/cam1/status") == "online", 60), open(tmp_path / "agent.log").read()
        time.sleep(0.5)
        for pl in payloads:
            sub.publish(f"{PREFIX}/cam1/trigger", pl)
            time.sleep(0.3)
        assert wait(lambda: len(sub.results()) >= len(payloads), 60), open(tmp_path / "agent.log").read()
        assert wait(lambda: sub.stats("cam1").get("results") == len(payloads), 30)  # stats are periodic
        st = sub.stats("cam1")
    finally:
        assert stop(p) == 0
        sub.close()
    got = sub.results()
    check_results(got)
    assert [r["item"] for r in got] == ["SN-001", "SN-002", "cam1-3", "cam1-4-bad", "cam1-5-bad", "SN-003"]
    assert all(r["score"] is not None and r["error"] is None for r in got)  # every part inspected
    assert st["bad_triggers"] == 2 and st["results"] == len(payloads) and st["missed_triggers"] == 0
    # an untiled bundle: a frame is one input, which no split can share, so auto stays one worker
    # per core in item mode too (a tiled one gets one worker with every core: tests/test_tiles.py)
    assert st["workers"] == (os.cpu_count() or 1), st
    log = open(tmp_path / "agent.log").read()
    assert "not UTF-8" in log and "spaces or control characters" in log


def test_trigger_payloads():
    from ganomaly_edge.agent.items import BadTrigger, item_id

    assert item_id(b" SN-42\n") == "SN-42" and item_id(b"") == ""
    for bad, why in ((b"\xff", "not UTF-8"), ("a b", "spaces"), ("x" * 200, "at most 128")):
        with pytest.raises(BadTrigger, match=why):
            item_id(bad)


def test_result_schema_file_is_generated_from_the_typed_result():
    from ganomaly_edge.agent.result import SCHEMA_PATH, schema_text

    assert open(SCHEMA_PATH).read() == schema_text(), \
        "agent/result.schema.json is stale: run python -m ganomaly_edge.agent.result"


@pytest.mark.parametrize("keys, extra, expect", [
    ("", '[cameras.items]\ntrigger = "mqtt"\n', "a folder's files are items already"),
    ('window = "low:high"', "", "write LO:HI"),
    ('window = "p99:p1"', "", "need 0 <= p_lo < p_hi <= 100"),
    ("", '[cameras.items]\ntrigger = "gpio-ish"\n', "items.trigger"),
])
def test_bad_item_settings_are_said_at_start(tiny_bundle, tmp_path, keys, extra, expect):
    os.makedirs(tmp_path / "scans")
    cfg = write_config(tmp_path / "a.toml", 1, {"kind": "folder", "uri": str(tmp_path / "scans")},
                       tmp_path / "ev.db", **plant(bundle=tiny_bundle, camera_tables=extra, camera_keys=keys))
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and expect in r.stderr, r.stderr


def test_triggers_claim_the_next_frame_and_every_one_gets_a_verdict():
    from ganomaly_edge.agent.config import ItemsConfig
    from ganomaly_edge.agent.items import Triggers
    from ganomaly_edge.agent.sources import Frame
    from ganomaly_edge.agent.stats import CameraStats

    stats, missed = CameraStats(time.monotonic()), []
    t = Triggers("cam", ItemsConfig(trigger="mqtt", timeout_s=0.5, late_ms=50), stats,
                 on_missed=lambda trig, why: missed.append((trig.item, why)))
    t.thread.start()
    img = np.zeros((4, 4, 1), np.uint8)
    before = Frame(img, 0, time.time(), time.monotonic(), t_media=0)
    t.trigger(b"A-1")
    assert t.claim(before) is None  # captured before the trigger: not the part
    time.sleep(0.1)
    after = Frame(img, 1, time.time(), time.monotonic(), t_media=0)
    assert t.claim(after).item == "A-1" and stats["late_triggers"] == 1  # 100 ms > late_ms
    t.trigger(b"A-2")  # no frame comes: missed after timeout_s, with the reason
    assert wait(lambda: missed, 10) and missed[0][0] == "A-2" and "no frame within" in missed[0][1]
    t.trigger(b"A-3")
    t.drain("stopping")  # stopping: what still waits gets its verdict now
    assert missed[1] == ("A-3", "stopping")
    assert t.trigger(b"A-4") is None and missed[2][0] == "A-4"  # a trigger while stopping
    assert stats["missed_triggers"] == 3 and stats["triggers"] == 3


def test_results_are_read_back_and_deleted_under_mqtt_311(broker, tiny_bundle, tmp_path):
    """MQTT 3.1.1 has no reason codes: the agent deletes an event only once it reads it back. Results
    are read back too, so they leave the store instead of waiting there as refused."""
    names, _ = scanner_folder(str(tmp_path / "scans"))
    cfg = write_config(tmp_path / "a.toml", broker.port,
                       {"kind": "folder", "uri": str(tmp_path / "scans"), "watch": False}, tmp_path / "ev.db",
                       **plant(bundle=tiny_bundle, mqtt_extra='protocol = "3.1.1"'))
    sub = subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent.log", "--flush-timeout", "60")
    assert p.wait(120) == 0
    log = open(tmp_path / "agent.log").read()
    assert "unsent event" not in log and "refused" not in log, log
    assert wait(lambda: len(sub.results()) == len(names), 30)
    sub.close()
