"""Capture: open a source, read it, supervise it, and hand frames to the inference queue.

A source that fails or stalls is reopened after a delay that doubles up to ``retry_max_s`` and
starts again from ``retry_min_s`` once a reopened source delivers a frame. Live sources drop the
oldest queued frame when inference falls behind (counted); files and folders wait instead and
never drop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .config import CameraConfig
from .geometry import FrameSizeError, View, model_input
from .ratelimit import Throttled
from .sources import Frame, SourceEnded, SourceError, open_source
from .stats import CameraStats

log = logging.getLogger(__name__)

END = object()  # queued after the last frame


@dataclass
class Item:
    frame: Frame
    x: np.ndarray  # model input, uint8 [S, S, C]
    view: View


class Backoff:
    """Delays between reopen attempts: doubling from ``low`` to ``high``, reset by a success."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high
        self.delay = low

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.delay * 2, self.high)
        return d

    def reset(self) -> None:
        self.delay = self.low


class Capture:
    def __init__(self, cam: CameraConfig, size: int, channels: int, q: queue.Queue, stats: CameraStats,
                 set_online: Callable[[bool], None]):
        self.cam, self.size, self.channels, self.q, self.stats = cam, size, channels, q, stats
        self.set_online = set_online
        self.stop = threading.Event()
        self.backoff = Backoff(cam.source.retry_min_s, cam.source.retry_max_s)
        self.folder_seen: set[str] = set()
        self.last_frame = time.monotonic()
        self.throttled = Throttled(log)
        self.thread = threading.Thread(target=self._loop, name=f"capture-{cam.name}", daemon=True)

    def _loop(self) -> None:
        opened_once = False
        try:
            while not self.stop.is_set():
                try:
                    src = open_source(self.cam.source, self.folder_seen)
                except Exception as e:  # SourceError, or anything a backend raises: retried, never fatal
                    self.stats.add("source_errors")
                    self.set_online(False)
                    delay = self.backoff.next()
                    self.throttled.log(logging.ERROR, "open", "camera %s: %s; retrying in %.0f s", self.cam.name,
                                       e, delay)
                    self.stop.wait(delay)
                    continue
                if opened_once:
                    self.stats.add("reconnects")
                    log.info("camera %s: source reopened (reconnect %d)", self.cam.name, self.stats["reconnects"])
                opened_once = True
                self.set_online(True)
                self.last_frame = time.monotonic()
                try:
                    ended = self._read_until_failure(src)
                finally:
                    src.close()
                if ended:
                    log.info("camera %s: source finished after %d frames", self.cam.name, self.stats.captured.count)
                    return
                self.set_online(False)
                self.stop.wait(self.backoff.next())
        finally:
            self.put(END, force=True)

    def _read_until_failure(self, src) -> bool:
        """Read frames until the source ends (True) or fails/stalls (False) or we are stopped."""
        counted = 0
        while not self.stop.is_set():
            try:
                frame = src.read()
            except SourceEnded:
                self.stats.add("skipped", src.skipped - counted)
                return True
            except SourceError as e:
                self.stats.add("source_errors")
                log.warning("camera %s: %s; reopening", self.cam.name, e)
                return False
            except Exception:  # a bug or a library error must not end inspection: reopen instead
                self.stats.add("source_errors")
                log.exception("camera %s: the source failed unexpectedly; reopening", self.cam.name)
                return False
            if src.skipped != counted:  # unreadable items the source passed over
                self.stats.add("skipped", src.skipped - counted)
                counted = src.skipped
            if frame is None:
                if self._stalled(time.monotonic()):
                    return False
                continue
            self._take(frame)
        return False

    def _stalled(self, now: float) -> bool:
        cfg = self.cam.source
        if cfg.kind != "folder" and now - self.last_frame > cfg.stall_timeout_s:
            self.stats.add("stalls")
            log.warning("camera %s: no frame for %.0f s: stalled, reopening", self.cam.name, now - self.last_frame)
            return True
        return False

    def _take(self, frame: Frame) -> None:
        self.last_frame = time.monotonic()
        self.backoff.reset()  # a source that delivers is healthy again
        if self.stats.first_capture is None:
            self.stats.first_capture = frame.mono
        self.stats.captured.count += 1
        try:
            x, view = model_input(frame.image, self.cam.roi, self.cam.rotate, self.size, self.channels)
        except (FrameSizeError, ValueError) as e:
            self.stats.add("bad_frames")
            self.throttled.log(logging.ERROR, "frame", "camera %s: frame %d skipped: %s", self.cam.name, frame.index, e)
            return
        self.put(Item(frame, x, view), force=False)

    def put(self, item: Any, force: bool) -> None:
        live = self.cam.source.live
        while True:
            try:
                self.q.put(item, timeout=0.1 if not live else 0)
                return
            except queue.Full:
                if live or force:  # files and folders keep waiting: they never drop a frame
                    try:
                        if self.q.get_nowait() is not END:
                            self.stats.add("dropped")
                    except queue.Empty:
                        pass
