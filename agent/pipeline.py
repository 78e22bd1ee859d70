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
from ganomaly_edge.engine.tiling import Tiling, TilingError
from ganomaly_edge.engine.window import Window

from .alarms import Alarms
from .capture import Capture
from .config import CameraConfig, ConfigError
from .errors import AgentError
from .decision import Debouncer
from .inference import Inference
from .items import Triggers
from .samples import Samples
from .sources import FolderRecord
from .stats import CameraStats
from .topics import Topics

log = logging.getLogger(__name__)


def camera_tiling(cam: CameraConfig, engine: Engine) -> Tiling:
    """The camera's working resolution and tiles: the bundle's, or ``working_size`` cut the same way."""
    t = engine.tiling
    if cam.working_size is None:
        return t
    w, h = cam.working_size
    if (h, w) == (t.height, t.width):
        return t
    if not t.tiled:
        raise ConfigError(f"camera {cam.name}: working_size {w}x{h} needs a tiled model; bundle "
                          f"{engine.bundle.name} takes {t.width}x{t.height} frames only (train with --tile)")
    if t.position_standardised:
        raise ConfigError(f"camera {cam.name}: working_size {w}x{h}: bundle {engine.bundle.name} standardises each of "
                          f"its {t.count} tile positions on held-out {t.width}x{t.height} frames, and its threshold "
                          f"is set on those scores; a {w}x{h} frame has other tile positions. Remove working_size, "
                          f"or retrain at {w}x{h} (ganomaly-train --image-size {w}x{h}; --position-stats off "
                          "keeps raw tile scores, which any working size can use)")
    try:
        out = t.resized(h, w)
    except TilingError as e:
        raise ConfigError(f"camera {cam.name}: working_size {w}x{h}: {e}") from None
    log.warning("camera %s: working resolution %dx%d (%d tiles) differs from the %dx%d the threshold was "
                "calibrated for (%d tiles): more tiles per frame mean more false alarms than the calibrated "
                "rate; retrain at this resolution to keep it", cam.name, w, h, out.count, t.width, t.height, t.count)
    return out


class SwapRefused(AgentError, ValueError):
    """A bundle this camera cannot switch to; the message says why and what to do."""


def camera_window(cam: CameraConfig, engine: Engine) -> Window | None:
    """How 16-bit frames become the model's 8 bits: the camera's window, else the bundle's (the one
    it was trained with), else None (the top 8 bits)."""
    if cam.window:
        w = Window.parse(cam.window)
        trained = engine.bundle.window
        if trained is not None and trained != w:
            log.warning("camera %s: window %s differs from the %s bundle %s was trained with: scores on 16-bit "
                        "images are then not calibrated", cam.name, w.text(), trained.text(), engine.bundle.name)
        return w
    return engine.bundle.window


