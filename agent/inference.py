"""Inference: micro-batches off the queue, one or more workers, decisions in frame order.

A worker takes what is waiting (up to ``max_batch``) as one batch. With several workers (ONNX
Runtime on a multi-core CPU) the batches run side by side, and the decisions (debounce,
cooldown) are then made strictly in capture order. A fired decision goes to the alarm stage.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ganomaly_edge.engine import Engine
from ganomaly_edge.engine.tiling import Tiling

from .capture import END, Item
from .decision import Debouncer
from .stats import CameraStats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Scored:
    """A frame scored: what the decision keeps in its window and an alarm is made from."""

    item: Item
    residual: np.ndarray  # the frame's residual map (Engine.score_frames)
    score: float  # calibrated: 1.0 is the threshold
    raw: float
    engine: Engine | None = None  # the bundle that scored it (a hot swap may have replaced it since)
    threshold: float | None = None  # the decision's threshold when it was scored


class Inference:
    def __init__(self, name: str, engine: Engine, tiling: Tiling, q: queue.Queue, stats: CameraStats, debounce: Debouncer,
                 max_batch: int, workers: int, on_alarm: Callable[[Scored], None], on_end: Callable[[], None],
                 on_normal: Callable[[Item], None] | None = None,
                 on_engine_failure: Callable[[str], Engine | None] | None = None, max_failures: int = 5,
                 on_item: Callable[[Scored, bool], None] | None = None,
                 on_scored: Callable[[Item, float, float], None] | None = None):
        self.name, self.engine, self.q, self.stats, self.debounce = name, engine, q, stats, debounce
        self.tiling = tiling
        self.threshold: float | None = None  # None: the debouncer's own; set by a model swap
        self.model_lock = threading.Lock()  # the model a batch is scored with: read once per batch
        self.max_batch, self.on_alarm, self.on_end = max_batch, on_alarm, on_end
        self.on_normal = on_normal or (lambda item: None)
        self.on_item = on_item  # per-item results: every decision, OK or NG, in order
        self.on_scored = on_scored  # every frame scored, in order: (item, score, threshold)
        self.on_engine_failure = on_engine_failure or (lambda why: None)
        self.max_failures, self.failures = max_failures, 0
        self.heartbeat = time.monotonic()
        self.reload_lock = threading.Lock()
        self.take_lock = threading.Lock()  # a batch is taken (and numbered) by one worker at a time
        self.order = threading.Condition()  # decisions in batch order
        self.next_batch = self.next_decision = 0
        self.ending = False
        self.workers_left = workers
        self.threads = [threading.Thread(target=self._loop, name=f"infer-{name}-{i}", daemon=True)
                        for i in range(workers)]

    def model(self) -> tuple[Engine, Tiling, float | None]:
        with self.model_lock:
            return self.engine, self.tiling, self.threshold

    def swap(self, engine: Engine, tiling: Tiling, threshold: float | None) -> Engine:
        """Score every batch taken from now on with ``engine``; batches already taken finish on
        the old one. Batches are numbered and given their model under one lock, in the order they
        are decided, so the model changes between two batches: no frame is lost or scored twice."""
        with self.model_lock:
            old = self.engine
            self.engine, self.tiling, self.threshold = engine, tiling, threshold
            return old

    def _take(self) -> tuple[int, list[Item], tuple] | None:
        """The next micro-batch (what is waiting, up to max_batch), its number and the model that
        scores it; None at the end."""
        with self.take_lock:
            if self.ending:
                return None
            first = self.q.get()
            if first is END:
                self.ending = True
                return None
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is END:
                    self.ending = True
                    break
                batch.append(nxt)
            n = self.next_batch
            self.next_batch += 1
            return n, batch, self.model()

    def health(self, now: float, grace: float) -> str | None:
        """Why inference is stuck (frames wait, nothing decided for ``grace`` s), or None."""
        stale = now - self.heartbeat
        if self.q.qsize() and stale > grace:
            return f"inference has decided nothing for {stale:.0f} s with {self.q.qsize()} frame(s) waiting"
        return None

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            self._process(*taken)
        with self.order:
            self.workers_left -= 1
            last = self.workers_left == 0
        if last:  # every batch is decided: no alarm can follow
            self.on_end()

    def _score(self, batch: list[Item], engine: Engine,
               tiling: Tiling) -> tuple[list[Item], np.ndarray, np.ndarray, np.ndarray]:
        """The frames scored by ``engine``, their calibrated scores, residual maps and raw scores
        (none on a failure)."""
        try:
            raw, residual = engine.score_frames(np.stack([it.x for it in batch]), tiling)
            self.failures = 0
            return batch, engine.calibrated(raw), residual, raw
        except Exception as e:  # e.g. a GPU error: the frames are counted, the camera goes on
            self.failures += 1
            log.error("camera %s: inference failed on %d frame(s) from frame %d (%d in a row): %s", self.name,
                      len(batch), batch[0].frame.index, self.failures, e, exc_info=self.failures == 1)
            self.stats.add("bad_frames", len(batch))
            if self.failures >= self.max_failures:
                self._reload(f"the engine failed {self.failures} times in a row: {e}")
            return [], np.zeros(0), np.zeros(0), np.zeros(0)

    def _reload(self, why: str) -> None:
        with self.reload_lock:  # one worker reloads; the others wait for the new engine
            if self.failures < self.max_failures:
                return
            engine = self.on_engine_failure(why)
            self.failures = 0
            if engine is not None:
                with self.model_lock:
                    self.engine = engine

    def _process(self, n: int, batch: list[Item], model: tuple) -> None:
        t0 = time.monotonic()
        lat = self.stats.latency
        for it in batch:
            lat["queue"].add(t0 - it.frame.mono)
        engine, tiling, threshold = model
        batch, scores, residual, raw = self._score(batch, engine, tiling)
        t1 = time.monotonic()
        lat["inference_batch"].add(t1 - t0)
        with self.order:  # debounce and cooldown see the frames in capture order
            while self.next_decision != n:
                self.order.wait()
            if threshold is not None:
                self.debounce.threshold = threshold
            for i, it in enumerate(batch):
                self.stats.processed.count += 1
                self.stats.recent_scores.append(float(scores[i]))
                if self.on_scored is not None:
                    self.on_scored(it, float(scores[i]), self.debounce.threshold)
                fired = self.debounce.update(float(scores[i]), it.frame.t_media,
                                             Scored(it, residual[i], float(scores[i]), float(raw[i]), engine,
                                                    self.debounce.threshold))
                if self.on_item is not None:  # item mode: n = 1, so a fired decision is this item's
                    self.on_item(Scored(it, residual[i], float(scores[i]), float(raw[i]), engine,
                                        self.debounce.threshold), fired is not None)
                    continue
                if fired is not None:
                    self.on_alarm(fired)
                if fired is None or fired.item is not it:
                    self.on_normal(it)
            self.next_decision += 1
            self.order.notify_all()
        t2 = time.monotonic()
        self.stats.last_done = self.heartbeat = t2
        lat["postprocess"].add(t2 - t1)
        for it in batch:
            lat["capture_to_decision"].add(t2 - it.frame.mono)
