"""Item triggers from a GPIO line (``items.trigger = "gpio"``): a photo-eye or a PLC output wired to
an input pin, one item per edge.

Through the kernel's GPIO character device with libgpiod's Python bindings, version 2 (PyPI
``gpiod`` >= 2.0.2: ``pip install 'ganomaly-edge[gpio]'``), imported only when a camera uses it.
The line is requested as an input with edge detection, so the kernel timestamps each edge
(CLOCK_MONOTONIC, the clock of ``time.monotonic``): an item's latency runs from the edge itself,
not from when the agent read it. The kernel numbers a line's edges from 1; a gap means its event
buffer overflowed and edges were dropped: each is a part that passed, counted as a missed trigger
and given its result (``ok = false``, with the reason). A chip that vanishes (a USB GPIO adapter
unplugged) is reopened with the source's paced retry, counted in ``trigger_reconnects`` and logged.

At start a missing extra, an unknown chip or line, or a line another program holds stops the
agent with what to do: that is the configuration, not a fault to retry.
"""

from __future__ import annotations

import errno
import glob
import logging
import re
import threading
from datetime import timedelta

from .capture import Backoff
from .config import CameraConfig, GpioConfig
from .errors import AgentError
from .items import Triggers
from .ratelimit import Throttled
from .stats import CameraStats

log = logging.getLogger(__name__)

DEV = "/dev"  # where chips named by number, name or label are looked for
MISSING = ("items.trigger = 'gpio' needs libgpiod's Python bindings, version 2: pip install 'ganomaly-edge[gpio]' "
           "(gpiod >= 2.0.2; its wheels carry libgpiod itself)")
WAIT_S = 0.2  # how long one wait for edges lasts: how soon a stop is noticed


class GpioError(AgentError, ValueError):
    """A GPIO line that cannot be used as a trigger; the message says why and what to do."""


def gpiod_module():
    """libgpiod's v2 bindings; ImportError with what to install when they are missing or are v1."""
    try:
        import gpiod
    except ImportError as e:
        raise ImportError(f"{MISSING} ({e})") from None
    if not hasattr(gpiod, "request_lines"):  # v1: a C module (Debian's) or a pure-Python package
        raise ImportError(f"{MISSING}: the gpiod found ({getattr(gpiod, '__file__', '?')}, version "
                          f"{getattr(gpiod, '__version__', '?')}) is the older v1 API (Debian's python3-libgpiod or "
                          "gpiod <= 1.5.4)")
    return gpiod


