"""Field deployment, part 2: a scanner folder that survives restarts, a watchdog that means alarms
are flowing, and MQTT conventions. The agent as a process, real mosquitto, real files."""

import collections
import os
import signal
import time

import numpy as np
import pytest

from support.agent import BUNDLE, Subscriber, png, start_agent, stored, write_config

pytestmark = pytest.mark.slow


def test_a_restart_mid_folder_alarms_every_file_exactly_once(broker, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(1)
    for i in range(300):
        png(scans / f"item_{i:04d}.png", int(rng.integers(0, 255)))
    store = tmp_path / "ev.db"
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "settle_s": 0.0}, store)
    sub = Subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent1.log")
    assert sub.wait(lambda: len(sub.alarms()) >= 60, 60), open(tmp_path / "agent1.log").read()[-2000:]
    p.send_signal(signal.SIGKILL)  # mid-folder, with alarms in every stage
    p.wait()
    first = {a["item"] for a in sub.alarms()}
    assert 60 <= len(first) < 300
    p = start_agent(cfg, tmp_path / "agent2.log")
    try:
        assert sub.wait(lambda: len({a["item"] for a in sub.alarms()}) == 300, 120), len({a["item"] for a in sub.alarms()})
        assert sub.wait(lambda: stored(store) == [], 20)
        ids = collections.defaultdict(set)
        for a in sub.alarms():
            ids[a["item"]].add(a["id"])  # the same id again is a redelivery, which subscribers drop
        assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        sub.close()


@pytest.mark.parametrize("discovery", [True, False])
def test_home_assistant_discovery(broker, tmp_path, discovery):
    import json

    scans = tmp_path / "scans"
    scans.mkdir()
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "watch": False},
                       tmp_path / "ev.db", mqtt_extra=f"discovery = {'true' if discovery else 'false'}")
    p = start_agent(cfg, tmp_path / "agent.log")
    assert p.wait(60) == 0
    sub = Subscriber(broker.port, prefix="homeassistant", client_id="ha")  # retained: arrives afterwards
    time.sleep(1.0)
    configs = {t: json.loads(v) for t, v, _ in sub.msgs if t.endswith("/config")}
    sub.close()
    if not discovery:
        assert configs == {}
        return
    kinds = sorted(t.split("/")[1] for t in configs)
    assert kinds == ["binary_sensor", "image", "sensor"]
    for c in configs.values():
        assert c["availability"][0]["topic"] == "ganomaly/test/available" and c["device"]["identifiers"]
    by = {t.split("/")[1]: c for t, c in configs.items()}
    assert by["binary_sensor"]["state_topic"] == "ganomaly/test/scanner/alarm"
    assert by["sensor"]["value_template"] == "{{ value_json.score }}"
    assert by["image"]["image_topic"] == "ganomaly/test/scanner/latest/crop"


class Notify:
    """A NOTIFY_SOCKET like systemd's: collects READY=1, WATCHDOG=1, STATUS=... datagrams."""

    def __init__(self, path):
        import socket
        import threading

        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.msgs = []  # (monotonic time, message)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except OSError:
                continue
            self.msgs.append((time.monotonic(), data.decode()))

    def pings(self, since=0.0, until=float("inf")):
        return [t for t, m in self.msgs if "WATCHDOG=1" in m and since <= t <= until]

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


def test_a_hung_source_is_retried_with_the_watchdog_fed_then_escalated_to_a_restart(broker, tmp_path):
    """A source that hangs (a FIFO that nobody writes: opening it blocks, as a GStreamer or RTSP
    source without a timeout can) is abandoned and reopened, the camera offline with the reason,
    and the watchdog fed while it retries. OpenCV's FFmpeg backend opens under one process-wide
    lock, so once an open hangs the next ones hang too: when more than Capture.STUCK_LIMIT reads
    hang, the watchdog is no longer fed and systemd restarts the agent, which then recovers."""
    import cv2

    fifo = tmp_path / "camera.avi"
    os.mkfifo(fifo)
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "file", "uri": str(fifo), "stall_timeout_s": 1.0},
                       tmp_path / "ev.db", camera="cam")
    notify = Notify(tmp_path / "notify")
    sub = Subscriber(broker.port)
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000")

    def start(log):
        return start_agent(cfg, tmp_path / log, env=env)

    p = start("agent.log")
    try:
        assert sub.wait(lambda: sub.last("ganomaly/test/cam/status/reason") == "opening the source hangs", 30)
        assert sub.last("ganomaly/test/cam/status") == "offline"
        t0 = time.monotonic()
        time.sleep(2.5)
        assert len(notify.pings(t0)) >= 3  # knowingly offline and retrying: fed
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any("STATUS=unhealthy" in m for _, m in notify.msgs):
            time.sleep(0.2)
        t1 = time.monotonic()
        assert any("hang and cannot be reclaimed" in m for _, m in notify.msgs), notify.msgs[-3:]
        time.sleep(2.0)
        assert notify.pings(t1) == []  # systemd now restarts the agent (WatchdogSec)
        p.kill()
        p.wait()
        video = tmp_path / "good.avi"  # meanwhile the camera came back
        vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
        for _ in range(30):
            vw.write(np.zeros((32, 32, 3), np.uint8))
        vw.release()
        os.replace(video, fifo)
        p = start("agent2.log")
        assert sub.wait(lambda: sub.last("ganomaly/test/cam/status") == "online", 30)
        assert p.wait(60) == 0  # the file plays to its end
    finally:
        p.kill()
        sub.close()
        notify.close()