class CameraPipeline:
    def __init__(self, cam: CameraConfig, engine: Engine, store, publisher, topics: Topics, queue_size: int,
                 max_batch: int, on_status: Callable[[str, str], None] | None = None, workers: int = 1,
                 device_id: str = "", reload_engine: Callable[[Engine], Engine] | None = None,
                 max_failures: int = 5, history=None, history_cfg=None, samples_folder: str | None = None):
        self.cam, self.engine = cam, engine
        if cam.source.kind == "genicam":
            from .genicam import aravis

            try:
                aravis()
            except ImportError as e:  # at start, once, with what to install; not a retry loop
                raise ValueError(f"camera {cam.name}: {e}") from None
        self.tiling = camera_tiling(cam, engine)
        self.max_batch_config = max_batch
        max_batch = min(max_batch, engine.max_frames(self.tiling) or max_batch)
        # Several workers only where the engine takes concurrent calls (ONNX Runtime on the CPU).
        workers = max(1, workers) if engine.concurrent else 1
        log.info("camera %s: %s, %d inference worker(s)%s", cam.name, engine.backend, workers,
                 f" x {engine.threads} thread(s)" if hasattr(engine, "threads") else "")
        # Room for a full micro-batch per worker: with less, one worker takes everything waiting
        # and the others run small, inefficient batches.
        self.q: queue.Queue = queue.Queue(maxsize=queue_size or max_batch * workers)
        self.on_status = on_status or (lambda cam, state, reason="": None)
        self.online = False
        self.status_reason = ""
        self.finished = threading.Event()
        self.stats = CameraStats(time.monotonic())
        # Item mode scores each item alone: k-of-n debouncing and the cooldown are off, as for folders.
        d = cam.decision.resolved("folder" if cam.item_mode else cam.source.kind)
        if cam.results:
            d = d.model_copy(update={"k": 1, "n": 1, "cooldown_s": 0.0})
        self.threshold_config = d.threshold
        self.threshold = d.threshold if d.threshold is not None else engine.bundle.calibration.threshold
        channels = engine.spec.channels
        size = (self.tiling.height, self.tiling.width)
        # A scanner folder's processed files are recorded in the event store: a restart inspects
        # (and alarms on) nothing twice.
        self.record = FolderRecord(store, cam.name, cam.source.uri) if cam.source.kind == "folder" else None
        self.gpio = None
        self.triggers = self._triggers(cam, publisher, topics)
        self.capture = Capture(cam, size, channels, self.q, self.stats, self._set_online, self.record,
                               window=camera_window(cam, engine), triggers=self.triggers)
        self.alarms = Alarms(cam, engine, store, publisher, topics, self.threshold, self.stats, self.record, device_id,
                             history=history, history_cfg=history_cfg)
        # One in every sample_every frames kept as the line is now (samples.py): the normal range a
        # recalibration needs, which the alarm history (alarms only) cannot give.
        self.samples = (Samples(samples_folder, cam.name, history_cfg.sample_every, history_cfg.sample_keep, size,
                                cam.roi, cam.rotate)
                        if samples_folder else None)  # given only with sample_every (service.py)
        self.inference = Inference(cam.name, engine, self.tiling, self.q, self.stats,
                                   Debouncer(self.threshold, d.k, d.n, d.cooldown_s), max_batch, workers,
                                   on_alarm=self.alarms.put, on_end=self._end, on_normal=self._normal,
                                   on_engine_failure=self._engine_failed, max_failures=max_failures,
                                   on_item=self.alarms.put_item if cam.results else None,
                                   on_scored=self._sample if self.samples is not None else None)
        self.reload_engine = reload_engine

    def _triggers(self, cam: CameraConfig, publisher, topics: Topics) -> Triggers | None:
        if not cam.item_mode:
            return None
        if cam.source.kind == "folder":
            raise ValueError(f"camera {cam.name}: items.trigger = {cam.items.trigger!r} is for cameras; a folder's "
                             "files are items already (remove items.trigger)")
        t = Triggers(cam.name, cam.items, self.stats, on_missed=lambda trig, why: self.alarms.put_missed(trig, why),
                     fire=lambda: self.capture.software_trigger())
        if cam.items.trigger == "mqtt":
            if publisher is None:
                raise ValueError(f"camera {cam.name}: items.trigger = 'mqtt' needs the MQTT connection")
            publisher.subscribe(topics.trigger(cam.name), t.trigger)
        elif cam.items.trigger == "gpio":
            from .gpio import GpioTrigger

            self.gpio = GpioTrigger(cam, t, self.stats)  # the line opened now: a GpioError stops the agent
        return t

    def start(self) -> None:
        # Consumers before producers: a source that ends at once must find them running.
        self.alarms.thread.start()
        if self.triggers is not None:
            self.triggers.thread.start()
        for t in self.inference.threads:
            t.start()
        self.capture.thread.start()
        if self.gpio is not None:  # after capture: an edge's part needs its frame
            self.gpio.thread.start()

    def stop(self) -> None:
        """Stop capturing; frames already queued are still processed."""
        if self.gpio is not None:  # no new triggers, the line released
            self.gpio.close()
        if self.triggers is not None:  # before capture ends, so their results are stored before the end
            self.triggers.drain("the agent stopped before a frame came for this item")
        self.capture.stop.set()

    def join(self, timeout: float | None = None) -> None:
        self.capture.thread.join(timeout)
        for t in self.inference.threads:
            t.join(timeout)
        self.alarms.thread.join(timeout)

    def swap_check(self, engine: Engine) -> tuple[Tiling, float]:
        """The tiling and threshold ``engine`` would run with on this camera; SwapRefused when the
        frames this camera captures are not what it takes (another working resolution or channel
        count: capture resizes to the running model's, so such a model needs a restart)."""
        have, want = self.engine.spec, engine.spec
        if want.channels != have.channels:
            raise SwapRefused(f"camera {self.cam.name}: bundle {engine.bundle.name} takes {want.channels}-channel "
                              f"frames, this camera runs a {have.channels}-channel model: a bundle trained with "
                              f"--channels {have.channels} can be swapped in; another channel count needs a restart "
                              "with the new bundle in the config")
        try:
            tiling = camera_tiling(self.cam, engine)
        except ValueError as e:
            raise SwapRefused(str(e)) from None
        self._check_window(engine)
        t = self.tiling
        if (tiling.height, tiling.width) != (t.height, t.width):
            raise SwapRefused(f"camera {self.cam.name}: bundle {engine.bundle.name} works at {tiling.width}x"
                              f"{tiling.height}, this camera captures at {t.width}x{t.height}: fine-tune from the "
                              "deployed checkpoint (ganomaly-train --init-from), which keeps its working resolution; "
                              "another resolution needs a restart with the new bundle in the config")
        threshold = (self.threshold_config if self.threshold_config is not None
                     else engine.bundle.calibration.threshold)
        return tiling, threshold

    def _check_window(self, engine: Engine) -> None:
        """Capture turns 16-bit frames into 8 bits with the running bundle's window (unless the
        camera sets its own): a bundle trained with another window would score frames it never saw."""
        old, new = self.engine.bundle.window, engine.bundle.window
        if not self.cam.window and old != new:
            def say(w):
                return w.text() if w is not None else "none (the top 8 bits)"

            raise SwapRefused(f"camera {self.cam.name}: bundle {engine.bundle.name} was trained with the 16-bit window "
                              f"{say(new)}, the running bundle with {say(old)}: train with the same --window (a "
                              "fine-tune from the deployed checkpoint keeps it), or restart with the new bundle")

    def swap(self, engine: Engine) -> Engine:
        """Switch inference to ``engine`` between two batches (after swap_check); returns the old one."""
        tiling, threshold = self.swap_check(engine)
        self.inference.max_batch = min(self.max_batch_config, engine.max_frames(tiling) or self.max_batch_config)
        old = self.inference.swap(engine, tiling, threshold)
        self.engine, self.tiling, self.threshold = engine, tiling, threshold
        self.alarms.engine, self.alarms.threshold = engine, threshold
        return old

    def _set_online(self, online: bool, reason: str = "") -> None:
        if online != self.online or reason != self.status_reason:  # a new reason is news too
            self.online, self.status_reason = online, reason
            self.on_status(self.cam.name, "online" if online else "offline", reason)

    def _engine_failed(self, why: str) -> Engine | None:
        """Offline with the error, then a fresh engine; online again once it loads and passes its
        self-test. None (still offline, tried again after more failures) when it cannot be loaded."""
        self._set_online(False, f"{why}; reloading the engine")
        if self.reload_engine is None:
            return None
        try:
            engine = self.reload_engine(self.engine)
        except Exception as e:  # a bundle that no longer loads: stay offline, say why
            log.error("camera %s: reloading the engine failed: %s", self.cam.name, e)
            self._set_online(False, f"{why}; reloading the engine failed: {e}")
            return None
        self.engine = self.alarms.engine = engine
        log.warning("camera %s: engine reloaded after failures", self.cam.name)
        self._set_online(True)
        return engine

    def health(self, now: float) -> str | None:
        grace = 3 * self.cam.source.stall_timeout_s
        return (self.capture.health(now) or self.inference.health(now, grace)
                or (self.gpio.health() if self.gpio is not None else None))

    def _normal(self, item) -> None:
        if self.record is not None and item.frame.path:
            self.record.mark(item.frame.path, "normal", item.frame.stamp)

    def _sample(self, item, score: float, threshold: float) -> None:
        self.samples.offer(item.frame.image, item.frame.ts, item.frame.index, score > threshold)

    def _end(self) -> None:
        self.alarms.finish()
        if self.samples is not None:
            self.samples.close()
        self._set_online(False, "the source has finished")
        self.finished.set()

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"online": self.online, **self.stats.snapshot(now), "queue_depth": self.q.qsize(),
                "backend": self.engine.backend, "device": self.engine.device, "fallback": self.engine.fallback,
                "workers": len(self.inference.threads),
                "model": self.engine.bundle.name, "model_hash": self.engine.bundle.model_hash,
                **({"samples": self.samples.snapshot()} if self.samples is not None else {})}
