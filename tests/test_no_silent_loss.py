"""Nothing lost, nothing silent: the agent as a process against real mosquitto brokers and real files,
one test per row of the probe that found alarms lost or inspection stopped without a word.

The model is a shipped 16x16 bundle with the threshold set so that every inspected item alarms:
an alarm is then the proof that an item was inspected, and its absence that it was not."""

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

from conftest import ROOT
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR
from ganomaly_edge.tools.broker import Mosquitto, free_port
from test_agent_e2e import Subscriber

pytestmark = pytest.mark.slow
BUNDLE = os.path.join(BUNDLE_DIR, "recon")
PREFIX = "ganomaly/test"


def config(path, port, source, store, extra="", camera="scanner", mqtt_extra="", roi=""):
    src = "\n".join(f"{k} = {json.dumps(v)}" for k, v in source.items())
    path.write_text(f"""device_id = "test"
[model]
bundle = "{BUNDLE}"
threads = 1
[mqtt]
port = {port}
prefix = "{PREFIX}"
stats_interval_s = 0.5
reconnect_min_s = 1
reconnect_max_s = 2
{mqtt_extra}
[store]
path = "{store}"
{extra}
[[cameras]]
name = "{camera}"
{roi}
[cameras.source]
{src}
retry_min_s = 0.2
retry_max_s = 0.5
[cameras.decision]
threshold = -1000000.0
k = 1
n = 1
cooldown_s = 0
[cameras.items]
results = false  # these tests count alarm events in the store; per-item results: tests/test_items.py
""")
    return str(path)


def agent(cfg, log, *args, drop_caps=False):
    cmd = [sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, *args]
    if drop_caps:  # root without CAP_DAC_OVERRIDE: a chmod 000 file is unreadable, as for a service user
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def png(path, value=128, size=16):
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))


def bomb_png(path, w=40000, h=40000):
    """A tiny PNG whose header claims w x h pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))


def last_stats(sub):
    s = sub.topics("/stats")
    return json.loads(s[-1][1]) if s else None


def stored(store):
    try:
        db = sqlite3.connect(str(store))
        try:
            return [r[0] for r in db.execute("SELECT id FROM events ORDER BY seq")]
        finally:
            db.close()
    except sqlite3.Error:
        return []


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(workdir=str(tmp_path / "broker")).start()
    yield b
    b.stop()


@pytest.fixture
def public_dir():
    """A folder the broker can read after dropping root (pytest's tmp folders are root-only)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="ganomaly-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def scans(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    return d


def test_bad_files_are_skipped_counted_and_inspection_goes_on(broker, scans, tmp_path):
    png(scans / "a_good.png")
    unreadable = scans / "b_unreadable.png"
    png(unreadable)
    os.chmod(unreadable, 0)
    os.mkfifo(scans / "c_fifo.png")
    bomb_png(scans / "d_bomb.png")
    os.symlink(scans / "deleted.png", scans / "e_deleted.png")  # gone between listing and reading
    cfg = config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "settle_s": 0.2}, tmp_path / "ev.db")
    sub = Subscriber(broker.port)
    p = agent(cfg, tmp_path / "agent.log", drop_caps=True)
    try:
        assert sub.wait(lambda: len(sub.alarms()) >= 1 and (last_stats(sub) or {}).get("cameras", {}).get(
            "scanner", {}).get("skipped") == 4, 60), open(tmp_path / "agent.log").read()[-3000:]
        png(scans / "f_later.png", 200)  # the folder is still watched: later items are inspected
        assert sub.wait(lambda: {a["item"] for a in sub.alarms()} == {"a_good.png", "f_later.png"}, 30)
        assert p.poll() is None
        log = open(tmp_path / "agent.log").read()
        for name, why in [("b_unreadable", "permission denied"), ("c_fifo", "not a regular file"),
                          ("d_bomb", "40000x40000"), ("e_deleted", "vanished")]:
            assert len(__import__("re").findall(f"skipping .*{name}.png: .*{why}", log)) == 1, (name, log[-3000:])
        assert "Traceback" not in log
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0 and time.monotonic() - t0 < 15
    finally:
        p.kill()
        sub.close()


