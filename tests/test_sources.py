"""Frame sources (agent/sources.py).

A folder source run again over the same folder (agent/sources.py): it says how many images were
processed before and how to have them inspected again, instead of a bare "finished after 0 frames".
The agent as a process, a real mosquitto, real PNG files, one event store across the runs."""

import os
import time

import cv2
import numpy as np
import pytest

from support.agent import start_agent, write_config


@pytest.mark.parametrize("use_inotify", [True, False])
def test_a_quiet_folder_is_not_listed_again_however_many_files_it_has_seen(tmp_path, use_inotify, monkeypatch):
    """The folder's cost per poll must not grow with its history: new files come from inotify, or,
    without it, a directory is listed again only when its modification time changes."""
    from ganomaly_edge.agent import inotify

    if not use_inotify:
        monkeypatch.setattr(inotify, "Watch", lambda root: (_ for _ in ()).throw(inotify.Unavailable("off")))
    from ganomaly_edge.agent.config import SourceConfig
    from ganomaly_edge.agent.sources import FolderSource

    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(10000):
        (folder / f"old_{i:05d}.png").write_bytes(b"")
    src = FolderSource(SourceConfig(kind="folder", uri=str(folder), poll_interval_s=0.01, settle_s=0.0),
                       seen={str(folder / f"old_{i:05d}.png"): "" for i in range(10000)})
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        src.read()
    assert src.scans == 1  # one listing at the start, none while nothing changes
    cv2.imwrite(str(folder / "new.png"), np.zeros((8, 8, 3), np.uint8))
    frame = None
    deadline = time.monotonic() + 5
    while frame is None and time.monotonic() < deadline:
        frame = src.read()
    assert frame is not None and frame.name == "new.png"
    assert src.scans == (1 if use_inotify else 2)  # inotify: found without listing the 10,000


def _run(tmp_path, port, scans, n):
    cfg = write_config(tmp_path / "agent.toml", port, {"kind": "folder", "uri": str(scans), "watch": False},
                       tmp_path / "ev.db", device_id="rerun", prefix=None, stats_interval_s=None, reconnect_s=None,
                       retry_s=None, results=None, mqtt_extra="discovery = false", decision="threshold = 1000.0")
    log = tmp_path / f"agent{n}.log"
    assert start_agent(cfg, log).wait(180) == 0, log.read_text()
    return log.read_text()


def test_a_rerun_says_what_was_processed_before_and_how_to_reprocess(broker, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        cv2.imwrite(str(scans / f"scan{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    first = _run(tmp_path, broker.port, scans, 1)
    assert "already processed" not in first and "source finished after 3 frames" in first
    second = _run(tmp_path, broker.port, scans, 2)
    assert "3 image(s) were already processed" in second and "0 new" in second, second
    assert "WARNING" in second.split("were already processed")[0].splitlines()[-1]  # nothing new: loud
    assert "touch it" in second
    t = time.time() + 5
    os.utime(scans / "scan1.png", (t, t))  # what the message says to do
    third = _run(tmp_path, broker.port, scans, 3)
    assert "2 image(s) were already processed" in third and "1 new" in third, third
    assert "source finished after 1 frames" in third
