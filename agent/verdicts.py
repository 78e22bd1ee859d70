"""Operator verdicts: from the console or the plant (a PLC or MES on ``<prefix>/<camera>/verdict/set``
with ``{"id": ..., "verdict": "defect" | "false_alarm"}``), recorded in the alarm history and
published on ``<prefix>/<camera>/verdict`` (QoS 1) whichever way they came in."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from .history import VERDICTS, BadVerdict, History, UnknownAlarm
from .ratelimit import Throttled
from .topics import Topics

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096


class Verdicts:
    def __init__(self, history: History, publisher, topics: Topics):
        self.history, self.publisher, self.topics = history, publisher, topics
        self.counts = {"mqtt_accepted": 0, "mqtt_rejected": 0, "mqtt_unknown_id": 0, "published": 0}
        self.lock = threading.Lock()
        self.throttled = Throttled(log)
        history.on_verdict = self.publish
        if publisher is not None:
            publisher.on_verdict_set = self.on_message

    def _count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def parse(self, topic: str, payload: bytes) -> tuple[str, str]:
        """(id, verdict) of a verdict/set message; ValueError saying what is wrong."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(msg, dict) or set(msg) - {"id", "verdict", "source"} or "id" not in msg:
            raise ValueError('expected {"id": "<alarm id>", "verdict": "defect" | "false_alarm"}')
        if msg.get("verdict") not in VERDICTS:
            raise ValueError(f"verdict must be one of {list(VERDICTS)}, not {str(msg.get('verdict'))[:40]!r}")
        return str(msg["id"])[:64], msg["verdict"]

    def on_message(self, topic: str, payload: bytes) -> None:
        """A verdict/set message (paho's network thread): validated, recorded, counted."""
        camera = topic.rsplit("/", 3)[-3] if topic.count("/") >= 2 else "?"
        try:
            event_id, verdict = self.parse(topic, payload)
        except ValueError as e:
            self._count("mqtt_rejected")
            self.throttled.log(logging.WARNING, "bad", "verdict on %s rejected: %s (nothing recorded)", topic, e)
            return
        alarm = self.history.get(event_id)
        if alarm is None or alarm["camera"] != camera:
            self._count("mqtt_unknown_id")
            log.warning("verdict on %s: no alarm %r of camera %s in history (never raised, or evicted); "
                        "nothing recorded", topic, event_id, camera)
            return
        try:
            self.history.set_verdict(event_id, verdict, source="mqtt")
        except (UnknownAlarm, BadVerdict) as e:  # evicted in between
            self._count("mqtt_unknown_id")
            log.warning("verdict on %s: %s; nothing recorded", topic, e)
            return
        self._count("mqtt_accepted")
        log.info("verdict %s for alarm %s from %s", verdict, event_id, topic)

    def publish(self, alarm: dict[str, Any]) -> None:
        """Each recorded verdict on <prefix>/<camera>/verdict (QoS 1; paho queues it while away)."""
        if self.publisher is None:
            return
        msg = {"id": alarm["id"], "camera": alarm["camera"], "verdict": alarm["verdict"],
               "source": alarm["verdict_source"], "verdict_ts": alarm["verdict_ts"] or time.time(),
               "ts": alarm["ts"], "score": alarm["score"], "item": alarm["item"], "model": alarm["model"]}
        try:
            self.publisher.client.publish(self.topics.verdict(alarm["camera"]),
                                          json.dumps(msg, separators=(",", ":")), qos=1)
            self._count("published")
        except (ValueError, OSError) as e:
            self.throttled.log(logging.ERROR, "publish", "cannot publish verdict of %s: %s", alarm["id"], e)
