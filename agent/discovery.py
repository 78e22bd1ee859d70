"""Home Assistant MQTT discovery: per camera an anomaly binary sensor (on with each alarm, off 10 s
later), the last alarm's calibrated score, and the latest crop as an image entity. Published
retained on every connect when ``mqtt.discovery`` is on (the default)."""

from __future__ import annotations

import json

from ganomaly_edge.engine.version import version

from .topics import Topics


def discovery_messages(settings, topics: Topics) -> list[tuple[str, str]]:
    if not settings.mqtt.discovery:
        return []
    node = f"ganomaly_edge_{settings.device_id}".replace(".", "_").replace("-", "_")
    device = {"identifiers": [node], "name": f"ganomaly-edge {settings.device_id}", "manufacturer": "ganomaly-edge",
              "model": "edge inspection agent", "sw_version": version()}
    host = settings.http.listen.rpartition(":")[0].strip("[]")
    if host and host not in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):  # an address others can reach
        device["configuration_url"] = f"{'https' if settings.http.tls_cert_file else 'http'}://{settings.http.listen}/"
    avail = {"availability_topic": topics.available(), "payload_available": "online",
             "payload_not_available": "offline"}
    prefix = settings.mqtt.discovery_prefix.rstrip("/")
    out = []
    for cam in settings.cameras:
        uid = f"{node}_{cam.name}"
        entities = [
            ("binary_sensor", "anomaly", {"name": f"{cam.name} anomaly", "state_topic": topics.alarm(cam.name),
                                          "value_template": "{{ 'ON' }}", "off_delay": 10, "device_class": "problem"}),
            ("sensor", "score", {"name": f"{cam.name} anomaly score", "state_topic": topics.alarm(cam.name),
                                 "value_template": "{{ value_json.score }}", "state_class": "measurement"}),
            ("image", "crop", {"name": f"{cam.name} latest anomaly", "image_topic": topics.latest_crop(cam.name),
                               "content_type": "image/jpeg"}),
        ]
        for component, key, cfg in entities:
            payload = dict(cfg, unique_id=f"{uid}_{key}", object_id=f"{uid}_{key}", device=device, **avail)
            out.append((f"{prefix}/{component}/{uid}/{key}/config", json.dumps(payload, separators=(",", ":"))))
    return out
