"""Hot swap of a camera's model while the agent runs, end to end: the agent as a process on a
looping video where every frame alarms, a real mosquitto, real ONNX Runtime bundles. Swaps come
over MQTT (<prefix>/model/set) and SIGHUP; refused ones leave inference as it was."""

import json
import os
import shutil
import signal

import cv2
import numpy as np
import pytest

from support.agent import Subscriber, start_agent, wait, write_config
from support.data import edit_bundle_meta, make_checkpoint

PREFIX = "ganomaly/swap"


def write_loop_video(path, n=24, size=48):
    rng = np.random.default_rng(3)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    for i in range(n):
        f = np.full((size, size, 3), 60 + 4 * i, np.uint8)
        f[8:40, 8:40] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        vw.write(f)
    vw.release()
    return str(path)


def swap_config(path, bundle, port, video, store):
    """support.agent.write_config on a looping video; threshold far below any calibrated score,
    k = n = 1, no cooldown: every frame alarms."""
    return write_config(path, port, {"kind": "file", "uri": str(video), "loop": True}, store, bundle=bundle,
                        camera="cam1", device_id="swap", log_level="INFO", prefix=PREFIX, stats_interval_s=1.0,
                        retry_s=None, results=None, extra="max_events = 1000000",
                        camera_tables="[cameras.localisation]\noverlay = false\n")


def copy_bundle(src, dst, edit=None):
    shutil.copytree(src, dst)
    if edit:
        edit(str(dst))
    return str(dst)


def recalibrated(bundle_dir):
    """The same graph with another calibration: another model.hash, a passing self-test."""
    def edit(meta):
        c = meta["calibration"]
        c["median"] = c["median"] - 0.05 * c["scale"]
    edit_bundle_meta(bundle_dir, edit)


def failing_self_test(bundle_dir):
    """Reference outputs that this graph does not produce (their file hash updated, so the bundle
    opens and only the self-test can tell)."""
    from ganomaly_edge.engine.bundle import sha256_file

    path = os.path.join(bundle_dir, "reference.npz")
    ref = dict(np.load(path))
    ref["score"] = ref["score"] * 3 + 1
    np.savez(path, **ref)
    edit_bundle_meta(bundle_dir, lambda m: m["files"].__setitem__("reference.npz", sha256_file(path)))


def truncated_graph(bundle_dir):
    path = os.path.join(bundle_dir, "model.onnx")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


@pytest.fixture(scope="module")
def other_bundles(tmp_path_factory):
    """Bundles another camera could run but this one cannot: 32x32 grey, and 16x16 colour."""
    from ganomaly_edge.train.export import checkpoint_to_bundle

    d = tmp_path_factory.mktemp("others")
    out = {}
    for name, size, ch in (("res32", 32, 1), ("colour", 16, 3)):
        ck = make_checkpoint(d / f"{name}.pt", size=size, channels=ch, epochs=0)
        out[name] = checkpoint_to_bundle(ck, str(d / name)).path
    return out


