"""Home Assistant discovery (agent/discovery.py): current keys (default_entity_id, not the
deprecated object_id), per-camera availability, the latest crop retained, and old alarms replayed
from the store without flipping the live state. The template is rendered with Jinja (as Home
Assistant does); the rest with the agent as a process against a real mosquitto."""

import json
import signal
import threading
import time
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from support.agent import start_agent, write_config
from ganomaly_edge.agent.config import CameraConfig, MqttConfig, Settings
from ganomaly_edge.agent.discovery import LIVE_S, LIVE_TEMPLATE, discovery_messages
from ganomaly_edge.agent.topics import Topics

PREFIX = "ganomaly/ha"


def _settings(*cams):
    return Settings.model_construct(device_id="line-a", mqtt=MqttConfig(),
                                    cameras=[CameraConfig.model_construct(name=c) for c in cams])


def test_entities_use_default_entity_id_and_per_camera_availability():
    msgs = discovery_messages(_settings("belt", "xray"), Topics(PREFIX))
    assert len(msgs) == 6
    for topic, payload in msgs:
        cfg = json.loads(payload)
        component, node, key = topic.split("/")[1:4]
        assert "object_id" not in cfg  # deprecated in Home Assistant 2025.10, ignored from 2026.4
        assert cfg["default_entity_id"] == f"{component}.{node}_{key}" == f"{component}.{cfg['unique_id']}"
        camera = node.rsplit("_", 1)[-1]
        assert cfg["availability_mode"] == "all" and "availability_topic" not in cfg
        assert [a["topic"] for a in cfg["availability"]] == [f"{PREFIX}/available", f"{PREFIX}/{camera}/status"]
        assert all(a["payload_not_available"] == "offline" for a in cfg["availability"])


def _render(template, payload, now):
    """Render a value_template the way Home Assistant does: sandboxed Jinja, now() and value_json."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    env.globals["now"] = lambda: now
    return env.from_string(template).render(value_json=json.loads(payload), value=payload).strip()


def test_a_replayed_old_alarm_does_not_turn_the_live_sensor_on():
    now = datetime(2026, 12, 7, 4, 0, tzinfo=timezone.utc)
    t = now.timestamp()
    (binary,) = [json.loads(p) for topic, p in discovery_messages(_settings("belt"), Topics(PREFIX))
                 if "/binary_sensor/" in topic]
    assert binary["value_template"] == LIVE_TEMPLATE
    assert _render(LIVE_TEMPLATE, json.dumps({"ts": t - 0.5, "score": 3.0}), now) == "ON"
    assert _render(LIVE_TEMPLATE, json.dumps({"ts": t - 2 * LIVE_S, "score": 3.0}), now) == "OFF"
    assert _render(LIVE_TEMPLATE, json.dumps({"ts": t - 3 * 3600, "score": 3.0}), now) == "OFF"  # after an outage
    assert _render(LIVE_TEMPLATE, json.dumps({"score": 3.0}), now) == "OFF"  # no capture time: not live


class Retained:
    """Connects, collects what the broker holds for a pattern (retained messages arrive at once)."""

    def __init__(self, port, pattern):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.msgs, self.lock = {}, threading.Lock()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.c.on_message = self._add
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(pattern, qos=1)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def _add(self, c, u, m):
        with self.lock:
            self.msgs[m.topic] = (m.payload, m.retain)

    def wait_for(self, topic, pred=lambda p: True, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = self.msgs.get(topic)
            if got is not None and pred(got[0]):
                return got
            time.sleep(0.05)
        raise AssertionError(f"nothing on {topic} in {timeout} s; got {sorted(self.msgs)}")

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _config(tmp_path, port, scans):
    """support.agent.write_config: a folder camera that alarms on nothing far from normal, and a
    camera ("dead") whose file is not there."""
    dead = (f'[[cameras]]\nname = "dead"\nsource = {{ kind = "file", uri = "{tmp_path / "unplugged.avi"}", '
            f'retry_min_s = 0.5, retry_max_s = 1.0 }}\n')
    return write_config(tmp_path / "agent.toml", port,
                        {"kind": "folder", "uri": str(scans), "watch": True, "settle_s": 0.2, "poll_interval_s": 0.2},
                        tmp_path / "ev.db", device_id="ha", prefix=PREFIX, stats_interval_s=None, retry_s=None,
                        results=None, decision="threshold = -1000.0", camera_tables=dead)


def test_dead_camera_unavailable_and_latest_crop_retained_across_restart(broker, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        cv2.imwrite(str(scans / f"item{i}.png"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    log = tmp_path / "agent.log"
    p = start_agent(_config(tmp_path, broker.port, scans), log)
    try:
        live = Retained(broker.port, f"{PREFIX}/#")
        live.wait_for(f"{PREFIX}/scanner/latest/crop", timeout=90)
        live.wait_for(f"{PREFIX}/dead/status", lambda v: v == b"offline", timeout=60)
        live.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0, log.read_text()
    # A Home Assistant that starts now (or restarts) gets from the broker alone: the crop, the
    # dead camera's state, and entities whose availability reads that state.
    late = Retained(broker.port, "#")
    try:
        crop, retained = late.wait_for(f"{PREFIX}/scanner/latest/crop", timeout=10)
        assert retained and cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR) is not None
        assert late.wait_for(f"{PREFIX}/dead/status", timeout=10) == (b"offline", True)
        cfg = json.loads(late.wait_for("homeassistant/binary_sensor/ganomaly_edge_ha_dead/anomaly/config")[0])
        assert f"{PREFIX}/dead/status" in [a["topic"] for a in cfg["availability"]]
        assert cfg["default_entity_id"] == "binary_sensor.ganomaly_edge_ha_dead_anomaly"
    finally:
        late.close()
