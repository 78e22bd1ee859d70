"""MQTT transport (paho-mqtt 2.x, callback API 2): availability, camera status, stats, and the
durable publishing of stored events (an event is deleted only after every one of its messages
got its PUBACK). Topics: ``topics.py``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .config import MqttConfig
from .ratelimit import Throttled
from .redact import redact, remember
from .store import EventStore
from .topics import Topics

log = logging.getLogger(__name__)

MAX_EVENTS_IN_FLIGHT = 16
RETRY_REFUSED_S = 60.0  # events the broker refused are offered again this often (an ACL may be fixed)
ECHO_TIMEOUT_S = 10.0  # MQTT 3.1.1: an acknowledged event not delivered back by then was refused
RETRY_DELETE_S = 1.0  # delivered events whose delete failed (a full disk) are deleted again this often


class MqttPublisher:
    def __init__(self, cfg: MqttConfig, topics: Topics, client_id: str, store: EventStore,
                 on_ack: Callable[[int, float], None] | None = None, retained: list[tuple[str, str]] | None = None):
        self.cfg, self.topics, self.store, self.on_ack = cfg, topics, store, on_ack
        self.client = self._client(client_id)
        self.throttled = Throttled(log)
        self.refused: dict[int, str] = {}  # seq -> the broker's reason, kept in the store
        self.refusals = 0
        self.connect_failures = 0
        self.last_error: str | None = None
        self.last_retry = time.monotonic()
        # MQTT 3.1.1 has no reason codes: a broker that refuses a publish (an ACL) still sends a plain
        # PUBACK. There the agent reads its own alarms back and deletes an event only once it returns.
        self.verify_echo = cfg.protocol == "3.1.1"
        self.echo_ok = False
        self.event_ids: dict[int, str] = {}  # seq -> event id, for the echo
        self.awaiting: dict[str, tuple[int, float]] = {}  # event id -> (seq, all PUBACKs since)
        self.echoed: dict[str, None] = {}  # echoes that came before their PUBACKs (ordered, bounded)
        self.sub_mids: dict[int, tuple[str, str]] = {}  # SUBACKs awaited: mid -> (topic, what a refusal costs)
        # <prefix>/model/set: the payload handed to the agent (models.py), off the network thread
        self.on_model_set: Callable[[bytes], None] | None = None
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.inflight: dict[int, int] = {}  # mid -> event seq
        self.event_mids: dict[int, set[int]] = {}  # seq -> mids not yet acknowledged
        self.early: dict[int, float] = {}  # acks that arrived before publish() returned
        self.capture_mono: dict[int, float] = {}  # seq -> capture time, for latency
        self.json_mid: dict[int, int] = {}
        self.sent_upto = 0
        self.retained: dict[str, str] = dict(retained or [])  # published again on every connect
        # A retained value set while a connect is publishing the others: under this lock it is either
        # in that round or published by set_retained once ``connected`` is set, never neither
        self.retained_lock = threading.Lock()
        self.subscriptions: dict[str, Callable[[bytes], Any]] = {}  # topic -> handler (item triggers)
        self.wake = threading.Event()
        self.stop_flag = threading.Event()
        self.connects = 0
        self.published = 0
        self.undeleted: dict[int, None] = {}  # delivered, but the delete failed: deleted again later
        self.delete_failures = 0
        self.network_restarts = 0
        self.network_error: str | None = None  # why the network thread last died, or could not restart
        self.flush_error: str | None = None
        self.thread = threading.Thread(target=self._flush_loop, name="mqtt-flush", daemon=True)
        # Verdicts from the plant: (topic, payload) on <prefix>/<camera>/verdict/set (verdicts.py)
        self.on_verdict_set: Callable[[str, bytes], None] | None = None
        self.echo_sub_mid: int | None = None

    def _client(self, client_id: str) -> mqtt.Client:
        cfg = self.cfg
        proto = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": client_id,
                                  "protocol": proto}
        if proto == mqtt.MQTTv311:
            kwargs["clean_session"] = True
        client = mqtt.Client(**kwargs)
        client.will_set(self.topics.available(), "offline", qos=1, retain=True)
        if cfg.username:
            password = cfg.resolved_password()
            remember(password)  # never in a log line or a status message
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            if cfg.tls.insecure:
                client.tls_insecure_set(True)
        client.reconnect_delay_set(min_delay=max(1, int(cfg.reconnect_min_s)), max_delay=int(cfg.reconnect_max_s))
        client.max_inflight_messages_set(cfg.max_inflight)
        # An exception raised by one of our callbacks would otherwise end paho's network thread,
        # and with it all delivery, silently. Ours are guarded; this is the second line, and paho
        # logs what it swallowed.
        client.suppress_exceptions = True
        client.enable_logger(logging.getLogger(__name__ + ".paho"))
        client.on_connect, client.on_connect_fail = self._on_connect, self._on_connect_fail
        client.on_disconnect, client.on_publish = self._on_disconnect, self._on_publish
        client.on_subscribe, client.on_message = self._on_subscribe, self._on_message
        return client

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        log.info("MQTT: connecting to %s:%d as %s (MQTT %s%s)", self.cfg.host, self.cfg.port,
                 self.client._client_id.decode() if isinstance(self.client._client_id, bytes) else self.client._client_id,
                 self.cfg.protocol, ", TLS" if self.cfg.tls else "")
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()
        self.thread.start()

    def stop(self, flush_timeout: float = 10.0, reason: str = "stopped") -> None:
        """Flush what is stored (up to ``flush_timeout``), publish ``offline`` with the reason, disconnect."""
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
            self.client.publish(self.topics.available_reason(), reason, qos=1, retain=True)
            info = self.client.publish(self.topics.available(), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.connect_failures += 1
            self.last_error = f"broker refused the connection: {reason_code}"
            self.throttled.log(logging.ERROR, "connect", "MQTT: %s:%d %s (check mqtt.username, the password and "
                               "the broker's ACL)", self.cfg.host, self.cfg.port, self.last_error)
            return
        self.connects += 1
        log.info("MQTT: connected to %s:%d%s", self.cfg.host, self.cfg.port,
                 f" (reconnect {self.connects - 1})" if self.connects > 1 else "")
        if self.verify_echo:
            self.echo_sub_mid = client.subscribe([(self.topics.alarm("+"), 1), (self.topics.result("+"), 1)])[1]
        for topic in self.subscriptions:  # item triggers
            self.sub_mids[client.subscribe(topic, qos=1)[1]] = (
                topic, "no item will be triggered from it (allow this client to read it in the broker's ACL)")
        if self.on_verdict_set is not None:
            self.sub_mids[client.subscribe(self.topics.verdict_set("+"), qos=1)[1]] = (
                self.topics.verdict_set("+"), "verdicts from the plant cannot arrive (check its ACL)")
        if self.on_model_set is not None:
            self.sub_mids[client.subscribe(self.topics.model_set(), qos=1)[1]] = (
                self.topics.model_set(), "models can be swapped by SIGHUP or the console only (check its ACL)")
        self._publish_safely(self.topics.available(), "online")
        self._publish_safely(self.topics.available_reason(), self._running_reason())
        with self.retained_lock:
            for topic, payload in list(self.retained.items()):
                self._publish_safely(topic, payload)
            self.connected.set()
        self.wake.set()

    def _running_reason(self) -> str:
        if self.network_restarts:
            return (f"running (the MQTT network thread was restarted {self.network_restarts} time(s); "
                    f"last: {self.network_error})")
        return "running"

    def _publish_safely(self, topic: str, payload: str, qos: int = 1, retain: bool = True) -> None:
        """A retained message that cannot be sent (a topic the broker would refuse) is said, not raised:
        on the network thread an exception would end delivery."""
        try:
            self.client.publish(topic, redact(payload), qos=qos, retain=retain)
        except (ValueError, TypeError, OSError) as e:
            self.throttled.log(logging.ERROR, f"publish {topic}", "MQTT: cannot publish to %r: %s", topic, e)

    def _on_connect_fail(self, client, userdata) -> None:
        """paho swallows the socket error; find out what it was, and say it once per interval."""
        self.connect_failures += 1
        self.last_error = diagnose(self.cfg)
        self.throttled.log(logging.ERROR, "connect", "MQTT: cannot connect to %s:%d: %s; events are kept in the "
                           "store and retried", self.cfg.host, self.cfg.port, self.last_error)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """A SUBACK with a failure code is a failure: said, and delivery falls back to PUBACKs."""
        failed = [rc for rc in reason_codes if rc.is_failure]
        if mid != self.echo_sub_mid:
            topic, what = self.sub_mids.pop(mid, ("?", ""))
            if failed:
                self.throttled.log(logging.ERROR, f"suback {topic}", "MQTT: the broker refused the subscription "
                                   "to %s (%s): %s", topic, failed[0], what)
            return
        self.echo_ok = not failed
        if failed:
            self.throttled.log(logging.ERROR, "suback", "MQTT: the broker refused the subscription to %s (%s): "
                               "under MQTT 3.1.1 a refused publish looks delivered, and without reading our own "
                               "alarms back that cannot be seen; use protocol = \"5\" or allow reading it",
                               self.topics.alarm("+"), failed[0])

    def subscribe(self, topic: str, handler: Callable[[bytes], Any]) -> None:
        """Call ``handler(payload)`` for every message on ``topic`` (QoS 1, subscribed on every connect)."""
        self.subscriptions[topic] = handler

    def _on_message(self, client, userdata, msg) -> None:
        handler = self.subscriptions.get(msg.topic)
        if handler is not None:
            try:
                handler(msg.payload)
            except Exception:  # on the network thread: said, never raised
                log.exception("MQTT: handling a message on %s failed", msg.topic)
            return
        if msg.topic == self.topics.model_set() and self.on_model_set is not None:
            self.on_model_set(msg.payload)
            return
        if msg.topic.endswith("/verdict/set") and self.on_verdict_set is not None:
            try:
                self.on_verdict_set(msg.topic, msg.payload)
            except Exception:  # on the network thread: said, never raised
                log.exception("MQTT: handling a verdict on %s failed", msg.topic)
            return
        if not msg.topic.endswith(("/alarm", "/result")):
            return
        try:
            event_id = json.loads(msg.payload)["id"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            waiting = self.awaiting.pop(event_id, None)
            if waiting is None:
                self.echoed[event_id] = None
                while len(self.echoed) > 1000:
                    self.echoed.pop(next(iter(self.echoed)))
                return
            self._delivered(waiting[0])
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        with self.lock:
            # Whatever was in flight is sent again from the store after reconnecting.
            self.inflight.clear()
            self.event_mids.clear()
            self.json_mid.clear()
            self.awaiting.clear()  # sent again after reconnecting, and read back again
            self.sent_upto = 0
        if was and not self.stop_flag.is_set():
            log.warning("MQTT: disconnected (%s); events are kept in the store until the broker is back",
                        reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            seq = self.inflight.pop(mid, None)
            if seq is None:
                self.early[mid] = (time.monotonic(), reason_code)
                return
            self._acked(seq, mid, reason_code)
        self.wake.set()  # room for the next event: drain at the broker's pace, not the poll's

    def _refused(self, seq: int, reason) -> None:
        """A PUBACK with a failure reason code (MQTT 5): the event stays in the store."""
        self.event_mids.pop(seq, None)
        self.json_mid.pop(seq, None)
        self.refused[seq] = str(reason)
        self.refusals += 1
        self.throttled.log(logging.ERROR, "refused", "MQTT: the broker refused event %d under %s: %s; it stays in "
                           "the store and is offered again every %.0f s (check the broker's ACL for this prefix)",
                           seq, self.topics.prefix, reason, RETRY_REFUSED_S)

    def _acked(self, seq: int, mid: int, reason_code=None) -> None:
        mids = self.event_mids.get(seq)
        if mids is None:
            return
        if reason_code is not None and reason_code.is_failure:
            self._refused(seq, reason_code)
            return
        mids.discard(mid)
        if self.json_mid.get(seq) == mid:
            t = self.capture_mono.pop(seq, None)
            if t is not None and self.on_ack:
                self.on_ack(seq, time.monotonic() - t)
        if not mids:
            del self.event_mids[seq]
            self.json_mid.pop(seq, None)
            event_id = self.event_ids.get(seq)
            if self.verify_echo and self.echo_ok and event_id not in self.echoed:
                self.awaiting[event_id] = (seq, time.monotonic())  # deleted when it comes back
                return
            self.echoed.pop(event_id, None)
            self._delivered(seq)

    def _delivered(self, seq: int) -> None:
        """Every message of the event is acknowledged: delete it. On the network thread, so a failed
        delete (a full disk) is kept and retried by the flush loop: the event may then be sent
        twice (a reconnect before the retry succeeds), never lost."""
        self.event_ids.pop(seq, None)
        self.published += 1
        try:
            self.store.delete(seq)
            self.undeleted.pop(seq, None)
        except sqlite3.Error as e:
            self.undeleted[seq] = None
            self.delete_failures += 1
            self.throttled.log(logging.ERROR, "delete", "event store: cannot delete delivered event %d (%s); "
                               "retrying every %.0f s (it may be sent again, never lost)", seq, e, RETRY_DELETE_S)

    def _retry_deletes(self) -> None:
        """Delete again what was delivered while the store could not delete (lock held)."""
        for seq in list(self.undeleted):
            try:
                self.store.delete(seq)
            except sqlite3.Error:
                return
            del self.undeleted[seq]
        log.info("event store: delivered events deleted again after earlier failures")

    # -- publishing ------------------------------------------------------------------------------
    def notify_stored(self, seq: int, capture_mono: float) -> None:
        """An event was stored: remember its capture time (for latency) and publish it now."""
        with self.lock:
            self.capture_mono[seq] = capture_mono
            if len(self.capture_mono) > 10000:
                self.capture_mono.pop(next(iter(self.capture_mono)))
        self.wake.set()

    def set_retained(self, topic: str, payload: str) -> None:
        payload = redact(payload)
        with self.retained_lock:
            self.retained[topic] = payload
            if self.connected.is_set():
                self._publish_safely(topic, payload)

    def publish_now(self, topic: str, payload: str | bytes, qos: int = 0) -> None:
        if self.connected.is_set():
            self.client.publish(topic, redact(payload) if isinstance(payload, str) else payload, qos=qos)

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
            self.event_ids[ev.seq] = ev.id
            # All of this under the lock, before anything else is sent: a PUBACK (network thread)
            # finds its mid here or in ``early``, and a disconnect resets ``sent_upto`` after, not before.
            for m in mids:
                self.inflight[m] = ev.seq
            for m in mids:
                if m in self.early:
                    _, rc = self.early.pop(m)
                    self.inflight.pop(m, None)
                    self._acked(ev.seq, m, rc)
            self.sent_upto = max(self.sent_upto, ev.seq)
        crop = next((data for topic, data in ev.blobs if topic.endswith("/crop/0")), None)
        if crop is not None:  # Home Assistant's image entity shows the latest one (QoS 0, not tracked),
            # retained: after a restart of Home Assistant or the agent it still has one to show
            self.client.publish(self.topics.latest_crop(ev.topic.rsplit("/", 2)[-2]), crop, qos=0, retain=True)
        return True

    def _flush_loop(self) -> None:
        last_delete_retry = 0.0
        while not self.stop_flag.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            try:
                self._check_network_thread()
                if self.undeleted and time.monotonic() - last_delete_retry >= RETRY_DELETE_S:
                    last_delete_retry = time.monotonic()
                    with self.lock:
                        self._retry_deletes()
                if self.connected.is_set():
                    self._flush_once()
                self.flush_error = None
            except Exception as e:  # a bug or a store error: said, and tried again; the loop never ends
                self.flush_error = f"{type(e).__name__}: {e}"
                self.throttled.log(logging.ERROR, "flush", "MQTT: publishing from the store failed (%s); retrying",
                                   self.flush_error)
                self.stop_flag.wait(0.5)

    def network_thread_alive(self) -> bool:
        t = getattr(self.client, "_thread", None)  # paho keeps its loop_start() thread here
        return t is not None and t.is_alive()

    def _check_network_thread(self) -> None:
        """paho's network thread ended although nobody stopped it (an exception escaped a callback):
        say so, forget what was in flight (sent again from the store), and start it again."""
        if self.stop_flag.is_set() or self.network_thread_alive():
            return
        self.network_restarts += 1
        self.network_error = "paho's network thread ended unexpectedly (see the log above)"
        log.error("MQTT: the network thread has died; restarting it (restart %d): unacknowledged events are "
                  "sent again from the store", self.network_restarts)
        self._on_disconnect(self.client, None, None, "network thread died", None)
        try:
            self.client.loop_stop()
        except Exception:  # the dead thread is joined at once; nothing else can go wrong that matters
            pass
        try:
            self.client.reconnect_delay_set(min_delay=max(1, int(self.cfg.reconnect_min_s)),
                                            max_delay=int(self.cfg.reconnect_max_s))
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
            self.client.loop_start()
        except Exception as e:
            self.network_error = f"cannot restart the network thread: {e}"
            log.error("MQTT: %s", self.network_error)

    def health(self) -> str | None:
        """Why delivery cannot resume, or None. The watchdog is not fed while this says something."""
        if self.stop_flag.is_set():
            return None
        if not self.thread.is_alive():
            return "the MQTT flush thread has died"
        if not self.network_thread_alive():
            return f"the MQTT network thread is not running ({self.network_error or 'not started'})"
        return None

    def _flush_once(self) -> None:
        """Publish what the store holds beyond what is in flight, up to MAX_EVENTS_IN_FLIGHT events."""
        now = time.monotonic()
        with self.lock:
            for m in [m for m, (t, _) in self.early.items() if now - t > 60]:
                del self.early[m]
            for event_id, (seq, since) in list(self.awaiting.items()):
                if now - since > ECHO_TIMEOUT_S:
                    del self.awaiting[event_id]
                    self._refused(seq, f"acknowledged but not delivered back within {ECHO_TIMEOUT_S:.0f} s "
                                       "(MQTT 3.1.1 cannot report a refusal: an ACL?)")
            if self.refused and now - self.last_retry > RETRY_REFUSED_S:
                self.sent_upto = min(self.sent_upto, min(self.refused) - 1)  # offer them again
                self.refused.clear()
                self.last_retry = now
            room = MAX_EVENTS_IN_FLIGHT - len(self.event_mids)
            after = self.sent_upto
        if room <= 0:
            return
        for ev in self.store.pending(limit=room, after_seq=after):
            if not self._publish_event(ev):
                break
        with self.lock:
            more = len(self.event_mids) < MAX_EVENTS_IN_FLIGHT
        if more and self.store.pending(limit=1, after_seq=self.sent_upto):
            self.wake.set()

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), "reconnects": max(self.connects - 1, 0),
                "published_events": self.published, "refused_events": self.refusals,
                "refused_in_store": len(self.refused), "connect_failures": self.connect_failures,
                "last_error": redact(self.last_error) if self.last_error else None,
                "network_thread_alive": self.network_thread_alive(), "network_restarts": self.network_restarts,
                "delete_failures": self.delete_failures, "delivered_not_deleted": len(self.undeleted),
                "flush_error": self.flush_error}


def diagnose(cfg: MqttConfig, timeout: float = 3.0) -> str:
    """Why a connection to the broker fails: name resolution, TCP, or the TLS handshake."""
    import socket

    try:
        addrs = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve host {cfg.host!r} ({e.strerror})"
    try:
        sock = socket.create_connection(addrs[0][4][:2], timeout=timeout)
    except OSError as e:
        return f"TCP connection failed ({e.strerror or e}): is the broker running and reachable?"
    try:
        if cfg.tls:
            ctx = ssl.create_default_context(cafile=cfg.tls.ca_file)
            if cfg.tls.cert_file:
                ctx.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
            if cfg.tls.insecure:
                ctx.check_hostname = False
            try:
                ctx.wrap_socket(sock, server_hostname=cfg.host).close()
            except (ssl.SSLError, OSError) as e:
                return f"TLS handshake failed ({getattr(e, 'reason', None) or e}): check mqtt.tls.ca_file"
    finally:
        sock.close()
    return "the broker accepted TCP (and TLS) but the MQTT connection failed: see the broker's log"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
