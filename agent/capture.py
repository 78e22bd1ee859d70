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

from ganomaly_edge.engine.window import to_8bit

from .config import CameraConfig
from .geometry import FrameSizeError, View, model_input
from .ratelimit import Throttled
from .sources import Frame, SourceEnded, SourceError, open_source
from .stats import CameraStats

log = logging.getLogger(__name__)

END = object()  # queued after the last frame


@dataclass(slots=True)
class Item:
    """A frame on its way to inference: the frame, its model input and how to map boxes back."""

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


class Reader:
    """Opens and reads one source on a thread of its own. A call that hangs (a GStreamer pipeline or
    an RTSP stream without a timeout, a FIFO, a dead network mount) is abandoned: the supervisor
    stops waiting and opens the source anew, and the stuck thread is left behind, counted."""

    def __init__(self, cfg, seen: dict[str, str], record, name: str, genicam=None):
        self.cfg, self.seen, self.record, self.genicam = cfg, seen, record, genicam
        self.results: queue.Queue = queue.Queue(maxsize=1)
        self.abandoned = threading.Event()
        self.src = None
        self.thread = threading.Thread(target=self._run, name=f"reader-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.src = open_source(self.cfg, self.seen, self.record, self.genicam)
            ok = self._put(("opened", None))
            while ok and not self.abandoned.is_set():
                ok = self._put(("frame", self.src.read()))
        except BaseException as e:  # SourceEnded, SourceError, or a library's error: the supervisor decides
            self._put(("error", e))
        finally:
            if self.src is not None:
                self.src.close()

    def _put(self, msg: tuple) -> bool:
        while not self.abandoned.is_set():
            try:
                self.results.put(msg, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def skipped(self) -> int:
        return getattr(self.src, "skipped", 0)


class Capture:
    STUCK_LIMIT = 4  # abandoned reads still hanging at once: beyond this the watchdog stops

    def __init__(self, cam: CameraConfig, size: tuple[int, int], channels: int, q: queue.Queue, stats: CameraStats,
                 set_online: Callable[..., None], record=None, window=None, triggers=None):
        self.cam, self.size, self.channels, self.q, self.stats = cam, size, channels, q, stats
        self.window = window  # 16-bit frames: onto the model's 8 bits (engine/window.py)
        self.triggers = triggers  # item mode (agent/items.py): which frames are items
        self.reader: Reader | None = None
        self.set_online = set_online
        self.stop = threading.Event()
        self.backoff = Backoff(cam.source.retry_min_s, cam.source.retry_max_s)
        self.folder_seen: dict[str, str] = {}  # path -> stamp, kept across reopenings
        self.record = record  # folders: the durable record of processed files
        self.last_frame = self.heartbeat = time.monotonic()
        self.ended = False
        self.reason = ""
        self.stuck: list[Reader] = []
        self.throttled = Throttled(log)
        self.thread = threading.Thread(target=self._loop, name=f"capture-{cam.name}", daemon=True)

    def _wait(self, reader: Reader, timeout: float) -> tuple | None:
        """The reader's next message, or None after ``timeout`` (or when stopping); beats meanwhile."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                return reader.results.get(timeout=min(0.5, max(deadline - self.heartbeat, 0.01)))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
        return None

    def _pause(self, delay: float) -> None:
        end = time.monotonic() + delay
        while not self.stop.is_set() and time.monotonic() < end:
            self.heartbeat = time.monotonic()
            self.stop.wait(min(0.5, end - self.heartbeat))

    def _abandon(self, reader: Reader, what: str, waited: float) -> None:
        reader.abandoned.set()
        self.stuck = [r for r in self.stuck if r.thread.is_alive()] + [reader]
        self.stats.add("stalls")
        self.throttled.log(logging.ERROR, "stuck", "camera %s: %s has not returned for %.1f s: abandoned (%d stuck), "
                           "reopening the source", self.cam.name, what, waited, len(self.stuck))

    def _loop(self) -> None:
        opened_once = False
        try:
            while not self.stop.is_set():
                reader = self.reader = Reader(self.cam.source, self.folder_seen, self.record, self.cam.name,
                                             self.cam.genicam)
                msg = self._wait(reader, 2 * self.cam.source.stall_timeout_s)
                if msg is None or msg[0] == "error":
                    self._open_failed(reader, msg)
                    continue
                if opened_once:
                    self.stats.add("reconnects")
                    log.info("camera %s: source reopened (reconnect %d)", self.cam.name, self.stats["reconnects"])
                opened_once = True
                self.set_online(True)
                self.last_frame = time.monotonic()
                ended = self._read_until_failure(reader)
                reader.abandoned.set()  # the reader closes the source on its own thread
                if ended:
                    self.ended = True
                    log.info("camera %s: source finished after %d frames", self.cam.name, self.stats.captured.count)
                    return
                self.set_online(False, self.reason)
                self._pause(self.backoff.next())
        finally:
            self._put_end()

    def _open_failed(self, reader: Reader, msg: tuple | None) -> None:
        if self.stop.is_set():
            return
        if msg is None:
            self._abandon(reader, "opening the source", 2 * self.cam.source.stall_timeout_s)
            why = "opening the source hangs"
        else:
            self.stats.add("source_errors")
            why = f"cannot open the source: {msg[1]}"
        self.set_online(False, why)
        delay = self.backoff.next()
        self.throttled.log(logging.ERROR, "open", "camera %s: %s; retrying in %.1f s", self.cam.name, why, delay)
        self._pause(delay)

    def _read_until_failure(self, reader: Reader) -> bool:
        """Read frames until the source ends (True) or fails/stalls (False) or we are stopped."""
        counted = 0
        self.reason = "the source failed or stalled; reopening"
        while not self.stop.is_set():
            msg = self._wait(reader, self.cam.source.stall_timeout_s)
            if msg is None:
                if not self.stop.is_set():
                    self._abandon(reader, "a read", self.cam.source.stall_timeout_s)
                    self.reason = f"a read hung for {self.cam.source.stall_timeout_s:.0f} s; reopening"
                return False
            if reader.skipped() != counted:  # unreadable items the source passed over
                self.stats.add("skipped", reader.skipped() - counted)
                counted = reader.skipped()
            kind, value = msg
            if kind == "error":
                return self._read_error(value)
            if value is None:
                if self._stalled(time.monotonic()):
                    return False
                continue
            self._take(value)
        return False

    def _read_error(self, e: BaseException) -> bool:
        if isinstance(e, SourceEnded):
            return True
        self.stats.add("source_errors")
        self.reason = f"source error: {e}"
        if isinstance(e, SourceError):
            log.warning("camera %s: %s; reopening", self.cam.name, e)
        else:  # a bug or a library error must not end inspection: reopen instead
            log.error("camera %s: the source failed unexpectedly; reopening", self.cam.name, exc_info=e)
        return False

    def _stalled(self, now: float) -> bool:
        cfg = self.cam.source
        # A triggered camera is quiet between parts: its link is watched by the GenICam heartbeat instead.
        triggered = cfg.kind == "genicam" and self.cam.genicam.trigger
        if cfg.kind != "folder" and not triggered and now - self.last_frame > cfg.stall_timeout_s:
            self.stats.add("stalls")
            self.reason = f"no frame for {now - self.last_frame:.0f} s: stalled; reopening"
            log.warning("camera %s: no frame for %.0f s: stalled, reopening", self.cam.name, now - self.last_frame)
            return True
        return False

    def health(self, now: float) -> str | None:
        """Why capture is not making progress, or None: frames arrive, or it is knowingly offline
        and retrying. A supervisor that stops turning over, or too many hung reads, is not."""
        if self.ended or self.stop.is_set():
            return None
        if not self.thread.is_alive():
            return "the capture thread has died"
        stale = now - self.heartbeat
        if stale > 3 * self.cam.source.stall_timeout_s:
            return f"capture has not turned over for {stale:.0f} s"
        stuck = sum(r.thread.is_alive() for r in self.stuck)
        if stuck > self.STUCK_LIMIT:
            return f"{stuck} source reads hang and cannot be reclaimed"
        return None

    def _take(self, frame: Frame) -> None:
        self.last_frame = time.monotonic()
        self.backoff.reset()  # a source that delivers is healthy again
        if self.stats.first_capture is None:
            self.stats.first_capture = frame.mono
        self.stats.captured.count += 1
        if self.triggers is not None:
            trig = self.triggers.claim(frame)
            if trig is None:  # between triggers: not an item
                return
            frame.item, frame.t0 = trig.item, trig.mono
        try:
            if frame.image.dtype != np.uint8:  # crops and overlays are rendered through the window too
                frame.image = to_8bit(frame.image, self.window)
            x, view = model_input(frame.image, self.cam.roi, self.cam.rotate, self.size, self.channels)
        except (FrameSizeError, ValueError) as e:
            self.stats.add("bad_frames")
            self.throttled.log(logging.ERROR, "frame", "camera %s: frame %d skipped: %s", self.cam.name, frame.index, e)
            return
        self.put(Item(frame, x, view))

    def software_trigger(self) -> None:
        """Fire the open source's software trigger, if it has one (a GenICam camera)."""
        src = getattr(self.reader, "src", None)
        fire = getattr(src, "software_trigger", None)
        if fire is not None:
            fire()

    # Stopping, the end marker waits this long for room behind the queued frames before it pushes
    # the oldest out (inference has stopped taking frames).
    END_WAIT_S = 5.0

    def _put_end(self) -> None:
        """The end marker, behind every frame already queued. A file or folder that ended, or a
        camera in item mode, loses none of them: the marker waits for room as their frames did (a
        folder's last frames were once pushed out by it when inference was behind, uninspected).
        A live camera's marker takes the oldest frame's place, as a live frame would; so does any
        source's when the agent is stopping and inference takes nothing for END_WAIT_S."""
        live = self.cam.source.live and self.triggers is None
        waited = None
        while True:
            try:
                self.q.put(END, timeout=0.1)
                return
            except queue.Full:
                if not live:
                    if not self.stop.is_set():
                        continue
                    waited = waited if waited is not None else time.monotonic()
                    if time.monotonic() - waited < self.END_WAIT_S:
                        continue
                if self._drop_oldest() and not live:
                    self.throttled.log(logging.WARNING, "end-drop", "camera %s: stopping with inference stalled: "
                                       "the oldest queued frame was dropped for the end marker", self.cam.name)

    def _drop_oldest(self) -> bool:
        """Take the oldest queued frame out to make room (counted in ``dropped``); whether one was."""
        try:
            if self.q.get_nowait() is not END:
                self.stats.add("dropped")
                return True
        except queue.Empty:
            pass
        return False

    def put(self, item: Any) -> None:
        live = self.cam.source.live and self.triggers is None  # an item is never dropped
        while True:
            try:
                self.q.put(item, timeout=0.1 if not live else 0)
                return
            except queue.Full:
                if live:  # files and folders keep waiting: they never drop a frame
                    self._drop_oldest()