def test_swaps_under_a_looping_video_lose_no_frame_and_refusals_change_nothing(
        tiny_bundle, other_bundles, broker, tmp_path):
    a = tiny_bundle
    b = copy_bundle(a, tmp_path / "b", recalibrated)
    bad = {
        "corrupt": copy_bundle(a, tmp_path / "corrupt", truncated_graph),
        "selftest": copy_bundle(a, tmp_path / "selftest", failing_self_test),
        "res32": other_bundles["res32"],
        "colour": other_bundles["colour"],
        "missing": str(tmp_path / "no-such-bundle"),
    }
    video = write_loop_video(tmp_path / "loop.avi")
    cfg = tmp_path / "agent.toml"
    swap_config(cfg, a, broker.port, video, tmp_path / "events.db")
    rec = Subscriber(broker.port, PREFIX, client_id="swap-rec")
    log_path = tmp_path / "agent.log"
    proc = start_agent(cfg, log_path)
    set_topic = f"{PREFIX}/model/set"

    def hashes():
        return {ev["model"]["hash"] for ev in rec.alarms()}

    def ask(payload, ok, timeout=90):
        n = len(rec.json("/model/result"))
        rec.publish(set_topic, json.dumps(payload) if not isinstance(payload, str) else payload)
        assert wait(lambda: len(rec.json("/model/result")) > n, timeout), open(log_path).read()[-3000:]
        r = rec.json("/model/result")[n]
        assert r["ok"] is ok, r
        return r

    def more_alarms(k=15, timeout=90):
        n = len(rec.alarms())
        assert wait(lambda: len(rec.alarms()) >= n + k, timeout), open(log_path).read()[-3000:]

    try:
        more_alarms()
        hash_a = rec.alarms()[0]["model"]["hash"]
        r = ask({"bundle": b, "camera": "cam1"}, ok=True)
        hash_b = r["hash"]
        assert hash_b != hash_a and r["previous"] == {"cam1": hash_a}
        assert wait(lambda: hash_b in hashes(), 90)
        # Each refused with its reason; the camera goes on scoring with B.
        reasons = {}
        for name, path in bad.items():
            reasons[name] = ask({"bundle": path}, ok=False)["reason"]
            more_alarms(3)
            assert rec.alarms()[-1]["model"]["hash"] == hash_b, name
        assert "model.onnx" in reasons["corrupt"] or "hash" in reasons["corrupt"], reasons["corrupt"]
        assert "self-test failed" in reasons["selftest"]
        assert "32x32" in reasons["res32"] and "16x16" in reasons["res32"]
        assert "3-channel" in reasons["colour"]
        assert "no-such-bundle" in reasons["missing"]
        bad_requests = [ask("not json", ok=False)["reason"], ask({"bundle": b, "camera": "nope"}, ok=False)["reason"],
                        ask({"bundel": b}, ok=False)["reason"]]
        assert "not JSON" in bad_requests[0] and "nope" in bad_requests[1] and "bundel" in bad_requests[2]
        # One-command rollback to the model that ran before.
        assert ask({"rollback": True}, ok=True)["hash"] == hash_a
        assert wait(lambda: rec.alarms()[-1]["model"]["hash"] == hash_a, 90)
        more_alarms()
        # SIGHUP: the config now names B.
        swap_config(cfg, b, broker.port, video, tmp_path / "events.db")
        n = len(rec.json("/model/result"))
        proc.send_signal(signal.SIGHUP)
        assert wait(lambda: len(rec.json("/model/result")) > n, 90), open(log_path).read()[-3000:]
        r = rec.json("/model/result")[n]
        assert r["ok"] and r["source"] == "SIGHUP" and r["hash"] == hash_b, r
        assert wait(lambda: rec.alarms()[-1]["model"]["hash"] == hash_b, 90)
        more_alarms()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    assert rc == 0, open(log_path).read()[-3000:]
    assert wait(lambda: [p for t, p, _ in list(rec.msgs) if t == f"{PREFIX}/available"][-1:] == [b"offline"], 30)
    alarms = sorted(rec.alarms(), key=lambda ev: ev["frame_index"])
    rec.close()
    idx = [ev["frame_index"] for ev in alarms]
    # Every frame alarmed exactly once across four swaps: contiguous, nothing lost, nothing twice.
    assert idx == list(range(idx[0], idx[0] + len(idx))), [i for i, j in zip(idx, idx[1:]) if j != i + 1][:5]
    seq = [ev["model"]["hash"] for ev in alarms]
    changes = [(alarms[i]["frame_index"], seq[i - 1], seq[i]) for i in range(1, len(seq)) if seq[i] != seq[i - 1]]
    # Each model changed at one frame: A -> B, B -> A (rollback), A -> B (SIGHUP); refusals changed nothing.
    assert [(old, new) for _, old, new in changes] == [(hash_a, hash_b), (hash_b, hash_a), (hash_a, hash_b)], changes
    stats = rec.json(f"{PREFIX}/stats")[-1]
    assert stats["models"]["swaps"]["ok"] == 3 and stats["models"]["swaps"]["failed"] == 8, stats["models"]["swaps"]
    assert stats["models"]["cameras"]["cam1"]["hash"] == hash_b
    assert stats["models"]["cameras"]["cam1"]["previous"] == hash_a


def test_requests_are_checked_before_anything_loads():
    from ganomaly_edge.agent.models import parse_request

    assert parse_request(b'{"bundle": "/b", "camera": "c"}') == {"bundle": "/b", "camera": "c", "rollback": False}
    assert parse_request('{"rollback": true}') == {"bundle": None, "camera": None, "rollback": True}
    for bad, word in ((b"[1]", "JSON object"), (b"{}", "either a bundle or rollback"),
                      (b'{"bundle": "/b", "rollback": true}', "either"), (b'{"bundle": 3}', "path"),
                      (b'{"camera": 1, "rollback": true}', "camera"), (b"\xff", "not JSON")):
        with pytest.raises(ValueError, match=word):
            parse_request(bad)
