"""Every MQTT topic the agent publishes, built in one place.

    <prefix>/available                       online | offline (the Will) | stopped, retained
    <prefix>/<camera>/status                 online | offline, retained
    <prefix>/<camera>/alarm                  JSON event (agent/alarm.schema.json)
    <prefix>/<camera>/alarm/<id>/crop/<k>    JPEG
    <prefix>/<camera>/alarm/<id>/overlay     JPEG
    <prefix>/stats                           JSON, every stats_interval_s
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str

    def _join(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])

    def available(self) -> str:
        return self._join("available")

    def stats(self) -> str:
        return self._join("stats")

    def status(self, camera: str) -> str:
        return self._join(camera, "status")

    def alarm(self, camera: str) -> str:
        return self._join(camera, "alarm")

    def crop(self, camera: str, event_id: str, k: int) -> str:
        return self._join(camera, "alarm", event_id, "crop", str(k))

    def overlay(self, camera: str, event_id: str) -> str:
        return self._join(camera, "alarm", event_id, "overlay")
