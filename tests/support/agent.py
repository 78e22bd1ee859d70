"""The agent as a process: its config, its launch, and what it leaves on the broker and in its store."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

import cv2
import numpy as np

from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

from .data import ROOT

# A shipped 16x16 bundle; with ALARM_ON_EVERY_ITEM an alarm proves an item was inspected.
BUNDLE = os.path.join(BUNDLE_DIR, "recon")
PREFIX = "ganomaly/test"
ALARM_ON_EVERY_ITEM = "threshold = -1000000.0\nk = 1\nn = 1\ncooldown_s = 0"
# The smallest config the agent accepts (a bundle and one camera), for the config checks.
MINIMAL_CONFIG = '[model]\nbundle = "b"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n'


def _line(key, value):
    return f"{key} = {json.dumps(value)}\n" if value is not None else ""


def write_config(path, port, source, store, bundle=BUNDLE, camera="scanner", decision=ALARM_ON_EVERY_ITEM,
                 roi=None, extra="", mqtt_extra="", threads=1, stats_interval_s=0.5, retry_s=(0.2, 0.5),
                 results=False, *, device_id="test", log_level=None, prefix=PREFIX, reconnect_s=(1, 2),
                 model_extra="", sections="", camera_keys="", camera_tables=""):
    """THE agent config writer of the tests: an agent.toml for one camera reading ``source`` (a dict
    of [cameras.source] keys) and publishing to the broker on ``port``.

    ``extra`` goes into [store], ``mqtt_extra`` into [mqtt], ``model_extra`` into [model],
    ``decision`` into [cameras.decision], ``roi`` (as "x = 0, y = 0, w = 8, h = 8") onto the camera,
    ``camera_keys`` (TOML lines, e.g. 'rotate = 90') onto the camera too; ``sections`` are further
    top-level tables ([http], [history], ...), ``camera_tables`` TOML after the camera: its own
    tables ([cameras.localisation], ...) or further [[cameras]]. ``None`` leaves a key or table out:
    decision=None no [cameras.decision], results=None no [cameras.items], retry_s / reconnect_s /
    stats_interval_s / prefix / log_level None the agent's defaults.
    Per-item results are off unless ``results``: these tests count alarm events in the store
    (results: tests/test_items.py)."""
    src = "\n".join(f"{k} = {json.dumps(v)}" for k, v in source.items())
    roi = f"roi = {{ {roi} }}" if roi else ""
    mqtt = f"port = {port}\n" + _line("prefix", prefix) + _line("stats_interval_s", stats_interval_s)
    if reconnect_s is not None:
        mqtt += f"reconnect_min_s = {reconnect_s[0]}\nreconnect_max_s = {reconnect_s[1]}\n"
    retry = f"retry_min_s = {retry_s[0]}\nretry_max_s = {retry_s[1]}\n" if retry_s is not None else ""
    decision = f"[cameras.decision]\n{decision}\n" if decision is not None else ""
    items = f"[cameras.items]\nresults = {'true' if results else 'false'}\n" if results is not None else ""
    path.write_text(f"""device_id = "{device_id}"
{_line("log_level", log_level)}[model]
bundle = "{bundle}"
threads = {threads}
{model_extra}
[mqtt]
{mqtt}{mqtt_extra}
[store]
path = "{store}"
{extra}
{sections}
[[cameras]]
name = "{camera}"
{roi}
{camera_keys}
[cameras.source]
{src}
{retry}{decision}{items}{camera_tables}
""")
    return str(path)


def wait(pred, timeout=90.0, ignore=()):
    """``pred()``'s first truthy value within ``timeout`` seconds (polled), else its last value;
    exceptions of the kinds in ``ignore`` count as not yet (a server still starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
        except ignore:
            v = None
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(0.05)


def start_agent(cfg, log, *args, drop_caps=False, env=None, append=False):
    """THE launcher: ``ganomaly-agent --config cfg [args]`` as a process, stdout dropped, stderr (the
    log) in ``log`` (appended to with ``append``, for restarts sharing one log)."""
    cmd = [sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", str(cfg), *args]
    if drop_caps:  # root without CAP_DAC_OVERRIDE: a chmod 000 file is unreadable, as for a service user
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "a" if append else "w"))


def stop(p, timeout=30):
    """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def logged_alarm_ids(log_path):
    return re.findall(r"ALARM ([0-9a-f]{32})", open(log_path).read())


class Subscriber:
    """THE test subscriber: a persistent-session QoS 1 client that records everything under a prefix
    as (topic, payload, retain)."""

    def __init__(self, port, prefix=PREFIX, client_id="test-sub"):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.msgs, self.lock = [], threading.Lock()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.on_message = lambda c, u, m: self._add(m)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(prefix + "/#", qos=1)
        self.c.reconnect_delay_set(1, 2)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self.wait(lambda: self.c.is_connected(), 20), "subscriber did not connect"
        time.sleep(0.3)

    def _add(self, m):
        with self.lock:
            self.msgs.append((m.topic, m.payload, m.retain))

    def topics(self, suffix):
        with self.lock:
            return [(t, p) for t, p, _ in self.msgs if t.endswith(suffix)]

    def json(self, suffix):
        """Payloads (non-empty) of topics ending in ``suffix``, decoded, in arrival order."""
        return [json.loads(p) for _, p in self.topics(suffix) if p]

    def alarms(self):
        return self.json("/alarm")

    def results(self, unique=True):
        """Per-item results in arrival order; redeliveries (same id) dropped unless not ``unique``."""
        out, seen = [], set()
        for r in self.json("/result"):
            if not unique or r["id"] not in seen:
                seen.add(r["id"])
                out.append(r)
        return out

    def stats(self, camera=None):
        """The last stats message (one camera's part of it with ``camera``); {} before any."""
        s = self.json("/stats")
        if not s:
            return {}
        return s[-1]["cameras"][camera] if camera else s[-1]

    def last(self, topic):
        with self.lock:
            vals = [p.decode() for t, p, _ in self.msgs if t == topic]
        return vals[-1] if vals else None

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait(self, pred, timeout):
        return wait(pred, timeout)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def last_stats(sub):
    s = sub.topics("/stats")
    return json.loads(s[-1][1]) if s else None


def stored(store):
    """Ids of the events still in the agent's store, oldest first."""
    try:
        db = sqlite3.connect(str(store))
        try:
            return [r[0] for r in db.execute("SELECT id FROM events ORDER BY seq")]
        finally:
            db.close()
    except sqlite3.Error:
        return []


def png(path, value=128, size=16):
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))
