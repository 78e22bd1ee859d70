"""A fake of libgpiod's Python bindings, version 2 (PyPI ``gpiod`` >= 2.0.2), for the tests.

Its public API is the real one's, module for module (``gpiod``, ``gpiod.line``, ``gpiod.chip``,
...), written from libgpiod's bindings/python/gpiod sources (2.x); what the real extension and
kernel do underneath is faked by ``_ext.py``, which says how a test drives it. Put the folder
holding this package first on PYTHONPATH (tests/support/fakes/gpio.py does) and ``import gpiod``
finds it in the agent's process, which runs unmodified.
"""

from . import _ext, chip, chip_info, edge_event, exception, line, line_info, line_request, line_settings, version
from .chip import Chip
from .chip_info import ChipInfo
from .edge_event import EdgeEvent
from .exception import ChipClosedError, RequestReleasedError
from .line_info import LineInfo
from .line_request import LineRequest
from .line_settings import LineSettings
from .version import __version__

api_version = _ext.api_version

__all__ = ["chip", "chip_info", "edge_event", "exception", "line", "line_info", "line_request",
           "line_settings", "version", "Chip", "ChipInfo", "EdgeEvent", "ChipClosedError", "RequestReleasedError",
           "LineInfo", "LineRequest", "LineSettings", "__version__", "api_version", "is_gpiochip_device",
           "request_lines"]


def is_gpiochip_device(path: str) -> bool:
    return _ext.is_gpiochip_device(path)


def request_lines(path: str, config, consumer: str | None = None, event_buffer_size: int | None = None,
                  output_values=None) -> LineRequest:
    """Open the chip, request the lines, close the chip: the request lives on."""
    with Chip(path) as c:
        return c.request_lines(config=config, consumer=consumer, event_buffer_size=event_buffer_size,
                               output_values=output_values)
