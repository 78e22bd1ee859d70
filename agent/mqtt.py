"""MQTT transport (paho-mqtt 2.x, callback API 2): availability, camera status, stats, and the
durable publishing of stored events (an event is deleted only after every one of its messages
got its PUBACK). Topics: ``topics.py``.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .config import MqttConfig
from .store import EventStore
from .topics import Topics

log = logging.getLogger(__name__)

MAX_EVENTS_IN_FLIGHT = 16


class MqttPublisher:
    def __init__(self, cfg: MqttConfig, topics: Topics, client_id: str, store: EventStore,
                 on_ack: Callable[[int, float], None] | None = None):
        self.cfg, self.topics, self.store, self.on_ack = cfg, topics, store, on_ack
        proto = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": client_id,
                                  "protocol": proto}
        if proto == mqtt.MQTTv311:
            kwargs["clean_session"] = True
        self.client = mqtt.Client(**kwargs)
        self.client.will_set(topics.available(), "offline", qos=1, retain=True)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.resolved_password())
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file,
                                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            if cfg.tls.insecure:
                self.client.tls_insecure_set(True)
        self.client.reconnect_delay_set(min_delay=max(1, int(cfg.reconnect_min_s)), max_delay=int(cfg.reconnect_max_s))
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.inflight: dict[int, int] = {}  # mid -> event seq
        self.event_mids: dict[int, set[int]] = {}  # seq -> mids not yet acknowledged
        self.early: dict[int, float] = {}  # acks that arrived before publish() returned
        self.capture_mono: dict[int, float] = {}  # seq -> capture time, for latency
        self.json_mid: dict[int, int] = {}
        self.sent_upto = 0
        self.retained: dict[str, str] = {}
        self.wake = threading.Event()
        self.stop_flag = threading.Event()
        self.connects = 0
        self.published = 0
        self.thread = threading.Thread(target=self._flush_loop, name="mqtt-flush", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        log.info("MQTT: connecting to %s:%d as %s (MQTT %s%s)", self.cfg.host, self.cfg.port,
                 self.client._client_id.decode() if isinstance(self.client._client_id, bytes) else self.client._client_id,
                 self.cfg.protocol, ", TLS" if self.cfg.tls else "")
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()
        self.thread.start()

    def stop(self, flush_timeout: float = 10.0) -> None:
        """Flush what is stored (up to ``flush_timeout``), publish ``stopped`` and disconnect."""
        deadline = time.monotonic() + flush_timeout
        # Wait for the broker too: it may be coming back (a reconnect is pending).
        while time.monotonic() < deadline and self.store.depth()[0] > 0:
            self.wake.set()
            time.sleep(0.05)
        left = self.store.depth()[0]
        if left:
            log.warning("stopping with %d unsent event(s) kept in %s; they go out on the next start",
                        left, self.store.path)
        self.stop_flag.set()
        self.wake.set()
        self.thread.join(timeout=5)
        if self.connected.is_set():
            info = self.client.publish(self.topics.available(), "stopped", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT: broker refused the connection: %s (check credentials and TLS settings)", reason_code)
            return
        self.connects += 1
        log.info("MQTT: connected to %s:%d%s", self.cfg.host, self.cfg.port,
                 f" (reconnect {self.connects - 1})" if self.connects > 1 else "")
        client.publish(self.topics.available(), "online", qos=1, retain=True)
        for topic, payload in list(self.retained.items()):
            client.publish(topic, payload, qos=1, retain=True)
        self.connected.set()
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        with self.lock:
            # Whatever was in flight is sent again from the store after reconnecting.
            self.inflight.clear()
            self.event_mids.clear()
            self.json_mid.clear()
            self.sent_upto = 0
        if was and not self.stop_flag.is_set():
            log.warning("MQTT: disconnected (%s); events are kept in the store until the broker is back",
                        reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            seq = self.inflight.pop(mid, None)
            if seq is None:
                self.early[mid] = time.monotonic()
                return
            self._acked(seq, mid)

    def _acked(self, seq: int, mid: int) -> None:
        mids = self.event_mids.get(seq)
        if mids is None:
            return
        mids.discard(mid)
        if self.json_mid.get(seq) == mid:
            t = self.capture_mono.pop(seq, None)
            if t is not None and self.on_ack:
                self.on_ack(seq, time.monotonic() - t)
        if not mids:
            del self.event_mids[seq]
            self.json_mid.pop(seq, None)
            self.store.delete(seq)
            self.published += 1

    # -- publishing ------------------------------------------------------------------------------
    def notify_stored(self, seq: int, capture_mono: float) -> None:
        """An event was stored: remember its capture time (for latency) and publish it now."""
        with self.lock:
            self.capture_mono[seq] = capture_mono
            if len(self.capture_mono) > 10000:
                self.capture_mono.pop(next(iter(self.capture_mono)))
        self.wake.set()

    def set_retained(self, topic: str, payload: str) -> None:
        self.retained[topic] = payload
        if self.connected.is_set():
            self.client.publish(topic, payload, qos=1, retain=True)

    def publish_now(self, topic: str, payload: str | bytes, qos: int = 0) -> None:
        if self.connected.is_set():
            self.client.publish(topic, payload, qos=qos)

    def _publish_event(self, ev) -> bool:
        messages = [(ev.topic, ev.payload)] + ev.blobs
        mids = []
        for i, (topic, payload) in enumerate(messages):
            info = self.client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            mids.append(info.mid)
        with self.lock:
            if not self.connected.is_set():
                return False
            self.event_mids[ev.seq] = set(mids)
            self.json_mid[ev.seq] = mids[0]
            for m in mids:
                self.inflight[m] = ev.seq
            for m in mids:
                if m in self.early:
                    del self.early[m]
                    self.inflight.pop(m, None)
                    self._acked(ev.seq, m)
            self.sent_upto = max(self.sent_upto, ev.seq)
        return True

    def _flush_loop(self) -> None:
        while not self.stop_flag.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            if not self.connected.is_set():
                continue
            now = time.monotonic()
            with self.lock:
                for m in [m for m, t in self.early.items() if now - t > 60]:
                    del self.early[m]
                room = MAX_EVENTS_IN_FLIGHT - len(self.event_mids)
                after = self.sent_upto
            if room <= 0:
                continue
            for ev in self.store.pending(limit=room, after_seq=after):
                if not self._publish_event(ev):
                    break
            with self.lock:
                more = len(self.event_mids) < MAX_EVENTS_IN_FLIGHT
            if more and self.store.pending(limit=1, after_seq=self.sent_upto):
                self.wake.set()

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), "reconnects": max(self.connects - 1, 0),
                "published_events": self.published}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