def _natural(path: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def chip_path(gpiod, chip: str) -> str:
    """The device path of ``chip``: a path, a number (0), a name (gpiochip0) or a label."""
    if chip.startswith("/"):
        return chip
    if chip.isdigit():
        return f"{DEV}/gpiochip{chip}"
    if re.fullmatch(r"gpiochip\d+", chip):
        return f"{DEV}/{chip}"
    found = []
    for path in sorted(glob.glob(f"{DEV}/gpiochip*"), key=_natural):
        if not gpiod.is_gpiochip_device(path):
            continue
        try:
            with gpiod.Chip(path) as c:
                info = c.get_info()
        except OSError:  # one we may not open: it cannot be the one asked for
            continue
        if info.label == chip:
            return path
        found.append(f"{info.name} [{info.label}]")
    raise GpioError(f"no GPIO chip labelled {chip!r}: found {', '.join(found) or 'none'} in {DEV} (gpiodetect "
                    "lists name [label] of each)")


def line_settings(gpiod, cfg: GpioConfig):
    from gpiod.line import Bias, Direction, Edge

    edge = {"rising": Edge.RISING, "falling": Edge.FALLING, "both": Edge.BOTH}[cfg.edge]
    bias = {"as-is": Bias.AS_IS, "pull-up": Bias.PULL_UP, "pull-down": Bias.PULL_DOWN,
            "disabled": Bias.DISABLED}[cfg.bias]
    return gpiod.LineSettings(direction=Direction.INPUT, edge_detection=edge, bias=bias, active_low=cfg.active_low,
                              debounce_period=timedelta(milliseconds=cfg.debounce_ms))


def _open_chip(gpiod, path: str):
    try:
        return gpiod.Chip(path)
    except FileNotFoundError:
        raise GpioError(f"no GPIO chip at {path} (gpiodetect lists the chips; items.gpio.chip takes a path, a "
                        "name, a number or a label)") from None
    except PermissionError:
        raise GpioError(f"no permission to open {path}: the agent's user needs read and write access to it (the "
                        "group that owns it, e.g. gpio, or a udev rule: docs/plant.md)") from None
    except OSError as e:
        raise GpioError(f"{path} is not a GPIO chip ({e.strerror or e}): gpiodetect lists the chips") from None


def _offset(chip, line: int | str, path: str) -> int:
    try:
        return chip.line_offset_from_id(line)
    except FileNotFoundError:
        raise GpioError(f"{path} has no line named {line!r} (gpioinfo {path} lists its lines' names; or give "
                        "the offset, an integer)") from None
    except ValueError:
        raise GpioError(f"{path} has no line {line!r}: it has {chip.get_info().num_lines} lines, offsets 0 to "
                        f"{chip.get_info().num_lines - 1}") from None


def open_line(gpiod, cfg: GpioConfig, consumer: str):
    """(request, offset, path): the line requested as an input with edge detection; GpioError why not."""
    path = chip_path(gpiod, cfg.chip)
    chip = _open_chip(gpiod, path)
    try:
        offset = _offset(chip, cfg.line, path)
        name = f"line {cfg.line!r} of {path}" + (f" (offset {offset})" if isinstance(cfg.line, str) else "")
        info = chip.get_line_info(offset)
        if info.used:
            raise GpioError(f"{name} is in use by {info.consumer or 'another program'} (gpioinfo shows who holds "
                            "it): free it or wire the trigger to another line")
        try:
            req = chip.request_lines(config={offset: line_settings(gpiod, cfg)}, consumer=consumer,
                                     event_buffer_size=cfg.event_buffer_size)
        except OSError as e:
            if e.errno == errno.EBUSY:
                who = chip.get_line_info(offset).consumer
                raise GpioError(f"{name} is in use by {who or 'another program'}") from None
            raise GpioError(f"requesting {name} failed: {e}") from None
        except (ValueError, NotImplementedError) as e:  # EINVAL / EOPNOTSUPP: a setting this chip lacks
            raise GpioError(f"{name}: the chip refuses these settings (edge {cfg.edge}, bias {cfg.bias}, "
                            f"debounce {cfg.debounce_ms:g} ms): {e}") from None
        return req, offset, path
    finally:
        chip.close()  # the request keeps its own file descriptor


def check(cam: CameraConfig) -> str | None:
    """Why the camera's trigger line cannot be opened now, or None (the line is opened and released)."""
    try:
        gpiod = gpiod_module()
        req, _, _ = open_line(gpiod, cam.items.gpio, f"ganomaly-check-{cam.name}")
    except (ImportError, GpioError) as e:
        return f"camera {cam.name}: {e}"
    req.release()
    return None


class GpioTrigger:
    """Reads one line's edges on a thread of its own; each edge is one trigger."""

    def __init__(self, cam: CameraConfig, triggers: Triggers, stats: CameraStats):
        self.cam, self.cfg, self.triggers, self.stats = cam, cam.items.gpio, triggers, stats
        try:
            self.gpiod = gpiod_module()
            self.req, self.offset, self.path = open_line(self.gpiod, self.cfg, self.consumer)
        except (ImportError, GpioError) as e:  # at start, once: the configuration, not a retry loop
            raise GpioError(f"camera {cam.name}: {e}") from None
        log.info("camera %s: item trigger: %s edges of line %s on %s", cam.name, self.cfg.edge, self.cfg.line,
                 self.path)
        self.next_seqno = 1  # the kernel numbers a request's edges from 1
        self.backoff = Backoff(cam.source.retry_min_s, cam.source.retry_max_s)
        self.throttled = Throttled(log)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"gpio-{cam.name}", daemon=True)

    @property
    def consumer(self) -> str:
        return f"ganomaly-{self.cam.name}"[:31]  # the kernel keeps 31 characters

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.req is None:
                self._reopen()
                continue
            try:
                if self.req.wait_edge_events(WAIT_S):
                    self._take(self.req.read_edge_events())
            except Exception as e:  # ENODEV (the chip went away) or any other: release and reopen
                self._lost(e)
        self._release()

    def _take(self, events) -> None:
        for ev in events:
            if ev.line_offset != self.offset:
                continue
            gap = ev.line_seqno - self.next_seqno
            if gap > 0:
                log.error("camera %s: %d edge(s) on %s lost: the kernel's event buffer overflowed before they were "
                          "read; their results say so (raise items.gpio.event_buffer_size)", self.cam.name, gap,
                          self.path)
                self.triggers.lost(gap, f"the GPIO edge was lost: the kernel's event buffer overflowed ({gap} "
                                        "edge(s)) before the agent read it")
            self.next_seqno = ev.line_seqno + 1
            self.triggers.trigger("", at=ev.timestamp_ns / 1e9)

    def _lost(self, e: BaseException) -> None:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        log.warning("camera %s: the GPIO trigger line on %s failed (%s): reopening it", self.cam.name, self.path, why)
        self._release()

    def _reopen(self) -> None:
        if self.stop.wait(self.backoff.next()):
            return
        try:
            self.req, self.offset, self.path = open_line(self.gpiod, self.cfg, self.consumer)
        except GpioError as e:
            self.throttled.log(logging.ERROR, "reopen", "camera %s: reopening the GPIO trigger line failed: %s; "
                               "retrying", self.cam.name, e)
            return
        self.next_seqno = 1
        self.backoff.reset()
        self.stats.add("trigger_reconnects")
        log.info("camera %s: GPIO trigger line on %s reopened (reconnect %d)", self.cam.name, self.path,
                 self.stats["trigger_reconnects"])

    def _release(self) -> None:
        if self.req is not None:
            try:
                self.req.release()
            except Exception:  # a chip already gone: its request is freed with the file descriptor
                pass
            self.req = None

    def health(self) -> str | None:
        if not self.stop.is_set() and self.thread.ident is not None and not self.thread.is_alive():
            return "the GPIO trigger thread has died"
        return None

    def close(self, timeout: float = 2.0) -> None:
        """No more triggers: the reader stops and the line is released (by the reader, its only user)."""
        self.stop.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)
        else:
            self._release()
