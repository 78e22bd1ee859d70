"""Item mode: one frame per trigger, each scored as one item, each with a result.

A trigger is a message on ``<prefix>/<camera>/trigger`` (payload: the item id, optional), an edge
on a GPIO line (``items.trigger = "gpio"``, agent/gpio.py) or, with ``items.trigger = "camera"``,
every frame the camera sends (its own hardware trigger). The first
frame captured at or after a trigger is that item's frame; frames between triggers are not items.
A trigger that gets no frame within ``items.timeout_s`` is missed: counted, and its result says
``ok = false`` with the reason, so the reject gate still hears about that part. A frame later than
``items.late_ms`` after its trigger is counted late (it is still inspected).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .config import ItemsConfig
from .errors import AgentError
from .ratelimit import Throttled
from .stats import CameraStats

log = logging.getLogger(__name__)

MAX_ITEM_ID = 128
ITEM_ID = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: safe in JSON, logs and PLC strings


class BadTrigger(AgentError, ValueError):
    """A trigger payload that cannot be an item id; the trigger still counts (the part is there)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind  # one log line per kind of problem per minute, however many come


@dataclass
class Trigger:
    item: str
    mono: float  # when it arrived (monotonic): the latency's start
    ts: float  # wall clock


def item_id(payload: bytes | str) -> str:
    """The item id a trigger payload carries ('' = none given); BadTrigger naming the problem."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise BadTrigger("encoding", "the payload is not UTF-8 text: send the item id as plain text (e.g. SN-000123)") \
                from None
    text = payload.strip()
    if len(text) > MAX_ITEM_ID:
        raise BadTrigger("length", f"the item id is {len(text)} characters long; at most {MAX_ITEM_ID} are allowed")
    if text and not ITEM_ID.match(text):
        raise BadTrigger("characters", f"the item id {text[:40]!r} holds spaces or control characters: send printable "
                         "ASCII without spaces (e.g. SN-000123)")
    return text


def item_id_or_none(payload: bytes | str) -> str | None:
    try:
        return item_id(payload) or None
    except BadTrigger:
        return None


class Triggers:
    def __init__(self, camera: str, cfg: ItemsConfig, stats: CameraStats, on_missed: Callable[[Trigger, str], None],
                 fire: Callable[[], None] | None = None):
        self.camera, self.cfg, self.stats, self.on_missed = camera, cfg, stats, on_missed
        self.fire = fire or (lambda: None)
        self.pending: deque[Trigger] = deque()
        self.lock = threading.Lock()
        self.count = 0
        self.throttled = Throttled(log)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._expire_loop, name=f"triggers-{camera}", daemon=True)

    def _generated(self) -> str:
        return f"{self.camera}-{self.count}"

    def trigger(self, payload: bytes | str, at: float | None = None) -> Trigger | None:
        """One trigger (from MQTT's network thread, or the GPIO line's reader): queued for the next
        frame, and the camera's software trigger fired. A bad payload is said and counted; the part
        still gets a result. ``at``: when it happened (monotonic), if known better than now (a GPIO
        edge's kernel timestamp)."""
        now, ts = time.monotonic(), time.time()
        if at is not None and 0.0 <= now - at < 3600.0:
            now, ts = at, ts - (now - at)
        if self.stop.is_set():  # stopping: said in its result, not left waiting for a frame
            self.on_missed(Trigger(item_id_or_none(payload) or f"{self.camera}-late", now, ts),
                           "the agent was stopping when this item was triggered")
            self.stats.add("missed_triggers")
            return None
        with self.lock:
            self.count += 1
            try:
                item = item_id(payload) or self._generated()
            except BadTrigger as e:
                item = f"{self._generated()}-bad"
                self.stats.add("bad_triggers")
                self.throttled.log(logging.ERROR, f"bad {e.kind}", "camera %s: trigger %d: %s; inspected as item %s",
                                   self.camera, self.count, e, item)
            t = Trigger(item, now, ts)
            self.pending.append(t)
        self.stats.add("triggers")
        self.fire()
        return t

    def lost(self, n: int, why: str) -> None:
        """``n`` triggers known to have happened that no frame can answer (edges the kernel's GPIO
        buffer dropped): each counted, missed, and given its result now under a generated id."""
        now, ts = time.monotonic(), time.time()
        for _ in range(n):
            with self.lock:
                self.count += 1
                t = Trigger(self._generated(), now, ts)
            self.stats.add("triggers")
            self.stats.add("missed_triggers")
            self.on_missed(t, why)

    def every_frame(self, frame) -> Trigger:
        """items.trigger = "camera": the frame is its own trigger."""
        with self.lock:
            self.count += 1
            return Trigger(self._generated(), frame.mono, frame.ts)

    def claim(self, frame) -> Trigger | None:
        """The trigger this frame answers (the oldest one pending, if the frame came after it), or None."""
        if self.cfg.trigger == "camera":
            return self.every_frame(frame)
        with self.lock:
            if not self.pending or frame.mono < self.pending[0].mono:
                return None
            t = self.pending.popleft()
        if (frame.mono - t.mono) * 1000.0 > self.cfg.late_ms:
            self.stats.add("late_triggers")
        return t

    def drain(self, why: str) -> None:
        """Stopping: every trigger still waiting for its frame gets its result now, with the reason."""
        self.stop.set()
        with self.lock:
            left, self.pending = list(self.pending), deque()
        for t in left:
            self.stats.add("missed_triggers")
            self.on_missed(t, why)
        if left:
            log.warning("camera %s: %d item(s) triggered but not captured before stopping: their results say so",
                        self.camera, len(left))

    def _expire_loop(self) -> None:
        while not self.stop.wait(0.05):
            now = time.monotonic()
            missed = []
            with self.lock:
                while self.pending and now - self.pending[0].mono > self.cfg.timeout_s:
                    missed.append(self.pending.popleft())
            for t in missed:
                self.stats.add("missed_triggers")
                why = f"no frame within {self.cfg.timeout_s:g} s of the trigger (camera offline or too slow?)"
                self.throttled.log(logging.ERROR, "missed", "camera %s: item %s missed: %s", self.camera, t.item, why)
                self.on_missed(t, why)
