"""The agent: engines, event store, MQTT, one pipeline per camera, stats, clean shutdown."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ganomaly_edge.engine import Engine, load

from . import systemd
from .config import Settings
from .mqtt import MqttPublisher, dumps
from .pipeline import CameraPipeline
from .stats import Latency
from .store import EventStore
from .topics import Topics

log = logging.getLogger(__name__)


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Agent:
    def __init__(self, settings: Settings, connect: bool = True):
        self.s = settings
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.engines: dict[str, Engine] = {}
        m = settings.model
        workers, threads = m.parallelism(os.cpu_count() or 1)
        for cam in settings.cameras:
            path = cam.bundle or m.bundle
            if path not in self.engines:
                log.info("loading model bundle %s", path)
                self.engines[path] = load(path, m.backend, threads=threads, allow_mismatch=m.allow_mismatch,
                                          spinning=m.spinning)
        self.store = EventStore(settings.store.path, settings.store.max_events,
                                int(settings.store.max_mb * (1 << 20)), settings.store.max_age_s)
        depth = self.store.depth()[0]
        if depth:
            log.info("event store %s holds %d unsent event(s) from before; they will be published first",
                     settings.store.path, depth)
        self.lat_publish = Latency()
        self.topics = Topics(settings.prefix)
        self.publisher = MqttPublisher(settings.mqtt, self.topics, settings.mqtt.client_id or
                                       f"ganomaly-{settings.device_id}", self.store,
                                       on_ack=lambda seq, dt: self.lat_publish.add(dt)) if connect else None
        self.pipelines = [
            CameraPipeline(cam, self.engines[cam.bundle or m.bundle], self.store, self.publisher,
                           self.topics, settings.queue_size, m.max_batch, self._camera_status,
                           workers=workers)
            for cam in settings.cameras]
        self.stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)

    def _camera_status(self, camera: str, state: str) -> None:
        log.info("camera %s: %s", camera, state)
        if self.publisher:
            self.publisher.set_retained(self.topics.status(camera), state)

    def start(self) -> None:
        if self.publisher:
            self.publisher.start()
        for p in self.pipelines:
            p.start()
        self.stats_thread.start()
        systemd.notify("READY=1\nSTATUS=running")
        log.info("agent %s running: %d camera(s), prefix %s", self.s.device_id, len(self.pipelines), self.s.prefix)

    def finished(self) -> bool:
        return all(p.finished.is_set() for p in self.pipelines)

    def run(self, flush_timeout: float = 10.0) -> None:
        """Until stop() is called or every (finite) source is done; then shut down cleanly."""
        self.start()
        try:
            while not self.stop_event.wait(0.2):
                if self.finished():
                    log.info("all sources finished")
                    break
        finally:
            self.shutdown(flush_timeout)

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self, flush_timeout: float = 10.0) -> None:
        systemd.notify("STOPPING=1")
        log.info("stopping: finishing queued frames and flushing events")
        for p in self.pipelines:
            p.stop()
        for p in self.pipelines:
            p.join(timeout=30)
        self.stop_event.set()
        if self.publisher:
            self.publish_stats()
            self.publisher.stop(flush_timeout)
        self.stats_thread.join(timeout=2)
        for e in self.engines.values():
            e.close()
        self.store.close()
        log.info("stopped")

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        n, size = self.store.depth()
        out = {
            "ts": time.time(),
            "uptime_s": round(now - self.started, 1),
            "device_id": self.s.device_id,
            "cameras": {p.cam.name: p.snapshot(now) for p in self.pipelines},
            "event_store": {"depth": n, "bytes": size, **self.store.counters()},
            "capture_to_publish": self.lat_publish.summary(),
            "peak_rss_mb": _rss_mb(),
            "engines": [e.describe() for e in self.engines.values()],
        }
        if self.publisher:
            out["mqtt"] = self.publisher.stats()
        return out

    def publish_stats(self) -> None:
        if self.publisher:
            self.publisher.publish_now(self.topics.stats(), dumps(self.stats()))

    def _stats_loop(self) -> None:
        interval = self.s.mqtt.stats_interval_s
        wd = systemd.watchdog_interval()
        next_stats = time.monotonic() + interval
        while not self.stop_event.wait(min(wd or 1.0, 1.0)):
            if wd:
                systemd.notify("WATCHDOG=1")
            if time.monotonic() >= next_stats:
                next_stats += interval
                self.publish_stats()
                if os.environ.get("GANOMALY_LOG_STATS"):
                    log.info("stats: %s", dumps(self.stats()))
