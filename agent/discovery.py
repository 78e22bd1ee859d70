"""Home Assistant MQTT discovery: per camera an anomaly binary sensor (on with each alarm, off 10 s
later), the last alarm's calibrated score, and the latest crop as an image entity. Published
retained on every connect when ``mqtt.discovery`` is on (the default).

- ``default_entity_id`` (Home Assistant 2025.10+; ``object_id`` stops being honoured in 2026.4)
  names each entity ``<domain>.ganomaly_edge_<device>_<camera>_<key>``.
- Availability is the agent's and the camera's together (``availability_mode: all``): a camera
  whose source died shows unavailable, not "no anomaly".
- An alarm turns the binary sensor on only while it is fresh (its capture time within
  ``LIVE_S`` of Home Assistant's clock): a backlog replayed after an outage updates the score
  but does not flip the live state on for alarms long past.
"""

from __future__ import annotations

import json

from ganomaly_edge.engine.version import version

LIVE_S = 30  # an alarm older than this (capture time against Home Assistant's clock) is history
OFF_DELAY_S = 10
# Jinja, rendered by Home Assistant: ON for a fresh alarm, OFF for one replayed from the store.
LIVE_TEMPLATE = ("{{ 'ON' if value_json.ts is defined and now().timestamp() - (value_json.ts | float(0)) < %d "
                 "else 'OFF' }}" % LIVE_S)

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
    prefix = settings.mqtt.discovery_prefix.rstrip("/")
    out = []
    for cam in settings.cameras:
        uid = f"{node}_{cam.name}"
        avail = {"availability": [dict(topic=t, payload_available="online", payload_not_available="offline")
                                  for t in (topics.available(), topics.status(cam.name))],
                 "availability_mode": "all"}
        entities = [
            ("binary_sensor", "anomaly", {"name": f"{cam.name} anomaly", "state_topic": topics.alarm(cam.name),
                                          "value_template": LIVE_TEMPLATE, "off_delay": OFF_DELAY_S,
                                          "device_class": "problem"}),
            ("sensor", "score", {"name": f"{cam.name} anomaly score", "state_topic": topics.alarm(cam.name),
                                 "value_template": "{{ value_json.score }}", "state_class": "measurement"}),
            ("image", "crop", {"name": f"{cam.name} latest anomaly", "image_topic": topics.latest_crop(cam.name),
                               "content_type": "image/jpeg"}),
        ]
        for component, key, cfg in entities:
            payload = dict(cfg, unique_id=f"{uid}_{key}", default_entity_id=f"{component}.{uid}_{key}".lower(),
                           device=device, **avail)
            out.append((f"{prefix}/{component}/{uid}/{key}/config", json.dumps(payload, separators=(",", ":"))))
    return out
