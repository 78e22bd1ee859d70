"""gpiod.line_request as in libgpiod 2.x: a released request raises RequestReleasedError."""

from __future__ import annotations

from ._internal import config_iter, poll_fd
from .exception import RequestReleasedError
from .line_settings import LineSettings, _line_settings_to_ext

__all__ = ["LineRequest"]


class LineRequest:
    def __init__(self, req):
        self._req = req
        self._chip_name: str
        self._offsets: list[int]
        self._name_map: dict[str, int]
        self._lines: list

    def __bool__(self) -> bool:
        return self._req is not None

    def __enter__(self) -> "LineRequest":
        self._check_released()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _check_released(self) -> None:
        if not self._req:
            raise RequestReleasedError()

    def release(self) -> None:
        if self._req is not None:
            self._req.release()
            self._req = None

    def _line_to_offset(self, line) -> int:
        if isinstance(line, int):
            return line
        if line not in self._name_map:
            raise ValueError(f"unknown line name: {line}")
        return self._name_map[line]

    def get_value(self, line):
        return self.get_values([line])[0]

    def get_values(self, lines=None):
        self._check_released()
        offsets = [self._line_to_offset(line) for line in (lines or self._lines)]
        buf = [None] * len(offsets)
        self._req.get_values(offsets, buf)
        return buf

    def reconfigure_lines(self, config) -> None:
        from . import _ext

        self._check_released()
        cfg = _ext.LineConfig()
        wanted = {self._line_to_offset(line): s for line, s in config_iter(config)}
        for offset in self.offsets:
            cfg.add_line_settings([offset], _line_settings_to_ext(wanted.get(offset) or LineSettings()))
        self._req.reconfigure_lines(cfg)

    def wait_edge_events(self, timeout=None) -> bool:
        self._check_released()
        return poll_fd(self.fd, timeout)

    def read_edge_events(self, max_events: int | None = None):
        self._check_released()
        return self._req.read_edge_events(max_events)

    def fileno(self) -> int:
        return self.fd

    @property
    def chip_name(self) -> str:
        self._check_released()
        return self._chip_name

    @property
    def num_lines(self) -> int:
        self._check_released()
        return len(self._offsets)

    @property
    def offsets(self) -> list[int]:
        self._check_released()
        return self._offsets

    @property
    def lines(self) -> list:
        self._check_released()
        return self._lines

    @property
    def fd(self) -> int:
        self._check_released()
        return self._req.fd
