"""Alarms: from a fired decision to a stored event. Localisation (boxes in frame pixels), JPEG
crops and overlay, the typed event, the SQLite store, and a word to the publisher. Runs on its
own thread, so inference goes on scoring; its queue blocks when full, so no alarm is dropped."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ganomaly_edge.engine import Engine

from .alarm import AlarmEvent, ModelRef
from .result import ItemResult
from .capture import Item
from .config import CameraConfig, HistoryConfig
from .geometry import roi_view
from .inference import Scored
from .localise import boxes_in_frame, crops, overlay
from .ratelimit import Throttled
from .stats import CameraStats
from .store import StoreFull
from .topics import Topics

log = logging.getLogger(__name__)

_END = object()


@dataclass
class _ItemJob:
    scored: Scored
    fired: bool
    decided: float  # monotonic time of the decision


@dataclass
class _Missed:
    trigger: Any  # items.Trigger
    why: str
    decided: float


class Alarms:
    def __init__(self, cam: CameraConfig, engine: Engine, store, publisher, topics: Topics, threshold: float,
                 stats: CameraStats, record=None, device_id: str = "", history=None,
                 history_cfg: HistoryConfig | None = None):
        self.cam, self.engine, self.store, self.publisher, self.topics = cam, engine, store, publisher, topics
        self.threshold, self.stats, self.record, self.device_id = threshold, stats, record, device_id
        self.items_seen = 0  # per-item results so far: the result's seq
        self.history, self.history_cfg = history, history_cfg or HistoryConfig()
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.throttled = Throttled(log)
        self.thread = threading.Thread(target=self._loop, name=f"alarms-{cam.name}", daemon=True)

    def put(self, job: Scored) -> None:
        self.q.put(job)

    def put_item(self, scored: Scored, fired: bool) -> None:
        """One item decided (OK or NG): its alarm if it fired, then its result, stored in this order."""
        self.q.put(_ItemJob(scored, fired, time.monotonic()))

    def put_missed(self, trigger, why: str) -> None:
        """A trigger that got no frame: its result says ok = false, with the reason."""
        self.q.put(_Missed(trigger, why, time.monotonic()))

    def finish(self) -> None:
        """No more alarms: store what is queued, then end the thread."""
        self.q.put(_END)
        self.thread.join()

    def _loop(self) -> None:
        while (job := self.q.get()) is not _END:
            try:
                if isinstance(job, _ItemJob):
                    self._item(job)
                elif isinstance(job, _Missed):
                    self._missed(job)
                else:
                    self._alarm(job.item, job.residual, job.score, job.raw, job.engine, job.threshold)
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
            item=it.frame.item or it.frame.name or None,
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
        return self._store_alarm(it, ev, blobs)

    def _store_alarm(self, it: Item, ev: AlarmEvent, blobs: list) -> Any:
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

    # -- per-item results (folders and item mode) ---------------------------------------------------
    def _result(self, item: str, ts: float, ok: bool, score: float | None, latency_s: float, alarm: str | None = None,
                error: str | None = None, scored: Scored | None = None) -> ItemResult:
        engine = scored.engine if scored is not None and scored.engine is not None else self.engine
        threshold = scored.threshold if scored is not None and scored.threshold is not None else self.threshold
        r = ItemResult(id=uuid.uuid4().hex, ts=round(ts, 6), device_id=self.device_id, camera=self.cam.name,
                       item=item, seq=self.items_seen, ok=ok, score=None if score is None else round(score, 5),
                       threshold=threshold, latency_ms=round(max(latency_s, 0.0) * 1000.0, 3), alarm=alarm,
                       error=error, model=ModelRef(name=engine.bundle.name, hash=engine.bundle.model_hash))
        self.items_seen += 1
        return r

    def _store_result(self, r: ItemResult, mono: float, processed=None) -> None:
        seq = self.store.add(r.id, self.cam.name, self.topics.result(self.cam.name), r.payload(), [],
                             created=r.ts, processed=processed)
        self.stats.add("results")
        if self.publisher is not None:
            self.publisher.notify_stored(seq, mono)

    def _item(self, job: _ItemJob) -> None:
        sc = job.scored
        it = sc.item
        alarm_id = None
        if job.fired:
            try:
                ev, blobs = self.event(it, sc.residual, sc.score, sc.raw, sc.engine, sc.threshold)
                self._store_alarm(it, ev, blobs)
                alarm_id = ev.id
            except Exception:  # the alarm (crops) is lost, said; the item's verdict still goes out
                log.exception("camera %s: could not store the alarm of item %s; its result says NG without it",
                              self.cam.name, it.frame.item or it.frame.name)
        start = it.frame.t0 or it.frame.mono
        latency = job.decided - start
        self.stats.latency["trigger_to_result"].add(latency)
        r = self._result(it.frame.item or it.frame.name or str(it.frame.index), it.frame.ts, not job.fired,
                         sc.score, latency, alarm=alarm_id, scored=sc)
        done = ((self.record.source, it.frame.path, it.frame.stamp) if self.record is not None and it.frame.path
                else None)
        self._store_result(r, start, done)
        log.info("camera %s: item %s %s score %.3f (%.1f ms)", self.cam.name, r.item, "OK" if r.ok else "NG",
                 sc.score, r.latency_ms)

    def _missed(self, job: _Missed) -> None:
        t = job.trigger
        r = self._result(t.item, t.ts, False, None, job.decided - t.mono, error=job.why)
        self._store_result(r, t.mono)
