"""Alarm decision per camera: threshold, k of the last n frames, cooldown, re-arm.

One defect passing the camera raises one alarm: after an alarm, a new one needs the cooldown
to have passed *and* the k-of-n condition to have cleared once (the defect has left the view).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .config import ConfigError


class Debouncer:
    def __init__(self, threshold: float, k: int, n: int, cooldown_s: float):
        if not 1 <= k <= n:
            raise ConfigError(f"need 1 <= k <= n, got k={k}, n={n}")
        self.threshold, self.k, self.n, self.cooldown_s = threshold, k, n, cooldown_s
        self.window: deque[tuple[bool, Any]] = deque(maxlen=n)
        self.armed = True
        self.quiet_until = float("-inf")

    def update(self, score: float, ts: float, item: Any = None) -> Any | None:
        """Feed one frame's calibrated score; returns the window's most anomalous item when an
        alarm fires, else None."""
        over = score > self.threshold
        self.window.append((over, (score, item)))
        hits = sum(o for o, _ in self.window)
        if hits < self.k:
            self.armed = True
            return None
        if not self.armed or ts < self.quiet_until:
            return None
        # With n = 1 every frame is its own item (the scanner case): nothing to wait out.
        self.armed = self.n == 1
        self.quiet_until = ts + self.cooldown_s
        best = max((v for o, v in self.window if o), key=lambda v: v[0])
        return best[1]
