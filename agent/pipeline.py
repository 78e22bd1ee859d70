"""One camera's pipeline: a supervised capture thread, a bounded queue, inference workers.

Live sources drop the oldest frame when inference falls behind (counted); files and folders
block instead and never drop. An inference worker takes what is waiting as one micro-batch and
scores it; with several workers (ONNX Runtime on a multi-core CPU) the batches run side by side
and the decisions are then made strictly in frame order. Alarms (localisation, JPEG, SQLite) are
built on their own thread and stored for the publisher.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from engine import Engine

from .config import CameraConfig
from .decision import Debouncer
from .geometry import FrameSizeError, View, model_input
from .localise import boxes_in_frame, crops, overlay
from .sources import Frame, SourceEnded, SourceError, open_source
from .stats import Latency, Rate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_END = object()


@dataclass
class Item:
    frame: Frame
    x: np.ndarray  # model input, uint8 [S, S, C]
    view: View


class CameraPipeline:
    def __init__(self, cam: CameraConfig, engine: Engine, store, publisher, prefix: str, queue_size: int,
                 max_batch: int, on_status: Callable[[str, str], None] | None = None, workers: int = 1):
        self.cam, self.engine, self.store, self.publisher, self.prefix = cam, engine, store, publisher, prefix
        self.max_batch = min(max_batch, engine.max_batch or max_batch)
        # Several workers only where the engine takes concurrent calls (ONNX Runtime on the CPU).
        self.workers = max(1, workers) if engine.concurrent else 1
        log.info("camera %s: %s, %d inference worker(s)%s", cam.name, engine.backend, self.workers,
                 f" x {engine.threads} thread(s)" if hasattr(engine, "threads") else "")
        # Room for a full micro-batch per worker: with less, one worker takes everything waiting
        # and the others run small, inefficient batches.
        self.q: queue.Queue = queue.Queue(maxsize=queue_size or self.max_batch * self.workers)
        self.on_status = on_status or (lambda cam, state: None)
        d = cam.decision.resolved(cam.source.kind)
        cal = engine.bundle.calibration
        self.threshold = d.threshold if d.threshold is not None else cal["threshold"]
        self.debounce = Debouncer(self.threshold, d.k, d.n, d.cooldown_s)
        self.size, _, self.channels = engine.spec.shape
        self.stop_capture = threading.Event()
        self.finished = threading.Event()
        self.folder_seen: set[str] = set()
        now = time.monotonic()
        self.captured, self.processed = Rate(now), Rate(now)
        self.dropped = self.skipped = self.bad_frames = self.reconnects = self.stalls = self.alarms = self.source_errors = 0
        self.last_frame = now
        self.first_capture: float | None = None
        self.last_done: float | None = None
        self.online = False
        self.lat_infer, self.lat_queue, self.lat_frame, self.lat_post = Latency(), Latency(), Latency(), Latency()
        self.source_obj = None
        self.capture_thread = threading.Thread(target=self._capture_loop, name=f"capture-{cam.name}", daemon=True)
        self.take_lock = threading.Lock()  # a batch is taken (and numbered) by one worker at a time
        self.order = threading.Condition()  # decisions in batch order
        self.next_batch = self.next_decision = 0
        self.ending = False
        self.workers_left = self.workers
        self.infer_threads = [threading.Thread(target=self._infer_loop, name=f"infer-{cam.name}-{i}", daemon=True)
                              for i in range(self.workers)]
        # Alarms (localisation, JPEG, SQLite) are built off the inference thread, which goes on
        # scoring; the queue blocks when full, so no alarm is ever dropped.
        self.alarm_q: queue.Queue = queue.Queue(maxsize=64)
        self.alarm_thread = threading.Thread(target=self._alarm_loop, name=f"alarms-{cam.name}", daemon=True)

    def start(self) -> None:
        # Consumers before producers: a source that ends at once must find them running.
        self.alarm_thread.start()
        for t in self.infer_threads:
            t.start()
        self.capture_thread.start()

    def stop(self) -> None:
        """Stop capturing; frames already queued are still processed."""
        self.stop_capture.set()

    def join(self, timeout: float | None = None) -> None:
        self.capture_thread.join(timeout)
        for t in self.infer_threads:
            t.join(timeout)
        self.alarm_thread.join(timeout)

    # -- capture ---------------------------------------------------------------------------------
    def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            self.on_status(self.cam.name, "online" if online else "offline")

    def _capture_loop(self) -> None:
        src_cfg = self.cam.source
        delay = src_cfg.retry_min_s
        opened_once = False
        try:
            while not self.stop_capture.is_set():
                try:
                    src = open_source(src_cfg, self.folder_seen)
                except SourceError as e:
                    self.source_errors += 1
                    self._set_online(False)
                    log.error("camera %s: %s; retrying in %.0f s", self.cam.name, e, delay)
                    self.stop_capture.wait(delay)
                    delay = min(delay * 2, src_cfg.retry_max_s)
                    continue
                if opened_once:
                    self.reconnects += 1
                    log.info("camera %s: source reopened (reconnect %d)", self.cam.name, self.reconnects)
                opened_once = True
                self.source_obj = src
                self._set_online(True)
                self.last_frame = time.monotonic()
                try:
                    ended = self._read_until_failure(src)
                finally:
                    src.close()
                if ended:
                    log.info("camera %s: source finished after %d frames", self.cam.name, self.captured.count)
                    return
                self._set_online(False)
                self.stop_capture.wait(delay)
                delay = min(delay * 2, src_cfg.retry_max_s)
        finally:
            self._put(_END, force=True)

    def _sync_skipped(self, src) -> None:
        n = getattr(src, "skipped", 0)
        if n != getattr(src, "_counted", 0):
            self.skipped += n - getattr(src, "_counted", 0)
            src._counted = n

    def _read_until_failure(self, src) -> bool:
        """Read frames until the source ends (True) or fails/stalls (False) or we are stopped."""
        cfg = self.cam.source
        while not self.stop_capture.is_set():
            try:
                frame = src.read()
            except SourceEnded:
                self._sync_skipped(src)
                return True
            except SourceError as e:
                self.source_errors += 1
                log.warning("camera %s: %s; reopening", self.cam.name, e)
                return False
            now = time.monotonic()
            if frame is None:
                if cfg.kind != "folder" and now - self.last_frame > cfg.stall_timeout_s:
                    self.stalls += 1
                    log.warning("camera %s: no frame for %.0f s: stalled, reopening", self.cam.name, now - self.last_frame)
                    return False
                continue
            self.last_frame = now
            if self.first_capture is None:
                self.first_capture = frame.mono
            self.captured.count += 1
            self._sync_skipped(src)
            try:
                x, view = model_input(frame.image, self.cam.roi, self.cam.rotate, self.size, self.channels)
            except (FrameSizeError, ValueError) as e:
                self.bad_frames += 1
                log.error("camera %s: frame %d skipped: %s", self.cam.name, frame.index, e)
                continue
            self._put(Item(frame, x, view), force=False)
        return False

    def _put(self, item: Any, force: bool) -> None:
        live = self.cam.source.live
        while True:
            try:
                self.q.put(item, timeout=0.1 if not live else 0)
                return
            except queue.Full:
                if live or force:  # files and folders keep waiting: they never drop a frame
                    try:
                        old = self.q.get_nowait()
                        if old is not _END:
                            self.dropped += 1
                    except queue.Empty:
                        pass

    # -- inference -------------------------------------------------------------------------------
    def _take(self) -> tuple[int, list[Item]] | None:
        """The next micro-batch (what is waiting, up to max_batch) and its number; None at the end."""
        with self.take_lock:
            if self.ending:
                return None
            first = self.q.get()
            if first is _END:
                self.ending = True
                return None
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    self.ending = True
                    break
                batch.append(nxt)
            n = self.next_batch
            self.next_batch += 1
            return n, batch

    def _infer_loop(self) -> None:
        while (taken := self._take()) is not None:
            self._process(*taken)
        with self.order:
            self.workers_left -= 1
            last = self.workers_left == 0
        if last:  # every batch is decided: no alarm can follow
            self.alarm_q.put(_END)
            self.alarm_thread.join()
            self._set_online(False)
            self.finished.set()

    def _alarm_loop(self) -> None:
        while True:
            job = self.alarm_q.get()
            if job is _END:
                return
            try:
                self._alarm(*job)
            except Exception:  # one bad alarm (e.g. a full disk) must not stop the camera
                log.exception("camera %s: could not store an alarm", self.cam.name)

    def _process(self, n: int, batch: list[Item]) -> None:
        t0 = time.monotonic()
        for it in batch:
            self.lat_queue.add(t0 - it.frame.mono)
        try:
            raw, residual = self.engine.infer(np.stack([it.x for it in batch]))
            scores = self.engine.calibrated(raw)
        except Exception:  # e.g. a GPU error: the frames are lost, the camera goes on
            log.exception("camera %s: inference failed on %d frame(s) from frame %d", self.cam.name,
                          len(batch), batch[0].frame.index)
            self.bad_frames += len(batch)
            batch = []
        t1 = time.monotonic()
        self.lat_infer.add(t1 - t0)
        with self.order:  # debounce and cooldown see the frames in capture order
            while self.next_decision != n:
                self.order.wait()
            for i, it in enumerate(batch):
                self.processed.count += 1
                fired = self.debounce.update(float(scores[i]), it.frame.t_media, (it, residual[i], float(scores[i])))
                if fired is not None:
                    self.alarm_q.put(fired)
            self.next_decision += 1
            self.order.notify_all()
        t2 = time.monotonic()
        self.last_done = t2
        self.lat_post.add(t2 - t1)
        for it in batch:
            self.lat_frame.add(t2 - it.frame.mono)

    def _alarm(self, it: Item, res: np.ndarray, score: float) -> None:
        loc = self.cam.localisation
        boxes = boxes_in_frame(res, it.view, loc)
        event_id = uuid.uuid4().hex
        base = f"{self.prefix}/{self.cam.name}/alarm"
        blobs = [(f"{base}/{event_id}/crop/{k}", data) for k, data in enumerate(crops(it.frame.image, boxes, loc))]
        if loc.overlay:
            blobs.append((f"{base}/{event_id}/overlay", overlay(it.frame.image, res, it.view, boxes, loc)))
        payload = {
            "id": event_id,
            "ts": round(it.frame.ts, 6),
            "camera": self.cam.name,
            "frame_index": it.frame.index,
            "score": round(score, 5),
            "threshold": self.threshold,
            "boxes": [b.as_dict() for b in boxes],
            "crops": [t for t, _ in blobs if "/crop/" in t],
            "overlay": f"{base}/{event_id}/overlay" if loc.overlay else None,
            "frame_size": {"w": int(it.frame.image.shape[1]), "h": int(it.frame.image.shape[0])},
            "item": it.frame.name or None,
            "model": {"name": self.engine.bundle.name, "hash": self.engine.bundle.model_hash},
            "schema": SCHEMA_VERSION,
        }
        seq = self.store.add(event_id, self.cam.name, base, payload, blobs, created=it.frame.ts)
        self.alarms += 1
        if self.publisher is not None:
            self.publisher.track(seq, it.frame.mono)
            self.publisher.wake.set()
        log.info("camera %s: ALARM %s frame %d%s score %.3f, %d box(es)", self.cam.name, event_id,
                 it.frame.index, f" ({it.frame.name})" if it.frame.name else "", payload["score"], len(boxes))

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "online": self.online,
            "fps_in": self.captured.rate(now),
            "fps_processed": self.processed.rate(now),
            "frames_in": self.captured.count,
            "frames_processed": self.processed.count,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "bad_frames": self.bad_frames,
            "alarms": self.alarms,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "source_errors": self.source_errors,
            "queue_depth": self.q.qsize(),
            # Throughput while working: first frame captured to last frame decided.
            "busy_s": round(self.last_done - self.first_capture, 4) if self.last_done and self.first_capture else None,
            "latency": {"queue": self.lat_queue.summary(), "inference_batch": self.lat_infer.summary(),
                        "postprocess": self.lat_post.summary(), "capture_to_decision": self.lat_frame.summary()},
            "backend": self.engine.backend,
            "workers": self.workers,
            "model": self.engine.bundle.name,
        }
