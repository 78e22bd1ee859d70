"""The fake of ``gpiod._ext`` (libgpiod's C extension) and, under it, of the kernel's GPIO
character device (uAPI v2), for the tests: no GPIO chip exists on a CI machine.

The "kernel": ``$GPIOD_FAKE_STATE`` names a JSON file describing the chips::

    {"chips": {"/tmp/.../gpiochip0": {"name": "gpiochip0", "label": "fake-gpio",
                                      "lines": ["PQ.05", "", ...], "used": {"3": "other-daemon"}}}}

A chip exists while the regular file at its path exists (deleting it unplugs the chip). That file
is also the wire: each line appended to it is what happens on a pin, ``<offset> rising``,
``<offset> falling`` or ``<offset> pulse [count]`` (rising then falling, ``count`` times, all at
once). A request's kernel thread turns them into edge events as gpiolib-cdev does: only edges the
line's edge detection asks for, of the logical value (active-low inverts), timestamped with
CLOCK_MONOTONIC when seen, numbered per line and per request from 1, into a FIFO of
``event_buffer_size`` events (default 16 per line, at most 1024) that drops its oldest event when
full, the sequence numbers still counting. The request's fd is a real pipe that is readable while
events wait or once the chip is gone, so ``select`` works as on the real fd.

Failures are the real ones: errno as OSError subclasses the way the extension raises them
(ENOENT -> FileNotFoundError, EBUSY -> OSError, EINVAL -> ValueError, ENODEV after an unplug),
``TypeError`` for settings that are not integers (``PyArg_ParseTuple``'s "IIIIpkII"). Not
modelled: debouncing (the period is only recorded), output values, line-info watches, and
requests made by other processes (a line is busy when the state file says so or this process
holds it).
"""

from __future__ import annotations

import errno
import json
import os
import select
import stat
import threading
import time

# gpiod.h
VALUE_INACTIVE, VALUE_ACTIVE = 0, 1
DIRECTION_AS_IS, DIRECTION_INPUT, DIRECTION_OUTPUT = 1, 2, 3
EDGE_NONE, EDGE_RISING, EDGE_FALLING, EDGE_BOTH = 1, 2, 3, 4
BIAS_AS_IS, BIAS_UNKNOWN, BIAS_DISABLED, BIAS_PULL_UP, BIAS_PULL_DOWN = 1, 2, 3, 4, 5
DRIVE_PUSH_PULL, DRIVE_OPEN_DRAIN, DRIVE_OPEN_SOURCE = 1, 2, 3
CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_HTE = 1, 2, 3
EDGE_EVENT_TYPE_RISING, EDGE_EVENT_TYPE_FALLING = 1, 2

api_version = "2.2.1"
LINES_MAX = 64  # GPIO_V2_LINES_MAX
EVENTS_PER_LINE = 16  # the kernel's default FIFO, per requested line

_lock = threading.Lock()
_held: dict[tuple[str, int], "Request"] = {}  # (chip path, offset) -> the request of this process holding it


def _err(code: int, exc: type[OSError] = OSError) -> OSError:
    return exc(code, os.strerror(code))  # PyErr_SetFromErrno: "[Errno N] text", no file name


def _state() -> dict:
    path = os.environ.get("GPIOD_FAKE_STATE")
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("chips", {})


