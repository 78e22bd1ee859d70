"""Counters and latency percentiles over a sliding window."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class Latency:
    def __init__(self, window: int = 2000):
        self.values: deque[float] = deque(maxlen=window)
        self.lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self.lock:
            self.values.append(seconds)

    def summary(self) -> dict[str, float] | None:
        with self.lock:
            if not self.values:
                return None
            v = np.fromiter(self.values, float) * 1000.0
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
                "n": int(v.size)}


class Rate:
    """Events per second between two reads."""

    def __init__(self, now: float):
        self.count = 0
        self._last_count = 0
        self._last_t = now

    def rate(self, now: float) -> float:
        dt = now - self._last_t
        r = (self.count - self._last_count) / dt if dt > 0 else 0.0
        self._last_count, self._last_t = self.count, now
        return round(r, 2)
