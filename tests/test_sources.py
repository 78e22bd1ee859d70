"""Frame sources (agent/sources.py)."""

import time

import cv2
import numpy as np
import pytest


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
