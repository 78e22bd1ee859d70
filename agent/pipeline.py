"""One camera's pipeline: capture -> bounded queue -> inference -> alarms.

    capture.py    sources and their supervision (one backoff that resets), the drop policy
    inference.py  micro-batching, worker order, the k-of-n decision
    alarms.py     localisation, the typed event, the event store, a word to the publisher
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from ganomaly_edge.engine import Engine

from .alarms import Alarms
from .capture import Capture
from .config import CameraConfig
from .decision import Debouncer
from .inference import Inference
from .stats import CameraStats
from .topics import Topics

log = logging.getLogger(__name__)


class CameraPipeline:
    def __init__(self, cam: CameraConfig, engine: Engine, store, publisher, topics: Topics, queue_size: int,
                 max_batch: int, on_status: Callable[[str, str], None] | None = None, workers: int = 1):
        self.cam, self.engine = cam, engine
        max_batch = min(max_batch, engine.max_batch or max_batch)
        # Several workers only where the engine takes concurrent calls (ONNX Runtime on the CPU).
        workers = max(1, workers) if engine.concurrent else 1
        log.info("camera %s: %s, %d inference worker(s)%s", cam.name, engine.backend, workers,
                 f" x {engine.threads} thread(s)" if hasattr(engine, "threads") else "")
        # Room for a full micro-batch per worker: with less, one worker takes everything waiting
        # and the others run small, inefficient batches.
        self.q: queue.Queue = queue.Queue(maxsize=queue_size or max_batch * workers)
        self.on_status = on_status or (lambda cam, state: None)
        self.online = False
        self.finished = threading.Event()
        self.stats = CameraStats(time.monotonic())
        d = cam.decision.resolved(cam.source.kind)
        self.threshold = d.threshold if d.threshold is not None else engine.bundle.calibration.threshold
        size, _, channels = engine.spec.shape
        self.capture = Capture(cam, size, channels, self.q, self.stats, self._set_online)
        self.alarms = Alarms(cam, engine, store, publisher, topics, self.threshold, self.stats)
        self.inference = Inference(cam.name, engine, self.q, self.stats,
                                   Debouncer(self.threshold, d.k, d.n, d.cooldown_s), max_batch, workers,
                                   on_alarm=self.alarms.put, on_end=self._end)

    def start(self) -> None:
        # Consumers before producers: a source that ends at once must find them running.
        self.alarms.thread.start()
        for t in self.inference.threads:
            t.start()
        self.capture.thread.start()

    def stop(self) -> None:
        """Stop capturing; frames already queued are still processed."""
        self.capture.stop.set()

    def join(self, timeout: float | None = None) -> None:
        self.capture.thread.join(timeout)
        for t in self.inference.threads:
            t.join(timeout)
        self.alarms.thread.join(timeout)

    def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            self.on_status(self.cam.name, "online" if online else "offline")

    def _end(self) -> None:
        self.alarms.finish()
        self._set_online(False)
        self.finished.set()

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"online": self.online, **self.stats.snapshot(now), "queue_depth": self.q.qsize(),
                "backend": self.engine.backend, "workers": len(self.inference.threads),
                "model": self.engine.bundle.name}
