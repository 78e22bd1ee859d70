"""Nothing lost, part 3: the rows of the third probe, each against real parts (real mosquitto on
loopback, a real tmpfs for the full disk, real files, real SQLite). The model is the shipped 16x16
bundle with a threshold that makes every inspected frame alarm (see test_no_silent_loss.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import ROOT
from ganomaly_edge.tools.broker import Mosquitto, free_port
from test_agent_e2e import Subscriber
from test_no_silent_loss import agent, broker, config, last_stats, png, scans, stored  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def video(path, frames=50, size=16):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (size, size))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        vw.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    vw.release()
    return str(path)


def read(path):
    try:
        return open(path).read()
    except OSError:
        return ""


@pytest.fixture
def tmpfs(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    yield disk
    if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(disk)])


def fill(path, stop):
    """Another writer: takes every byte that comes free on the disk until ``stop`` is set."""
    with open(path, "ab", buffering=0) as f:
        while not stop.is_set():
            try:
                f.write(b"\0" * 65536)
            except OSError:
                try:
                    f.write(b"\0" * 4096)
                except OSError:
                    time.sleep(0.01)


def test_delivery_resumes_within_10_s_after_a_full_disk_is_freed(broker, tmpfs, tmp_path):
    """The delete after a PUBACK fails on the full disk; it must not kill delivery."""
    clip = video(tmp_path / "v.avi")
    cfg = config(tmp_path / "a.toml", broker.port, {"kind": "file", "uri": clip, "loop": True, "fps": 20.0},
                 tmpfs / "ev.db", camera="cam")
    sub = Subscriber(broker.port)
    p = agent(cfg, tmp_path / "agent.log")
    stop = threading.Event()
    try:
        assert sub.wait(lambda: len(sub.alarms()) >= 20, 60), read(tmp_path / "agent.log")[-3000:]
        writer = threading.Thread(target=fill, args=(tmpfs / "filler", stop), daemon=True)
        writer.start()
        time.sleep(12)
        stop.set()
        writer.join()
        os.remove(tmpfs / "filler")
        freed = time.monotonic()
        before = {a["id"] for a in sub.alarms()}
        assert sub.wait(lambda: len({a["id"] for a in sub.alarms()} - before) >= 20, 10), (
            "no delivery within 10 s of space being freed", read(tmp_path / "agent.log")[-3000:])
        assert time.monotonic() - freed < 10
        assert p.poll() is None
        stats = last_stats(sub)
        assert stats["mqtt"]["connected"] and stats["mqtt"]["network_thread_alive"]
    finally:
        stop.set()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
        sub.close()