def test_a_file_written_in_parts_is_inspected_once_complete(broker, scans, tmp_path):
    data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))[1].tobytes()
    cfg = config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "settle_s": 1.5}, tmp_path / "ev.db")
    sub = Subscriber(broker.port)
    p = agent(cfg, tmp_path / "agent.log")

    def writer():
        parts = np.array_split(np.frombuffer(data, np.uint8), 4)
        for part in parts:  # four writes a second apart, the file closed in between
            with open(scans / "slow.png", "ab") as f:
                f.write(part.tobytes())
            time.sleep(1.0)

    try:
        time.sleep(1.0)
        t = threading.Thread(target=writer)
        t.start()
        t.join()
        assert sub.wait(lambda: [a["item"] for a in sub.alarms()] == ["slow.png"], 30), open(tmp_path / "agent.log").read()
        assert sub.wait(lambda: (last_stats(sub) or {}).get("cameras", {}).get("scanner", {}).get("frames_processed") == 1, 10)
        assert last_stats(sub)["cameras"]["scanner"]["skipped"] == 0
        assert "skipping" not in open(tmp_path / "agent.log").read()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
        sub.close()


ACL = """topic readwrite ganomaly/test/available
topic readwrite ganomaly/test/stats
topic readwrite ganomaly/test/+/status
"""


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_puback_refusal_keeps_the_event_counted_and_logged(tmp_path, scans, public_dir, protocol):
    """MQTT 5 refuses with a reason code in the PUBACK. MQTT 3.1.1 cannot: the broker acknowledges
    and drops, so the agent reads its alarms back and keeps what does not return."""
    acl = os.path.join(public_dir, "acl")
    open(acl, "w").write(ACL + "topic read ganomaly/test/+/alarm\n")  # alarms may be read, not published
    os.chmod(acl, 0o644)
    port = free_port()
    b = Mosquitto(port=port, workdir=str(tmp_path / "b1"), extra=f"acl_file {acl}\n").start()
    for i in range(3):
        png(scans / f"item_{i}.png", 60 * i)
    store = tmp_path / "ev.db"
    cfg = config(tmp_path / "a.toml", port, {"kind": "folder", "uri": str(scans), "settle_s": 0.1}, store,
                 mqtt_extra=f'protocol = "{protocol}"')
    p = agent(cfg, tmp_path / "agent.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "refused event" not in open(tmp_path / "agent.log").read():
            time.sleep(0.2)
        time.sleep(1.5)
        log = open(tmp_path / "agent.log").read()
        reason = "Not authorized" if protocol == "5" else "not delivered back"
        assert "the broker refused event" in log and reason in log, log[-3000:]
        assert len(stored(store)) == 3  # nothing deleted on a refusal
        b.stop()  # the ACL is fixed: every refused event goes out, none lost
        b = Mosquitto(port=port, workdir=str(tmp_path / "b2")).start()
        sub = Subscriber(port)
        assert sub.wait(lambda: len(sub.alarms()) == 3, 90), open(tmp_path / "agent.log").read()[-3000:]
        assert sub.wait(lambda: stored(store) == [], 10)
        sub.close()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        b.stop()


def _tls_broker(tmp_path, port, public_dir):
    from pathlib import Path

    d = Path(public_dir) / "pki"
    d.mkdir()
    for ca in ("ca", "other"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
                        "-keyout", d / f"{ca}.key", "-out", d / f"{ca}.pem"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
                    d / "srv.key", "-out", d / "srv.csr"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", d / "srv.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
                    "-CAcreateserial", "-days", "2", "-out", d / "srv.pem"], check=True, capture_output=True)
    os.chmod(d, 0o755)
    for f in d.iterdir():
        os.chmod(f, 0o644)
    extra = f"listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/srv.pem\nkeyfile {d}/srv.key\n"
    return Mosquitto(workdir=str(tmp_path / "tlsbroker"), extra=extra).start(), d


@pytest.mark.parametrize("case", ["broker down", "unresolvable host", "wrong CA"])
def test_connection_failures_are_logged_with_the_reason_once_per_interval(case, tmp_path, scans, public_dir):
    port, b, mqtt_extra = free_port(), None, ""
    if case == "unresolvable host":
        mqtt_extra = 'host = "no-such-host.invalid"'
    if case == "wrong CA":
        b, pki = _tls_broker(tmp_path, port, public_dir)
        mqtt_extra = f'[mqtt.tls]\nca_file = "{pki}/other.pem"'
    cfg = config(tmp_path / "a.toml", port, {"kind": "folder", "uri": str(scans)}, tmp_path / "ev.db",
                 mqtt_extra=mqtt_extra)
    p = agent(cfg, tmp_path / "agent.log")
    try:
        time.sleep(8)  # several reconnect attempts (every 1-2 s)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        if b:
            b.stop()
    log = open(tmp_path / "agent.log").read()
    want = {"broker down": "TCP connection failed", "unresolvable host": "cannot resolve host 'no-such-host.invalid'",
            "wrong CA": "TLS handshake failed"}[case]
    lines = [ln for ln in log.splitlines() if "MQTT: cannot connect" in ln]
    assert lines and want in lines[0], log[-3000:]
    assert len(lines) <= 2  # once per interval, with a count, not once per attempt


