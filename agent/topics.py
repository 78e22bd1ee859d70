"""Every MQTT topic the agent publishes, built in one place.

    <prefix>/available                       online | offline (also the Will), retained
    <prefix>/available/reason                why: running, stopped by SIGTERM, ..., retained
    <prefix>/<camera>/status                 online | offline, retained
    <prefix>/<camera>/status/reason          why a camera is offline (source error, engine failing), retained
    <prefix>/<camera>/latest/crop            the latest alarm's first crop (JPEG; Home Assistant's image)
    <prefix>/<camera>/alarm                  JSON event (agent/alarm.schema.json)
    <prefix>/<camera>/alarm/<id>/crop/<k>    JPEG
    <prefix>/<camera>/alarm/<id>/overlay     JPEG
    <prefix>/<camera>/result                 JSON verdict per item (agent/result.schema.json)
    <prefix>/<camera>/trigger                subscribed: one item per message (payload: its id)
    <prefix>/<camera>/verdict                JSON, each recorded verdict (console or PLC), QoS 1
    <prefix>/<camera>/verdict/set            subscribed: {"id": ..., "verdict": "defect" | "false_alarm"}
    <prefix>/stats                           JSON, every stats_interval_s
    <prefix>/model/set                       subscribed: {"bundle": PATH, "camera": NAME?} or {"rollback": true}
    <prefix>/model/result                    JSON, the outcome of each model swap (agent/models.py)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str

    def _join(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])

    def available(self) -> str:
        """`online` or `offline`, retained, QoS 1; `offline` is also the Will (an agent that dies)."""
        return self._join("available")

    def stats(self) -> str:
        """JSON, every `mqtt.stats_interval_s`, QoS 0: per camera frames, drops, latencies, queue and store depths."""
        return self._join("stats")

    def available_reason(self) -> str:
        """Why the agent is online or offline (running, stopped by SIGTERM, ...), retained, QoS 1."""
        return self._join("available", "reason")

    def status_reason(self, camera: str) -> str:
        """Why a camera is offline (source error, engine failing), retained, QoS 1."""
        return self._join(camera, "status", "reason")

    def latest_crop(self, camera: str) -> str:
        """The latest alarm's first crop (JPEG), retained, QoS 0: Home Assistant's image entity."""
        return self._join(camera, "latest", "crop")

    def status(self, camera: str) -> str:
        """`online` or `offline` for one camera, retained, QoS 1 (Home Assistant's per-camera availability)."""
        return self._join(camera, "status")

    def alarm(self, camera: str) -> str:
        """The alarm event (JSON, below), QoS 1, from the event store."""
        return self._join(camera, "alarm")

    def crop(self, camera: str, event_id: str, k: int) -> str:
        """A crop of box k (JPEG, the original pixels with context around the box), QoS 1."""
        return self._join(camera, "alarm", event_id, "crop", str(k))

    def overlay(self, camera: str, event_id: str) -> str:
        """The frame with the boxes drawn on it (JPEG), QoS 1, when `localisation.overlay` is on."""
        return self._join(camera, "alarm", event_id, "overlay")

    def result(self, camera: str) -> str:
        """The verdict on every item (JSON, OK or NG: agent/result.schema.json), QoS 1, from the event store."""
        return self._join(camera, "result")

    def trigger(self, camera: str) -> str:
        """Subscribed in item mode: one item per message, its payload the item's id (optional)."""
        return self._join(camera, "trigger")

    def model_set(self) -> str:
        """Subscribed: {"bundle": PATH, "camera": NAME?} or {"rollback": true}: a hot swap (docs/feedback.md)."""
        return self._join("model", "set")

    def model_result(self) -> str:
        """The outcome of each model swap (JSON: ok, reason, camera, hashes), QoS 1."""
        return self._join("model", "result")

    def verdict(self, camera: str) -> str:
        """Each recorded verdict (JSON: id, verdict, source), from the console or the plant, QoS 1."""
        return self._join(camera, "verdict")

    def verdict_set(self, camera: str) -> str:
        """Subscribed: {"id": ..., "verdict": "defect" | "false_alarm"} from a PLC or MES."""
        return self._join(camera, "verdict", "set")