def _chip_desc(path: str) -> dict:
    """The chip at ``path`` as gpiod_chip_open sees it, or the errno it fails with."""
    desc = _state().get(os.path.abspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _err(errno.ENOENT, FileNotFoundError) from None
    if desc is None:  # a file that is not a GPIO chip
        raise _err(errno.ENODEV if stat.S_ISCHR(st.st_mode) else errno.ENOTTY)
    if not os.access(path, os.R_OK | os.W_OK):
        raise _err(errno.EACCES, PermissionError)
    return desc


def is_gpiochip_device(path: str) -> bool:
    try:
        _chip_desc(path)
        return True
    except OSError:
        return False


def _uint(v, what: str) -> int:
    """PyArg_ParseTuple's "I"/"k": an int, or TypeError as the C extension raises it."""
    if not isinstance(v, int):
        raise TypeError(f"'{type(v).__name__}' object cannot be interpreted as an integer")
    return v


class LineSettings:
    def __init__(self, *, direction, edge_detection, bias, drive, active_low, debounce_period, event_clock,
                 output_value):
        self.direction = _uint(direction, "direction")
        self.edge_detection = _uint(edge_detection, "edge_detection")
        self.bias = _uint(bias, "bias")
        self.drive = _uint(drive, "drive")
        self.active_low = bool(active_low)  # "p": any object's truth value
        self.debounce_period_us = _uint(debounce_period, "debounce_period")
        self.event_clock = _uint(event_clock, "event_clock")
        self.output_value = _uint(output_value, "output_value")
        ranges = ((self.direction, DIRECTION_AS_IS, DIRECTION_OUTPUT), (self.edge_detection, EDGE_NONE, EDGE_BOTH),
                  (self.bias, BIAS_AS_IS, BIAS_PULL_DOWN), (self.drive, DRIVE_PUSH_PULL, DRIVE_OPEN_SOURCE),
                  (self.event_clock, CLOCK_MONOTONIC, CLOCK_HTE), (self.output_value, VALUE_INACTIVE, VALUE_ACTIVE))
        if any(not lo <= v <= hi for v, lo, hi in ranges) or self.bias == BIAS_UNKNOWN:
            raise _err(errno.EINVAL, ValueError)  # gpiod_line_settings_set_*: EINVAL


class LineConfig:
    def __init__(self):
        self.settings: dict[int, LineSettings] = {}

    def add_line_settings(self, offsets, settings: LineSettings) -> None:
        if not isinstance(settings, LineSettings):
            raise TypeError("settings must be a gpiod._ext.LineSettings")
        for o in offsets:
            self.settings[_uint(o, "offset")] = settings

    def set_output_values(self, values) -> None:
        pass


class Chip:
    def __init__(self, path):
        if not isinstance(path, str):
            raise TypeError(f"argument 1 must be str, not {type(path).__name__}")
        self._desc = _chip_desc(path)
        self.path = path
        self._r, self._w = os.pipe()  # an fd of its own, as the chip's open file is
        self.fd = self._r

    def _alive(self) -> dict:
        if not os.path.exists(self.path):
            raise _err(errno.ENODEV)
        return self._desc

    def close(self) -> None:
        if self._r is not None:
            os.close(self._r)
            os.close(self._w)
            self._r = self._w = None

    def get_info(self):
        from .chip_info import ChipInfo

        d = self._alive()
        return ChipInfo(d["name"], d.get("label", ""), len(d["lines"]))

    def get_line_name(self, offset: int) -> str | None:
        return self._alive()["lines"][offset] or None

    def line_offset_from_id(self, name):
        if not isinstance(name, str):
            raise TypeError(f"argument 1 must be str, not {type(name).__name__}")
        lines = self._alive()["lines"]
        if name in lines:
            return lines.index(name)
        raise _err(errno.ENOENT, FileNotFoundError)

    def get_line_info(self, offset: int, watch: bool):
        from .line_info import LineInfo

        d = self._alive()
        if not 0 <= offset < len(d["lines"]):
            raise _err(errno.EINVAL, ValueError)
        with _lock:
            req = _held.get((os.path.abspath(self.path), offset))
        other = d.get("used", {}).get(str(offset))
        if req is not None:
            s = req.settings[offset]
            return LineInfo(offset, d["lines"][offset], True, req.consumer, s.direction, s.active_low, s.bias, s.drive,
                            s.edge_detection, s.event_clock, s.debounce_period_us > 0, s.debounce_period_us)
        return LineInfo(offset, d["lines"][offset], other is not None, other or "", DIRECTION_INPUT, False,
                        BIAS_UNKNOWN, DRIVE_PUSH_PULL, EDGE_NONE, CLOCK_MONOTONIC, False, 0)

    def request_lines(self, line_cfg: LineConfig, consumer, event_buffer_size):
        d = self._alive()
        key = os.path.abspath(self.path)
        if not line_cfg.settings or len(line_cfg.settings) > LINES_MAX:
            raise _err(errno.EINVAL, ValueError)
        for offset, s in line_cfg.settings.items():
            if not 0 <= offset < len(d["lines"]):
                raise _err(errno.EINVAL, ValueError)
            # gpio_v2_line_flags_validate: edges need an input, a bias needs a direction
            if s.edge_detection != EDGE_NONE and s.direction != DIRECTION_INPUT:
                raise _err(errno.EINVAL, ValueError)
            if s.bias not in (BIAS_AS_IS,) and s.direction == DIRECTION_AS_IS:
                raise _err(errno.EINVAL, ValueError)
        with _lock:
            if any((key, o) in _held or str(o) in d.get("used", {}) for o in line_cfg.settings):
                raise _err(errno.EBUSY)
            size = _uint(event_buffer_size, "event_buffer_size") if event_buffer_size is not None else 0
            req = Request(self.path, d["name"], dict(line_cfg.settings), consumer or "?",
                          min(size or EVENTS_PER_LINE * len(line_cfg.settings), EVENTS_PER_LINE * LINES_MAX))
            for o in line_cfg.settings:
                _held[(key, o)] = req
        req._start()
        return req

    def read_info_event(self):
        raise NotImplementedError("line-info watches are not modelled by the fake")


class Request:
    """One line request: its kernel thread reads the chip's wire and fills the event FIFO."""

    POLL_S = 0.005

    def __init__(self, path, chip_name, settings, consumer, fifo_size):
        self.path, self.chip_name, self.settings, self.consumer = path, chip_name, settings, consumer
        self.offsets = list(settings)
        self.fifo_size = fifo_size
        self.fifo: list[tuple] = []
        self.cond = threading.Condition()
        self.gone = False
        self.released = False
        self.global_seqno = 0
        self.line_seqno = {o: 0 for o in self.offsets}
        self._r, self._w = os.pipe()
        self.fd = self._r
        with open(path, "rb") as f:
            wire = f.read()
        self.pos = wire.rfind(b"\n") + 1  # edges from now on; the levels the wire has reached so far
        self.level = {o: 0 for o in self.offsets}
        for line in wire[: self.pos].decode().splitlines():
            self._edges(line)
        self.ino = os.stat(path).st_ino
        self.thread = threading.Thread(target=self._kernel, name="fake-gpiolib", daemon=True)

    def _start(self):
        self.thread.start()

    def _edges(self, line: str) -> list[tuple[int, int]]:
        """(offset, physical level after) per edge a wire line makes on a requested line."""
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) not in self.level:
            return []
        o, what = int(parts[0]), parts[1]
        n = int(parts[2]) if len(parts) > 2 else 1
        levels = {"rising": [1], "falling": [0], "pulse": [1, 0] * n}.get(what, [])
        out = []
        for v in levels:
            if v != self.level[o]:
                self.level[o] = v
                out.append((o, v))
        return out

    def _wanted(self, offset: int, physical: int) -> int | None:
        s = self.settings[offset]
        rising = bool(physical) != s.active_low  # the logical value went to active
        if s.edge_detection == EDGE_BOTH or s.edge_detection == (EDGE_RISING if rising else EDGE_FALLING):
            return EDGE_EVENT_TYPE_RISING if rising else EDGE_EVENT_TYPE_FALLING
        return None

    def _kernel(self) -> None:
        while not self.released:
            try:
                st = os.stat(self.path)
                if st.st_ino != self.ino:
                    raise FileNotFoundError
                with open(self.path, "rb") as f:
                    f.seek(self.pos)
                    data = f.read()
            except FileNotFoundError:  # unplugged: readers wake up to ENODEV
                with self.cond:
                    self.gone = True
                    self.cond.notify_all()
                    self._wake()
                return
            end = data.rfind(b"\n") + 1
            if end:
                self.pos += end
                for line in data[:end].decode().splitlines():
                    self._interrupts(self._edges(line))
            time.sleep(self.POLL_S)

    def _interrupts(self, edges) -> None:
        if not edges:
            return
        with self.cond:
            for offset, physical in edges:
                kind = self._wanted(offset, physical)
                if kind is None:
                    continue
                self.global_seqno += 1
                self.line_seqno[offset] += 1
                if len(self.fifo) >= self.fifo_size:  # linereq_put_event: kfifo full, the oldest dropped
                    self.fifo.pop(0)
                self.fifo.append((kind, time.monotonic_ns(), offset, self.global_seqno, self.line_seqno[offset]))
            self.cond.notify_all()
            self._wake()  # under the lock: a reader that emptied the FIFO also empties the pipe

    def _wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def read_edge_events(self, max_events):
        from .edge_event import EdgeEvent

        n = 64 if max_events is None else _uint(max_events, "max_events")
        with self.cond:
            while not self.fifo and not self.gone and not self.released:
                self.cond.wait(0.1)  # read(2) blocks until an event comes
            if self.gone:
                raise _err(errno.ENODEV)
            out, self.fifo = self.fifo[:n], self.fifo[n:]
            if not self.fifo:
                while select.select([self._r], [], [], 0)[0]:
                    os.read(self._r, 4096)
        return [EdgeEvent(*e) for e in out]

    def get_values(self, offsets, buf) -> None:
        from .line import Value

        if self.gone:
            raise _err(errno.ENODEV)
        for i, o in enumerate(offsets):
            if o not in self.level:
                raise _err(errno.EINVAL, ValueError)
            buf[i] = Value(int(bool(self.level[o]) != self.settings[o].active_low))

    def reconfigure_lines(self, line_cfg) -> None:
        if self.gone:
            raise _err(errno.ENODEV)
        self.settings.update({o: s for o, s in line_cfg.settings.items() if o in self.settings})

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        with _lock:
            for o in self.offsets:
                _held.pop((os.path.abspath(self.path), o), None)
        self.thread.join(1.0)
        os.close(self._r)
        os.close(self._w)