def test_a_prefix_the_broker_would_reject_is_refused_up_front(tmp_path):
    cfg = config(tmp_path / "a.toml", 1883, {"kind": "folder", "uri": str(tmp_path)}, tmp_path / "ev.db")
    text = open(cfg).read().replace(f'prefix = "{PREFIX}"', 'prefix = "plant/#"')
    open(cfg, "w").write(text)
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, "--check-config"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "wildcards" in r.stderr


def _deploy_autosave():
    lines = [ln for ln in open(os.path.join(ROOT, "deploy", "mosquitto.conf")) if ln.startswith("autosave")]
    return "".join(lines)


def test_the_deploy_broker_config_keeps_what_it_acknowledged_through_kill_9(public_dir):
    """QoS 1 messages acknowledged to the agent, queued for an offline subscriber, survive a crash."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    port = free_port()
    work = os.path.join(public_dir, "b")
    os.makedirs(work)
    os.chmod(work, 0o777)  # the broker writes its database there after dropping root
    b = Mosquitto(port=port, workdir=work, autosave=_deploy_autosave()).start()
    sub = Subscriber(port, client_id="plc-bridge")  # persistent session, QoS 1
    sub.close()  # now offline: the broker queues for it
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="agent")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish(f"{PREFIX}/cam/alarm", json.dumps({"id": f"{i:032x}"}), qos=1) for i in range(20)]
    for info in infos:
        info.wait_for_publish(5)
    pub.loop_stop()
    b.kill()
    b = Mosquitto(port=port, workdir=work, autosave=_deploy_autosave()).start()
    try:
        sub = Subscriber(port, client_id="plc-bridge")
        assert sub.wait(lambda: len(sub.alarms()) == 20, 15), len(sub.alarms())
        sub.close()
    finally:
        b.stop()


def test_a_full_disk_evicts_the_oldest_counts_it_and_keeps_the_newest(tmp_path, scans):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        rng = np.random.default_rng(0)
        for i in range(150):  # noise: big JPEG crops and overlays, about 60 KB an event: 9 MB in all
            cv2.imwrite(str(scans / f"item_{i:03d}.png"), rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
        port = free_port()  # the broker is down: everything stays in the store
        store = disk / "ev.db"
        cfg = config(tmp_path / "a.toml", port, {"kind": "folder", "uri": str(scans), "watch": False}, store)
        p = agent(cfg, tmp_path / "agent.log", "--flush-timeout", "0")
        assert p.wait(120) == 0
        log = open(tmp_path / "agent.log").read()
        assert "cannot rollback" not in log and "disk full" in log and "evicted the oldest unsent event" in log, log[-3000:]
        db = sqlite3.connect(str(store))
        kept = [json.loads(r[0])["item"] for r in db.execute("SELECT payload FROM events ORDER BY seq")]
        counters = dict(db.execute("SELECT name, value FROM counters"))
        db.close()
        assert kept and kept[-1] == "item_149.png"  # the newest is kept
        assert counters.get("evicted_disk_full", 0) + len(kept) == 150 and counters.get("dropped_disk_full", 0) == 0
        assert counters.get("evicted_disk_full", 0) > 0
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)])


def test_roi_larger_than_the_frame_is_logged_once_per_interval(broker, tmp_path):
    video = tmp_path / "v.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (48, 48))
    for _ in range(200):
        vw.write(np.zeros((48, 48, 3), np.uint8))
    vw.release()
    cfg = config(tmp_path / "a.toml", broker.port, {"kind": "file", "uri": str(video)}, tmp_path / "ev.db",
                 roi="roi = { x = 0, y = 0, w = 640, h = 480 }", camera="cam")
    sub = Subscriber(broker.port)
    p = agent(cfg, tmp_path / "agent.log")
    assert p.wait(60) == 0
    log = open(tmp_path / "agent.log").read()
    assert 1 <= log.count("does not fit a 48x48 frame") <= 2, log[-2000:]
    assert sub.wait(lambda: (last_stats(sub) or {}).get("cameras", {}).get("cam", {}).get("bad_frames") == 200, 10)
    sub.close()
