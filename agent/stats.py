"""Counters and latency percentiles over a sliding window."""

from __future__ import annotations

import bisect
import threading
from collections import deque

import numpy as np


# Upper bounds (seconds) of the cumulative histograms /metrics serves (Prometheus' own defaults
# with finer steps at the low end, where a frame's stages live).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Latency:
    """A sliding window for percentiles, and counts since start for a Prometheus histogram."""

    def __init__(self, window: int = 2000):
        self.values: deque[float] = deque(maxlen=window)
        self.lock = threading.Lock()
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.count, self.sum = 0, 0.0

    def add(self, seconds: float) -> None:
        with self.lock:
            self.values.append(seconds)
            self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.count += 1
            self.sum += seconds

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (upper bound, count) pairs ending with +Inf, and the sum, since start."""
        with self.lock:
            counts, total = list(self.buckets), self.sum
        out, acc = [], 0
        for bound, n in zip([str(b) for b in BUCKETS] + ["+Inf"], counts):
            acc += n
            out.append((bound, acc))
        return out, total

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


class CameraStats:
    """Every counter and latency of one camera's pipeline, in one place; the stages add to it and
    ``snapshot`` reads it for the stats topic."""

    COUNTERS = ("dropped", "skipped", "bad_frames", "reconnects", "stalls", "alarms", "source_errors",
                # item mode (agent/items.py) and per-item results
                "results", "triggers", "missed_triggers", "late_triggers", "bad_triggers", "trigger_reconnects")

    def __init__(self, now: float):
        self.captured, self.processed = Rate(now), Rate(now)
        self.counts = {name: 0 for name in self.COUNTERS}
        self.lock = threading.Lock()
        self.latency = {"queue": Latency(), "inference_batch": Latency(), "postprocess": Latency(),
                        "capture_to_decision": Latency(), "trigger_to_result": Latency()}
        self.first_capture: float | None = None
        self.last_done: float | None = None
        self.recent_scores: deque[float] = deque(maxlen=60)  # the console's live strip

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def snapshot(self, now: float) -> dict:
        busy = (round(self.last_done - self.first_capture, 4)
                if self.last_done and self.first_capture else None)
        return {"fps_in": self.captured.rate(now), "fps_processed": self.processed.rate(now),
                "frames_in": self.captured.count, "frames_processed": self.processed.count,
                **self.counts,
                # Throughput while working: first frame captured to last frame decided.
                "busy_s": busy,
                "latency": {k: v.summary() for k, v in self.latency.items()}}
