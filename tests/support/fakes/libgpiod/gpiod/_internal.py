"""gpiod._internal as in libgpiod 2.x: waiting on an fd, and the request config's keys."""

from __future__ import annotations

from datetime import timedelta
from select import select


def poll_fd(fd: int, timeout: timedelta | float | None = None) -> bool:
    sec = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    readable, _, _ = select([fd], [], [], sec)
    return fd in readable


def config_iter(config):
    """(line, settings) per line: a key is an offset, a name, or an iterable of them."""
    for key, settings in config.items():
        if isinstance(key, (int, str)):
            yield key, settings
        else:
            for sub in key:
                yield sub, settings
