"""Review -> export -> swap, against the agent as a process: a real mosquitto, a folder source,
the alarm history (SQLite), the console's HTTP API, and ``ganomaly-agent export`` as a command."""

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from support.agent import start_agent, write_config
from support.agent import wait as shared_wait
from support.data import ROOT, edit_bundle_meta

TOKEN = "feedback-test-token-0123456789"


def wait(pred, timeout):
    return shared_wait(pred, timeout, ignore=(OSError, ValueError))  # the console may still be starting


def call(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def fb_config(tmp_path, bundle, mqtt_port, http_port, folder):
    """support.agent.write_config: one folder camera where every item alarms, and the console."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    return write_config(tmp_path / "agent.toml", mqtt_port,
                        {"kind": "folder", "uri": str(folder), "watch": True, "settle_s": 0},
                        tmp_path / "events.db", bundle=bundle, camera="cam1", device_id="fb", prefix="ganomaly/fb",
                        stats_interval_s=None, reconnect_s=None, retry_s=None, results=None,
                        decision="threshold = -1000000.0", roi="x = 4, y = 4, w = 40, h = 40",
                        sections=f'[http]\nlisten = "127.0.0.1:{http_port}"\ntoken_file = "{tmp_path / "token"}"\n')


def export_cmd(cfg, *args):
    return subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "export", "--config", cfg, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_review_export_and_swap_through_the_console(tiny_bundle, broker, tmp_path):
    from ganomaly_edge.tools.broker import free_port

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # colour 48x48 frames; the model works at 16x16 grey
        assert cv2.imwrite(str(folder / f"item_{i:03d}.png"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    http_port = free_port()
    cfg = fb_config(tmp_path, tiny_bundle, broker.port, http_port, folder)
    out = tmp_path / "exported"
    # Before any verdict: a clear message, nothing written.
    r = export_cmd(cfg, "--verdict", "false_alarm", "--out", str(out))
    assert r.returncode == 2 and "no alarm history" in r.stderr, r.stderr
    log_path = tmp_path / "agent.log"
    proc = start_agent(cfg, log_path)
    try:
        assert wait(lambda: len(call(http_port, "GET", "/api/alarms?limit=100")[1]["alarms"]) == 12, 120), \
            open(log_path).read()[-3000:]
        alarms = call(http_port, "GET", "/api/alarms?limit=100")[1]["alarms"]
        r = export_cmd(cfg, "--verdict", "false_alarm", "--out", str(out))
        assert r.returncode == 2 and "0 alarms marked false_alarm" in r.stderr, r.stderr
        assert not out.exists() or not os.listdir(out)
        marked = alarms[:7]
        for a in marked:
            assert call(http_port, "POST", f"/api/alarms/{a['id']}/verdict", {"verdict": "false_alarm"})[0] == 200
        call(http_port, "POST", f"/api/alarms/{alarms[7]['id']}/verdict", {"verdict": "defect"})

        r = export_cmd(cfg, "--verdict", "false_alarm", "--camera", "cam1", "--since", "1h", "--out", str(out))
        assert r.returncode == 0, r.stderr
        m = json.load(open(out / "manifest.json"))
        assert m["count"] == 7 and {i["id"] for i in m["images"]} == {a["id"] for a in marked}
        h = json.load(open(os.path.join(tiny_bundle, "bundle.json")))
        for item in m["images"]:
            img = cv2.imread(str(out / item["file"]), cv2.IMREAD_UNCHANGED)
            # the ROI (40x40 of 48x48) at the model's working resolution, the camera's channels
            assert img.shape == (16, 16, 3) and img.dtype == np.uint8
            assert item["model"]["hash"] and item["score"] > -1e6 and item["verdict"] == "false_alarm"
        assert m["models"] == [alarms[0]["model"]["hash"]]
        # The exported frames are what the trainer and ganomaly-calibrate read.
        from ganomaly_edge.train.data import load_folder

        assert load_folder(str(out), 16, 1).images.shape == (7, 16, 16, 1)
        r = export_cmd(cfg, "--verdict", "defect", "--out", str(tmp_path / "defects"))
        assert r.returncode == 0 and json.load(open(tmp_path / "defects" / "manifest.json"))["count"] == 1

        # The console's buttons: export, and a swap (refused, then accepted).
        code, body = call(http_port, "POST", "/api/export", {"verdict": "false_alarm"})
        assert code == 200 and body["count"] == 7 and os.path.isdir(body["out"])
        code, body = call(http_port, "POST", "/api/model", {"bundle": str(tmp_path / "missing")})
        assert code == 422 and "missing" in body["reason"] and not body["ok"]
        new = tmp_path / "b2"
        shutil.copytree(tiny_bundle, new)
        edit_bundle_meta(new, lambda meta: meta["calibration"].__setitem__("median", meta["calibration"]["median"] * 0.9))
        code, body = call(http_port, "POST", "/api/model", {"bundle": str(new), "camera": "cam1"})
        assert code == 200 and body["ok"], body
        state = call(http_port, "GET", "/api/model")[1]
        assert state["cameras"]["cam1"]["hash"] == body["hash"] != alarms[0]["model"]["hash"]
        assert state["cameras"]["cam1"]["previous"] == alarms[0]["model"]["hash"]
        assert h["files"]  # the source bundle untouched
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, open(log_path).read()[-3000:]


def test_since_parses_ages_times_and_epochs():
    from ganomaly_edge.agent.export import ExportError, parse_since

    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1765080000") == 1765080000.0
    assert parse_since(None) is None
    with pytest.raises(ExportError, match="--since"):
        parse_since("yesterday")
