"""The agent: engines, event store, MQTT, one pipeline per camera, stats, clean shutdown."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ganomaly_edge.engine import Engine, load
from ganomaly_edge.engine.bundle import open_bundle

from . import systemd
from .config import Settings
from .mqtt import MqttPublisher, dumps
from .models import ModelSwitch
from .pipeline import CameraPipeline
from .stats import Latency
from .store import EventStore
from .discovery import discovery_messages
from .history import History
from .verdicts import Verdicts
from .ratelimit import Throttled
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


def _same_disk(a: str, b: str) -> bool:
    try:
        return os.stat(os.path.dirname(os.path.abspath(a))).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def items_split(settings: Settings, cores: int) -> bool:
    """Every camera is in item mode (one frame scored per trigger) on a bundle of at least two
    tiles per core: auto parallelism then favours an item's decision time over frames per second,
    with one worker whose calls split across the cores (ModelConfig.parallelism)."""
    if not all(cam.item_mode for cam in settings.cameras):
        return False
    bundles = {cam.bundle or settings.model.bundle for cam in settings.cameras}  # each read once
    return all(tiles_per_frame(path) >= 2 * cores for path in bundles)


def tiles_per_frame(path: str) -> int:
    """A bundle's tiles per frame, from its metadata (1 where it cannot be read here: loading it
    says why)."""
    try:
        return open_bundle(path, verify=False).tiling.count
    except Exception:  # noqa: BLE001 - load_bundle reports the bundle's problem
        return 1


class Agent:
    def __init__(self, settings: Settings, connect: bool = True):
        self.s = settings
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.stop_reason = "stopped"
        self.throttled = Throttled(log)
        self.engines: dict[str, Engine] = {}
        self.retired: dict[str, list[Engine]] = {}
        self.reload_lock = threading.Lock()
        self.engine_paths: dict[int, str] = {}  # id(engine) -> the bundle path it was loaded from
        m = settings.model
        cores = os.cpu_count() or 1
        workers, threads = m.parallelism(cores, items_split=items_split(settings, cores))
        self.threads = threads
        for cam in settings.cameras:
            path = cam.bundle or m.bundle
            if path not in self.engines:
                self.engines[path] = self.load_bundle(path)
        self.store = EventStore(settings.store.path, settings.store.max_events,
                                int(settings.store.max_mb * (1 << 20)), settings.store.max_age_s)
        depth = self.store.depth()[0]
        if depth:
            log.info("event store %s holds %d unsent event(s) from before; they will be published first",
                     settings.store.path, depth)
        self.lat_publish = Latency()
        self.topics = Topics(settings.prefix)
        self.publisher = MqttPublisher(settings.mqtt, self.topics, settings.client_id, self.store,
                                       on_ack=lambda seq, dt: self.lat_publish.add(dt),
                                       retained=discovery_messages(settings, self.topics)) if connect else None
        self.history = (History(settings.history_path, settings.history.max_days, settings.history.max_mb)
                        if settings.history.enabled else None)
        self.verdicts = Verdicts(self.history, self.publisher, self.topics) if self.history is not None else None
        if self.history is not None and _same_disk(settings.store.path, self.history.folder):
            self.store.free_elsewhere = self.history.free
        self.console = None
        self.pipelines = [
            CameraPipeline(cam, self.engines[cam.bundle or m.bundle], self.store, self.publisher,
                           self.topics, settings.queue_size, m.max_batch, self._camera_status,
                           workers=workers, device_id=settings.device_id,
                           reload_engine=self.reload_engine, max_failures=m.reload_after_failures,
                           history=self.history, history_cfg=settings.history,
                           samples_folder=(os.path.join(settings.history_path, "samples")
                                           if settings.history.sample_every else None))
            for cam in settings.cameras]
        self.models = ModelSwitch(self.pipelines, self.load_bundle,
                                  {cam.name: cam.bundle or m.bundle for cam in settings.cameras},
                                  on_result=self._model_result)
        if self.publisher is not None:
            self.publisher.on_model_set = lambda payload: threading.Thread(
                target=self.models.request, args=(payload, "mqtt"), name="model-swap", daemon=True).start()
        self.stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)

    def load_bundle(self, path: str) -> Engine:
        """A bundle loaded on the configured backend, self-tested against its reference outputs."""
        m = self.s.model
        log.info("loading model bundle %s", path)
        engine = load(path, m.backend, threads=self.threads, allow_mismatch=m.allow_mismatch, spinning=m.spinning,
                      trusted_keys=m.trusted_keys, providers=m.providers, openvino_precision=m.openvino_precision,
                      openvino_threads=m.threads or os.cpu_count() or 1)
        self.engine_paths[id(engine)] = path
        for w in engine.bundle.training_warnings:
            log.warning("model bundle %s: THIS MODEL IS NOT READY: %s", path, w)
        return engine

    def reload_engine(self, old: Engine) -> Engine:
        """A fresh engine for the bundle ``old`` was loaded from (once, for every camera sharing it)."""
        with self.reload_lock:
            path = self.engine_paths[id(old)]
            current = self.engines.get(path)
            if current is not None and current is not old and old in self.retired.get(path, []):
                return current  # another camera reloaded it already
            new = self.load_bundle(path)
            if current is None or current is old:
                self.engines[path] = new
            self.retired.setdefault(path, []).append(old)  # closed at shutdown: a worker may still hold it
            return new

    def set_model(self, bundle: str | None = None, camera: str | None = None, rollback: bool = False,
                  source: str = "api") -> dict[str, Any]:
        """Hot swap (agent/models.py): the entry point for the console, MQTT and SIGHUP."""
        return self.models.set(bundle, camera, rollback, source)

    def reload_config(self, config_path: str | None) -> None:
        """SIGHUP: read the configuration again and swap each camera to the bundle it now names."""
        from .config import ConfigError, load_settings

        def run() -> None:
            try:
                s = load_settings(config_path)
            except ConfigError as e:
                log.error("SIGHUP: the configuration does not load, every camera keeps its model: %s", e)
                self.models._record({"ok": False, "reason": f"configuration: {e}", "source": "SIGHUP"})
                return
            self.models.reload({cam.name: cam.bundle or s.model.bundle for cam in s.cameras})

        threading.Thread(target=run, name="model-reload", daemon=True).start()

    def _model_result(self, result: dict[str, Any]) -> None:
        if self.publisher:
            self.publisher.publish_now(self.topics.model_result(), dumps(result), qos=1)

    def health(self) -> str | None:
        """Why the watchdog must not be fed: a camera is neither making progress nor knowingly
        retrying. None when alarms can flow."""
        now = time.monotonic()
        for p in self.pipelines:
            why = p.health(now)
            if why:
                return f"camera {p.cam.name}: {why}"
        if self.publisher is not None and self.publisher.thread.ident is not None:
            return self.publisher.health()  # after start(): delivery must be able to resume
        return None

    def _camera_status(self, camera: str, state: str, reason: str = "") -> None:
        log.log(logging.WARNING if reason else logging.INFO, "camera %s: %s%s", camera, state,
                f" ({reason})" if reason else "")
        if self.publisher:
            self.publisher.set_retained(self.topics.status(camera), state)
            self.publisher.set_retained(self.topics.status_reason(camera), reason or state)

    def start(self) -> None:
        if self.s.http.listen:  # first: a port in use stops the agent before it inspects anything
            from .console import Console

            self.console = Console(self, self.history, self.s.http, self.s.http.resolved_token())
            self.console.start()
        if self.publisher:
            self.publisher.start()
        for p in self.pipelines:
            p.start()
        self.stats_thread.start()
        fallback = self.fallbacks()
        if fallback:  # a TensorRT that should have run and did not: say so wherever people look
            for path, why in fallback.items():
                log.warning("model %s: running on the CPU, not on TensorRT: %s", path, why)
        systemd.notify("READY=1\nSTATUS=running" + (" on the CPU (TensorRT fallback: "
                                                    f"{next(iter(fallback.values()))})" if fallback else ""))
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
                    self.stop_reason = "all sources finished"
                    break
        finally:
            self.shutdown(flush_timeout)

    def stop(self, reason: str = "stopped") -> None:
        self.stop_reason = reason
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
            self.publisher.stop(flush_timeout, reason=self.stop_reason)
        self.stats_thread.join(timeout=2)
        closed: set[int] = set()
        for e in (list(self.engines.values()) + [e for old in self.retired.values() for e in old]
                  + [p.engine for p in self.pipelines] + self.models.engines()):
            if id(e) not in closed:
                closed.add(id(e))
                e.close()
        if self.console is not None:
            self.console.stop()
        self.store.close()
        if self.history is not None:
            self.history.close()
        log.info("stopped")

    def fallbacks(self) -> dict[str, str]:
        """Bundle -> why its engine runs on ONNX Runtime though TensorRT was expected (``auto``)."""
        return {p: e.fallback for p, e in self.engines.items() if e.fallback}

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
            # A gauge: engines that fell back from TensorRT to ONNX Runtime (0 when all run as built).
            "tensorrt_fallbacks": len(self.fallbacks()),
            "models": self.models.state(),
        }
        if self.publisher:
            out["mqtt"] = self.publisher.stats()
        if self.history is not None:
            out["history"] = {**self.history.totals(), **self.history.counters(),
                              "precision": self.history.precision(),
                              "verdict_messages": dict(self.verdicts.counts)}
        return out

    def publish_stats(self) -> None:
        if self.publisher:
            self.publisher.publish_now(self.topics.stats(), dumps(self.stats()))

    def _stats_loop(self) -> None:
        interval = self.s.mqtt.stats_interval_s
        wd = systemd.watchdog_interval()
        next_stats = time.monotonic() + interval
        while not self.stop_event.wait(min(wd or 1.0, 1.0)):
            why = self.health()
            if wd and why is None:  # fed only while alarms can flow: systemd restarts a stuck agent
                systemd.notify("WATCHDOG=1")
            elif why:
                self.throttled.log(logging.ERROR, "watchdog", "unhealthy, watchdog not fed: %s", why)
                systemd.notify(f"STATUS=unhealthy: {why}")
            if time.monotonic() >= next_stats:
                next_stats += interval
                self.publish_stats()
                if os.environ.get("GANOMALY_LOG_STATS"):
                    log.info("stats: %s", dumps(self.stats()))
