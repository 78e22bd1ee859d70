"""Helpers for the plant-side tests (test_items.py, test_genicam.py, test_16bit.py): a broker
subscriber that records everything, an agent config writer and the agent as a process."""

import json
import os
import subprocess
import sys
import threading
import time

from .data import ROOT

PREFIX = "ganomaly/plant"
RESULT_SCHEMA = json.load(open(os.path.join(ROOT, "agent", "result.schema.json")))


def wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


class Subscriber:
    """A persistent-session QoS 1 subscriber recording everything under the prefix."""

    def __init__(self, port, client_id="plant-sub"):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.msgs, self.lock = [], threading.Lock()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.on_message = lambda c, u, m: self._add(m)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(PREFIX + "/#", qos=1)
        self.c.reconnect_delay_set(1, 2)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert wait(lambda: self.c.is_connected(), 20)
        time.sleep(0.3)

    def _add(self, m):
        with self.lock:
            self.msgs.append((m.topic, m.payload))

    def json(self, suffix):
        with self.lock:
            return [json.loads(p) for t, p in self.msgs if t.endswith(suffix)]

    def results(self, unique=True):
        """Results in arrival order; redeliveries (same id) dropped."""
        out, seen = [], set()
        for r in self.json("/result"):
            if not unique or r["id"] not in seen:
                seen.add(r["id"])
                out.append(r)
        return out

    def stats(self, camera):
        s = self.json("/stats")
        return s[-1]["cameras"][camera] if s else {}

    def last(self, topic):
        with self.lock:
            vals = [p.decode() for t, p in self.msgs if t == topic]
        return vals[-1] if vals else None

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def write_config(path, bundle, port, source, store, camera="cam1", cam_extra="", extra="", cam_keys="", mqtt_keys=""):
    """``source`` a dict of [cameras.source] keys; ``cam_keys`` the camera's own keys (e.g. window);
    ``cam_extra`` more TOML tables of the camera."""
    src = "\n".join(f"{k} = {json.dumps(v)}" for k, v in source.items())
    path.write_text(f"""device_id = "plant"
log_level = "INFO"
[model]
bundle = "{bundle}"
threads = 1
workers = 1
[mqtt]
port = {port}
prefix = "{PREFIX}"
stats_interval_s = 1.0
reconnect_min_s = 1
reconnect_max_s = 2
{mqtt_keys}
[store]
path = "{store}"
{extra}
[[cameras]]
name = "{camera}"
{cam_keys}
[cameras.source]
{src}
retry_min_s = 0.5
retry_max_s = 1.0
{cam_extra}
""")
    return str(path)


def start_agent(config, log_path, *args):
    return subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", str(config), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))


def stop(p, timeout=30):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def check_results(results):
    import jsonschema

    for r in results:
        jsonschema.validate(r, RESULT_SCHEMA)