class BrokenEngine:
    """An engine whose every batch fails, as a GPU in a bad state does (wraps a real one)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def score_frames(self, frames, tiling=None):  # what the pipeline calls
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_engine_failures_take_the_camera_offline_with_the_error_and_reload_the_engine(tmp_path):
    from ganomaly_edge.agent.config import CameraConfig
    from ganomaly_edge.agent.pipeline import CameraPipeline
    from ganomaly_edge.agent.store import EventStore
    from ganomaly_edge.agent.topics import Topics
    from ganomaly_edge.engine import load
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(12):
        png(scans / f"i_{i:02d}.png", 20 * i)
    statuses = []
    reloads = []

    def reload(old):
        reloads.append(old)
        return load(BUNDLE, "onnxruntime", threads=1)

    cam = CameraConfig(name="c", source={"kind": "folder", "uri": str(scans), "watch": False, "settle_s": 0})
    store = EventStore(str(tmp_path / "ev.db"))
    p = CameraPipeline(cam, BrokenEngine(load(BUNDLE, "onnxruntime", threads=1)), store, None, Topics("t"), 0,
                       max_batch=1, on_status=lambda c, s, r="": statuses.append((s, r)), workers=1,
                       reload_engine=reload, max_failures=3)
    p.start()
    assert p.finished.wait(60)
    p.join(5)
    store.close()
    offline = [r for s, r in statuses if s == "offline" and "illegal memory access" in r]
    assert offline and "failed 3 times in a row" in offline[0] and "reloading" in offline[0]
    assert len(reloads) == 1 and ("online", "") in statuses[statuses.index(("offline", offline[0])):]
    assert p.stats["bad_frames"] == 3 and p.stats.processed.count == 9  # the rest inspected after the reload


class HangingEngine(BrokenEngine):
    def __init__(self, real, release):
        super().__init__(real)
        self.release = release

    def score_frames(self, frames, tiling=None):
        self.release.wait()
        return self._real.score_frames(frames, tiling)


def test_a_hung_engine_stops_the_watchdog(tmp_path, monkeypatch):
    import threading

    from ganomaly_edge.agent.config import load_settings
    from ganomaly_edge.agent.service import Agent
    scans = tmp_path / "scans"
    scans.mkdir()
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'[model]\nbundle = "{BUNDLE}"\nworkers = 1\n[store]\npath = "{tmp_path}/ev.db"\n[[cameras]]\n'
                   f'name = "c"\n[cameras.source]\nkind = "folder"\nuri = "{scans}"\nsettle_s = 0\n'
                   'stall_timeout_s = 0.5\n')
    notify = Notify(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    agent = Agent(load_settings(str(cfg)), connect=False)
    release = threading.Event()
    try:
        agent.start()
        time.sleep(1.5)
        assert agent.health() is None and len(notify.pings()) >= 2
        pipe = agent.pipelines[0]
        pipe.inference.engine = HangingEngine(pipe.inference.engine, release)
        for i in range(20):  # frames wait; nothing is decided
            png(scans / f"i_{i:02d}.png", 10 * i)
        deadline = time.monotonic() + 10
        while agent.health() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        why = agent.health()
        assert why and "camera c" in why
        t0 = time.monotonic()
        time.sleep(2.0)
        # a ping decided before the agent turned unhealthy may still arrive in the next tick (0.25 s)
        assert notify.pings(t0 + 0.6) == []  # systemd would now restart the agent
        assert any("STATUS=unhealthy" in m for _, m in notify.msgs)
    finally:
        release.set()
        agent.stop()
        agent.shutdown(flush_timeout=0)
        notify.close()
