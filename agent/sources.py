"""Frame sources: camera index, video file, RTSP/HTTP URL, GStreamer pipeline, image folder.

``open_source`` returns an object with ``read() -> Frame | None`` (None: nothing now, try again),
raising ``SourceEnded`` when a finite source is done and ``SourceError`` when it failed and must
be reopened. Supervision (stalls, paced reopening) lives in the pipeline.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ganomaly_edge.engine.preprocess import read_image

from .config import SourceConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SourceError(RuntimeError):
    """The source failed (cannot open, read error, vanished); the supervisor reopens it."""


class SourceEnded(Exception):
    """A finite source (file without loop, folder without watch) has delivered everything."""


@dataclass
class Frame:
    image: np.ndarray  # BGR or grey, as read
    index: int
    ts: float  # wall-clock capture time (time.time())
    mono: float  # monotonic capture time, for latency
    name: str = ""  # file name for folder items
    t_media: float = 0.0  # stream time for decisions: the video position for files, else monotonic


class VideoSource:
    """OpenCV VideoCapture for camera indices, files, URLs and GStreamer pipelines."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.index = 0
        self.skipped = 0  # a video has no unreadable items to skip (folders do)
        self._next_due = None
        self._last_pos = -1.0
        self._loop_offset = 0.0
        if cfg.kind == "camera":
            try:
                target: int | str = int(cfg.uri)
            except ValueError:
                target = cfg.uri  # e.g. /dev/video2
            self.cap = cv2.VideoCapture(target)
        elif cfg.kind == "gstreamer":
            self.cap = cv2.VideoCapture(cfg.uri, cv2.CAP_GSTREAMER)
        elif cfg.kind == "url":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.stall_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.stall_timeout_s * 1000)]
            self.cap = cv2.VideoCapture(cfg.uri, cv2.CAP_FFMPEG, params)
        else:
            if not os.path.exists(cfg.uri):
                raise SourceError(f"video file {cfg.uri!r} does not exist")
            self.cap = cv2.VideoCapture(cfg.uri)
        if not self.cap.isOpened():
            hint = {"gstreamer": " (is OpenCV built with GStreamer? pip's opencv-python is not; use the "
                                 "system OpenCV on a Jetson)",
                    "camera": " (is the camera connected and not used by another process?)"}.get(cfg.kind, "")
            raise SourceError(f"cannot open {cfg.kind} source {cfg.uri!r}{hint}")
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._frame_dt = 1.0 / fps if fps > 0 else 0.04

    def read(self) -> Frame | None:
        if self.cfg.fps and self.cfg.kind == "file":
            now = time.monotonic()
            if self._next_due is None:
                self._next_due = now
            if now < self._next_due:
                time.sleep(self._next_due - now)
            self._next_due += 1.0 / self.cfg.fps
        ok, img = self.cap.read()
        if not ok or img is None:
            if self.cfg.kind == "file":
                if self.cfg.loop and self.index > 0:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, img = self.cap.read()
                if not ok or img is None:
                    if self.index == 0:
                        raise SourceError(f"video file {self.cfg.uri!r} has no readable frames")
                    raise SourceEnded()
            else:
                raise SourceError(f"{self.cfg.kind} source {self.cfg.uri!r} returned no frame")
        mono = time.monotonic()
        t_media = mono
        if self.cfg.kind == "file":
            # Decisions (debounce, cooldown) follow the video's own clock, however fast it is read.
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if pos < self._last_pos:
                self._loop_offset += self._last_pos + self._frame_dt
            self._last_pos = pos
            t_media = self._loop_offset + pos
        frame = Frame(img, self.index, time.time(), mono, t_media=t_media)
        self.index += 1
        return frame

    def close(self) -> None:
        self.cap.release()


class FolderSource:
    """Every image in a folder, oldest name first, each exactly once; new files as they arrive.

    The scanner case: an item is one image, never dropped. A file is taken once its size has
    stopped changing (a writer may still be copying it). Unreadable images are skipped and
    counted, named in the log.
    """

    def __init__(self, cfg: SourceConfig, seen: set[str] | None = None):
        if not os.path.isdir(cfg.uri):
            raise SourceError(f"image folder {cfg.uri!r} does not exist or is not a folder")
        self.cfg = cfg
        self.seen: set[str] = seen if seen is not None else set()
        self.pending: list[str] = []
        self.sizes: dict[str, int] = {}
        self.index = len(self.seen)
        self.skipped = 0
        self._last_scan = 0.0

    def _scan(self) -> None:
        names = []
        for dirpath, dirnames, filenames in os.walk(self.cfg.uri):
            dirnames.sort()
            for f in filenames:
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    names.append(os.path.join(dirpath, f))
        fresh = []
        for p in sorted(names):
            if p in self.seen:
                continue
            try:
                size = os.path.getsize(p)
            except OSError:
                continue
            if self.cfg.watch and self.sizes.get(p) != size:
                self.sizes[p] = size  # take it on the next scan if it has stopped growing
                continue
            fresh.append(p)
        self.pending.extend(fresh)
        self._last_scan = time.monotonic()

    def read(self) -> Frame | None:
        while True:
            if not self.pending:
                if not os.path.isdir(self.cfg.uri):
                    raise SourceError(f"image folder {self.cfg.uri!r} has vanished")
                wait = self.cfg.poll_interval_s - (time.monotonic() - self._last_scan)
                if wait > 0 and self.cfg.watch:
                    time.sleep(min(wait, 0.1))
                    return None
                self._scan()
                if not self.pending:
                    if not self.cfg.watch and not self.sizes:
                        raise SourceEnded()
                    return None
            path = self.pending.pop(0)
            self.seen.add(path)
            self.sizes.pop(path, None)
            img = read_image(path, 3)
            if img is None:
                self.skipped += 1
                log.warning("skipping unreadable or corrupt image %s", path)
                continue
            mono = time.monotonic()
            frame = Frame(img, self.index, time.time(), mono, name=os.path.relpath(path, self.cfg.uri), t_media=mono)
            self.index += 1
            return frame

    def close(self) -> None:
        pass


def open_source(cfg: SourceConfig, folder_seen: set[str] | None = None):
    if cfg.kind == "folder":
        return FolderSource(cfg, folder_seen)
    return VideoSource(cfg)
