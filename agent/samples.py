"""A systematic sample of what each camera's model saw, for recalibration and fine-tuning.

With ``[history] sample_every = N`` the agent keeps one in every N scored frames of each camera,
whatever its decision, as an image the trainer and ``ganomaly-calibrate`` read (the ROI the
model saw, rotation applied, resized to the model's working resolution the way capture resizes,
in the channels and bit depth the camera gave) under ``<history>/samples/<camera>/``. The newest
``sample_keep`` stay; older ones are deleted. The alarm history keeps only what alarmed, so it
cannot say where the line's normal frames lie now; this sample can (docs/feedback.md).

A frame whose score was above the threshold is named ``...-above.png``: most are false alarms,
but at the line's defect rate a few may be defects; look at those before calibrating on the
folder. Names sort by time: ``<YYYYmmdd-HHMMSS.ffffff>-<frame index>[-above].png``.

Writing runs on its own thread behind a small queue; inspection never waits for it. A full
queue drops the sample (counted), a full disk skips it (counted, logged once a minute).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
from collections import deque
from datetime import datetime

import cv2
import numpy as np

from ganomaly_edge.engine.preprocess import resize_to

from .geometry import roi_view
from .history import _private_dir
from .ratelimit import Throttled

log = logging.getLogger(__name__)

_END = object()


def sample_name(ts: float, index: int, above: bool) -> str:
    stamp = datetime.fromtimestamp(ts).strftime("%Y%m%d-%H%M%S.%f")
    return f"{stamp}-{index:09d}{'-above' if above else ''}.png"


class Samples:
    """One camera's sample folder and its writer thread."""

    def __init__(self, folder: str, camera: str, every: int, keep: int, size: tuple[int, int],
                 roi=None, rotate: int = 0, queue_size: int = 8):
        if every < 1 or keep < 1:
            raise ValueError("sample_every and sample_keep must be at least 1")
        self.folder = os.path.join(folder, camera)
        self.camera, self.every, self.keep, self.size = camera, every, keep, size
        self.roi, self.rotate = roi, rotate
        _private_dir(folder)  # <history>/samples, then its camera folder: both 0700
        _private_dir(self.folder)
        for name in os.listdir(self.folder):  # a crash between write and rename leaves a .tmp
            if name.endswith(".tmp"):
                os.unlink(os.path.join(self.folder, name))
        self.files: deque[str] = deque(sorted(n for n in os.listdir(self.folder) if n.endswith(".png")))
        self.seen = 0
        self.counts = {"written": 0, "dropped_busy": 0, "failed": 0, "deleted": 0}
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.throttled = Throttled(log)
        self._prune()  # sample_keep lowered since the last run
        self.thread = threading.Thread(target=self._loop, name=f"samples-{camera}", daemon=True)
        self.thread.start()

    def offer(self, image: np.ndarray, ts: float, index: int, above: bool) -> None:
        """Every scored frame, in order; one in ``every`` is queued for writing."""
        self.seen += 1
        if self.seen % self.every:
            return
        if self.q.full():
            self.counts["dropped_busy"] += 1
            return
        # cut and resized here (about a millisecond, one frame in ``every``), so the queue holds
        # working-resolution images, not full camera frames
        view = resize_to(roi_view(image, self.roi, self.rotate), self.size)
        try:
            self.q.put_nowait((view.copy(), ts, index, above))
        except queue.Full:
            self.counts["dropped_busy"] += 1

    def close(self) -> None:
        """Write what is queued, then end the thread."""
        self.q.put(_END)
        self.thread.join(30)

    def _loop(self) -> None:
        while (job := self.q.get()) is not _END:
            try:
                self._write(*job)
            except Exception:  # a sample is never worth a camera
                self.counts["failed"] += 1
                log.exception("camera %s: could not keep a sample frame", self.camera)

    def _write(self, image: np.ndarray, ts: float, index: int, above: bool) -> None:
        name = sample_name(ts, index, above)
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            self.counts["failed"] += 1
            return
        path = os.path.join(self.folder, name)
        try:
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data.tobytes())
            os.replace(path + ".tmp", path)
        except OSError as e:
            self.counts["failed"] += 1
            try:
                os.unlink(path + ".tmp")
            except OSError:
                pass
            why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else str(e)
            self.throttled.log(logging.WARNING, "write", "camera %s: sample frame not kept in %s: %s",
                               self.camera, self.folder, why)
            return
        self.files.append(name)
        self.counts["written"] += 1
        self._prune()

    def _prune(self) -> None:
        while len(self.files) > self.keep:
            try:
                os.unlink(os.path.join(self.folder, self.files.popleft()))
                self.counts["deleted"] += 1
            except FileNotFoundError:
                pass

    def snapshot(self) -> dict:
        return {"folder": self.folder, "every": self.every, "kept": len(self.files), **self.counts}
