"""Alarms: from a fired decision to a stored event. Localisation (boxes in frame pixels), JPEG
crops and overlay, the typed event, the SQLite store, and a word to the publisher. Runs on its
own thread, so inference goes on scoring; its queue blocks when full, so no alarm is dropped."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

import cv2
import numpy as np

from ganomaly_edge.engine import Engine

from .alarm import AlarmEvent
from .capture import Item
from .config import CameraConfig, HistoryConfig
from .geometry import roi_view
from .localise import boxes_in_frame, crops, overlay
from .ratelimit import Throttled
from .stats import CameraStats
from .store import StoreFull
from .topics import Topics

log = logging.getLogger(__name__)

_END = object()


class Alarms:
    def __init__(self, cam: CameraConfig, engine: Engine, store, publisher, topics: Topics, threshold: float,
                 stats: CameraStats, record=None, device_id: str = "", history=None,
                 history_cfg: HistoryConfig | None = None):
        self.cam, self.engine, self.store, self.publisher, self.topics = cam, engine, store, publisher, topics
        self.threshold, self.stats, self.record, self.device_id = threshold, stats, record, device_id
        self.history, self.history_cfg = history, history_cfg or HistoryConfig()
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.throttled = Throttled(log)
        self.thread = threading.Thread(target=self._loop, name=f"alarms-{cam.name}", daemon=True)

    def put(self, job: tuple[Item, np.ndarray, float]) -> None:
        self.q.put(job)

    def finish(self) -> None:
        """No more alarms: store what is queued, then end the thread."""
        self.q.put(_END)
        self.thread.join()

    def _loop(self) -> None:
        while (job := self.q.get()) is not _END:
            try:
                self._alarm(*job)
            except StoreFull as e:  # counted by the store; said once per interval
                self.throttled.log(logging.ERROR, "full", "camera %s: %s", self.cam.name, e)
            except Exception:  # one bad alarm must not stop the camera
                log.exception("camera %s: could not store an alarm", self.cam.name)

    def event(self, it: Item, res: np.ndarray, score: float, raw: float = float("nan"), engine: Engine | None = None,
              threshold: float | None = None) -> tuple[AlarmEvent, list]:
        """The typed event and its JPEG messages (topic, bytes) for one fired frame, naming the
        model that scored it (after a swap, alarms still queued here came from the old one)."""
        engine = engine or self.engine
        threshold = self.threshold if threshold is None else threshold
        loc, name = self.cam.localisation, self.cam.name
        boxes = boxes_in_frame(res, it.view, loc)
        event_id = uuid.uuid4().hex
        blobs = [(self.topics.crop(name, event_id, k), data)
                 for k, data in enumerate(crops(it.frame.image, boxes, loc))]
        if loc.overlay:
            blobs.append((self.topics.overlay(name, event_id), overlay(it.frame.image, res, it.view, boxes, loc)))
        ev = AlarmEvent(
            id=event_id, ts=round(it.frame.ts, 6), device_id=self.device_id, camera=name, frame_index=it.frame.index,
            score=round(score, 5), raw_score=float(f"{raw:.6g}"), threshold=threshold, boxes=[b.as_dict() for b in boxes],
            crops=[t for t, _ in blobs if "/crop/" in t],
            overlay=self.topics.overlay(name, event_id) if loc.overlay else None,
            frame_size={"w": int(it.frame.image.shape[1]), "h": int(it.frame.image.shape[0])},
            item=it.frame.name or None,
            model={"name": engine.bundle.name, "hash": engine.bundle.model_hash})
        return ev, blobs

    def frame_file(self, it: Item) -> tuple[bytes, str] | None:
        """The full frame as the model saw it (ROI, rotation; no resize), encoded for history."""
        h = self.history_cfg
        view = roi_view(it.frame.image, self.cam.roi, self.cam.rotate)
        params = ([cv2.IMWRITE_JPEG_QUALITY, h.frame_quality] if h.frame_format == "jpg"
                  else [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast: this thread also stores the next alarm
        ok, data = cv2.imencode("." + h.frame_format, view, params)
        return (data.tobytes(), h.frame_format) if ok else None

    def _alarm(self, it: Item, res: np.ndarray, score: float, raw: float, engine: Engine | None = None,
               threshold: float | None = None) -> Any:
        ev, blobs = self.event(it, res, score, raw, engine, threshold)
        done = ((self.record.source, it.frame.path, it.frame.stamp) if self.record is not None and it.frame.path
                else None)
        seq = self.store.add(ev.id, self.cam.name, self.topics.alarm(self.cam.name), ev.payload(), blobs,
                             created=it.frame.ts, processed=done)
        self.stats.add("alarms")
        if self.publisher is not None:
            self.publisher.notify_stored(seq, it.frame.mono)
        if self.history is not None:  # after the outbox: delivery never waits on history
            self.history.add(ev.payload(), blobs, self.frame_file(it))
        log.info("camera %s: ALARM %s frame %d%s score %.3f, %d box(es)", self.cam.name, ev.id,
                 it.frame.index, f" ({it.frame.name})" if it.frame.name else "", ev.score, len(ev.boxes))
        return seq
