"""Errors that repeat (every frame, every reconnect attempt) are logged once per interval, with a
count of how many were held back, instead of flooding the journal."""

from __future__ import annotations

import logging
import threading
import time


class Throttled:
    def __init__(self, logger: logging.Logger, interval_s: float = 60.0):
        self.logger, self.interval_s = logger, interval_s
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args) -> bool:
        """Log now if ``key`` was not logged within the interval, else count it; True when logged."""
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(key, -1e18) < self.interval_s:
                self.held[key] = self.held.get(key, 0) + 1
                return False
            held = self.held.pop(key, 0)
            self.last[key] = now
        if held:
            msg += f" ({held} more like this in the last {self.interval_s:.0f} s)"
        self.logger.log(level, msg, *args)
        return True
