"""``ganomaly-bench items``: trigger-to-result latency of item mode, printed from one run.

A real mosquitto on loopback, the agent as a process in item mode (``items.trigger = "mqtt"``) on
Aravis's fake GigE Vision camera (``arv-fake-gv-camera-0.8``, real GVCP/GVSP on loopback; a
looping video file where Aravis is missing), and a client that publishes one trigger per item at
a steady rate and reads every result back. Two figures per run: ``latency_ms`` as the agent
reports it (trigger arrival to decision: waiting for the next frame, capture, inference) and the
round trip the reject gate sees (trigger published to result received: the broker both ways, the
durable store and the PUBACK path on top).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2), "max_ms": round(max(values), 2),
            "n": len(values)}


def _fake_camera() -> subprocess.Popen | None:
    exe = shutil.which("arv-fake-gv-camera-0.8")
    if exe is None:
        return None
    try:
        from ganomaly_edge.agent.genicam import device_ids
    except ImportError:
        return None
    try:
        device_ids()
    except ImportError:
        return None
    proc = subprocess.Popen([exe, "-i", "127.0.0.1", "-s", "GV01"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "Aravis-Fake-GV01" not in device_ids():
        time.sleep(0.2)
    return proc


def _video(path: str) -> None:
    import cv2

    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (128, 128))
    rng = np.random.default_rng(0)
    for _ in range(50):
        w.write(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    w.release()


def _config(work: str, bundle: str, port: int, source: str, frame_rate: float, workers: int = 0) -> str:
    path = os.path.join(work, "items.toml")
    with open(path, "w") as f:
        f.write(f"""device_id = "bench"
log_level = "WARNING"
[model]
bundle = "{bundle}"
workers = {workers}
[mqtt]
port = {port}
prefix = "bench"
[store]
path = "{work}/items.db"
[[cameras]]
name = "line"
[cameras.source]
{source}
[cameras.items]
trigger = "mqtt"
timeout_s = 5.0
""" + (f"[cameras.genicam]\nframe_rate = {frame_rate}\n" if "genicam" in source else ""))
    return path


def bench_items(bundle: str, work: str, rate: float = 10.0, items: int = 300, frame_rate: float = 25.0,
                workers: int = 0) -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from .broker import Mosquitto

    broker = Mosquitto(workdir=os.path.join(work, "broker")).start()
    cam = _fake_camera()
    if cam is not None:
        source, what = 'kind = "genicam"\nuri = "Aravis-Fake-GV01"', f"fake GigE Vision camera at {frame_rate:g} fps"
    else:
        _video(os.path.join(work, "line.avi"))
        source = f'kind = "file"\nuri = "{work}/line.avi"\nloop = true\nfps = {frame_rate}'
        what = f"looping video at {frame_rate:g} fps (Aravis not installed)"
    sent: dict[str, float] = {}
    got: dict[str, tuple[float, dict]] = {}
    lock = threading.Lock()

    def on_message(c, u, m):
        r = json.loads(m.payload)
        with lock:
            got.setdefault(r["item"], (time.monotonic(), r))

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-gate")
    c.on_message = on_message
    c.on_connect = lambda c, u, f, rc, p: c.subscribe("bench/line/result", qos=1)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    agent = subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config",
                              _config(work, bundle, broker.port, source, frame_rate, workers)],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "agent.log"), "w"))
    try:
        _wait_online(c, work)
        t0 = time.monotonic()
        for i in range(items):
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            item = f"SN-{i:06d}"
            sent[item] = time.monotonic()
            c.publish("bench/line/trigger", item, qos=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(got) < items:
            time.sleep(0.1)
    finally:
        agent.terminate()
        agent.wait(60)
        c.loop_stop()
        if cam is not None:
            cam.kill()
            cam.wait()
        broker.stop()
    agent_ms = [r["latency_ms"] for _, r in got.values() if r["score"] is not None]
    round_trip = [(t - sent[k]) * 1000.0 for k, (t, r) in got.items() if k in sent and r["score"] is not None]
    return {"source": what, "workers": workers or "auto", "rate_items_per_s": rate, "items": items, "results": len(got),
            "missed": sum(r["score"] is None for _, r in got.values()),
            "trigger_to_decision_agent": _percentiles(agent_ms),
            "trigger_published_to_result_received": _percentiles(round_trip),
            "note": "latency includes waiting for the camera's next frame (up to 1/frame_rate)"}


def _wait_online(c, work: str, timeout: float = 120.0) -> None:
    """Until the camera is online (its retained status), so no trigger is spent on start-up."""
    state = {}
    c.message_callback_add("bench/line/status", lambda cl, u, m: state.update(s=m.payload.decode()))
    c.subscribe("bench/line/status", qos=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.get("s") == "online":
            time.sleep(1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"the camera did not come online; see {work}/agent.log")
