"""gpiod.chip as in libgpiod 2.x: the Python layer over the extension, behaving as the real one
(offsets and names resolved here, a closed chip raising ChipClosedError)."""

from __future__ import annotations

from errno import ENOENT

from . import _ext
from ._internal import config_iter, poll_fd
from .exception import ChipClosedError
from .line import Value
from .line_request import LineRequest
from .line_settings import LineSettings, _line_settings_to_ext

__all__ = ["Chip"]


class Chip:
    def __init__(self, path: str):
        self._chip = _ext.Chip(path)
        self._info = None

    def __bool__(self) -> bool:
        return self._chip is not None

    def __enter__(self) -> "Chip":
        self._check_closed()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_closed(self) -> None:
        if not self._chip:
            raise ChipClosedError()

    def close(self) -> None:
        if self._chip is not None:
            self._chip.close()
            self._chip = None

    def get_info(self):
        self._check_closed()
        if not self._info:
            self._info = self._chip.get_info()
        return self._info

    def line_offset_from_id(self, id: str | int) -> int:
        """A name is looked up first; a string that names no line but is a number is an offset."""
        self._check_closed()
        if not isinstance(id, int):
            try:
                return self._chip.line_offset_from_id(id)
            except OSError as ex:
                if ex.errno != ENOENT:
                    raise
                try:
                    offset = int(id)
                except ValueError:
                    raise ex from None
        else:
            offset = id
        if offset >= self.get_info().num_lines:
            raise ValueError("line offset of out range")
        return offset

    def get_line_info(self, line: int | str):
        self._check_closed()
        return self._chip.get_line_info(self.line_offset_from_id(line), False)

    def watch_line_info(self, line: int | str):
        self._check_closed()
        return self._chip.get_line_info(self.line_offset_from_id(line), True)

    def wait_info_event(self, timeout=None) -> bool:
        self._check_closed()
        return poll_fd(self.fd, timeout)

    def read_info_event(self):
        self._check_closed()
        return self._chip.read_info_event()

    def request_lines(self, config, consumer: str | None = None, event_buffer_size: int | None = None,
                      output_values: dict | None = None) -> LineRequest:
        self._check_closed()
        line_cfg = _ext.LineConfig()
        name_map, lines, seen = {}, [], set()
        for line, settings in config_iter(config):
            offset = self.line_offset_from_id(line)
            if offset in seen:
                raise ValueError(f"line must be configured exactly once - offset {offset} repeats")
            seen.add(offset)
            lines.append(line)
            if isinstance(line, str):
                name_map[line] = offset
            else:
                name = self._chip.get_line_name(offset)
                if name and name not in name_map:
                    name_map[name] = offset
            line_cfg.add_line_settings([offset], _line_settings_to_ext(settings or LineSettings()))
        if output_values:
            line_cfg.set_output_values([output_values.get(o, Value.INACTIVE) for o in seen])
        req = self._chip.request_lines(line_cfg, consumer, event_buffer_size)
        request = LineRequest(req)
        request._chip_name, request._offsets = req.chip_name, req.offsets
        request._name_map, request._lines = name_map, lines
        return request

    def fileno(self) -> int:
        return self.fd

    @property
    def path(self) -> str:
        self._check_closed()
        return self._chip.path

    @property
    def fd(self) -> int:
        self._check_closed()
        return self._chip.fd
