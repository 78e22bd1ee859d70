"""Agent parts on their own: decision, geometry, localisation, event store, configuration."""

import os
import time

import cv2
import numpy as np
import pytest

from ganomaly_edge.agent.config import ConfigError, LocalisationConfig, RoiConfig, Settings, load_settings
from ganomaly_edge.agent.decision import Debouncer
from ganomaly_edge.agent.geometry import View, model_input
from ganomaly_edge.agent.localise import boxes_in_frame, crops, overlay, regions
from ganomaly_edge.agent.store import EventStore
from support.data import ROOT


def test_k_of_n_raises_one_alarm_per_passing_defect():
    d = Debouncer(threshold=1.0, k=2, n=3, cooldown_s=0.0)
    scores = [0.1, 1.5, 0.2, 1.6, 1.7, 1.8, 1.9, 0.1, 0.2, 0.1, 2.0, 2.1]
    fired = [i for i, s in enumerate(scores) if d.update(s, float(i), i) is not None]
    assert fired == [3, 11]  # one alarm for frames 3..6, re-armed after the window cleared


def test_alarm_carries_the_most_anomalous_frame_of_the_window():
    d = Debouncer(1.0, 2, 3, 0.0)
    d.update(3.0, 0.0, "a")
    assert d.update(1.2, 1.0, "b") == "a"


def test_cooldown():
    d = Debouncer(1.0, 1, 1, cooldown_s=5.0)
    assert d.update(2, 0.0, 1) is not None
    assert d.update(2, 1.0, 2) is None  # inside the cooldown
    assert d.update(2, 6.0, 3) is not None


def test_single_frame_items_each_alarm():
    d = Debouncer(1.0, 1, 1, 0.0)
    assert [d.update(2.0, float(i), i) for i in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_boxes_map_back_through_roi_rotation_and_resize(rotate):
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[50:60, 70:90] = 255  # the "defect" in frame coordinates
    roi = RoiConfig(x=40, y=20, w=100, h=80)
    x, view = model_input(frame, roi, rotate, 32, 1)
    ys, xs = np.nonzero(x[..., 0] > 60)
    box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    X, Y, W, H = view.to_frame(box)
    assert abs(X - 70) <= 4 and abs(Y - 50) <= 4 and abs(X + W - 90) <= 4 and abs(Y + H - 60) <= 4


def test_roi_outside_frame_is_a_clear_error():
    from ganomaly_edge.agent.geometry import FrameSizeError

    with pytest.raises(FrameSizeError, match="does not fit a 50x50 frame"):
        model_input(np.zeros((50, 50, 3), np.uint8), RoiConfig(x=10, y=10, w=64, h=64), 0, 32, 3)


def test_localisation_finds_the_planted_region():
    rng = np.random.default_rng(0)
    res = rng.uniform(0, 0.05, (32, 32)).astype(np.float32)
    res[20:26, 5:11] = 0.8
    res[3:5, 25:27] = 0.5
    cfg = LocalisationConfig()
    r = regions(res, cfg)
    (x, y, w, h), s = r[0]
    assert 3 <= x <= 6 and 18 <= y <= 21 and s > 0.3
    view = View(0, 0, 64, 64, 0, 32, 32)
    boxes = boxes_in_frame(res, view, cfg)
    assert boxes[0].x == pytest.approx(2 * x, abs=1) and boxes[0].w >= 10
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    jpgs = crops(frame, boxes, cfg)
    assert len(jpgs) == len(boxes) and cv2.imdecode(np.frombuffer(jpgs[0], np.uint8), cv2.IMREAD_COLOR) is not None
    ov = cv2.imdecode(np.frombuffer(overlay(frame, res, view, boxes, cfg), np.uint8), cv2.IMREAD_COLOR)
    assert ov.shape == (64, 64, 3)


def test_overlay_colour_table_matches_opencv_jet():
    from ganomaly_edge.agent.localise import _JET

    heat = np.random.default_rng(1).integers(0, 256, (40, 52), dtype=np.uint8)
    assert np.array_equal(_JET[heat], cv2.applyColorMap(heat, cv2.COLORMAP_JET))


def test_store_keeps_order_across_reopen_and_evicts_oldest(tmp_path):
    path = str(tmp_path / "ev.db")
    st = EventStore(path, max_events=3)
    for i in range(5):
        st.add(f"id{i}", "cam", "t/alarm", {"i": i}, [("t/crop/0", b"\xff\xd8" + bytes([i]))])
    assert st.depth()[0] == 3 and st.counter("evicted") == 2
    st.close()
    st = EventStore(path, max_events=3)
    evs = st.pending()
    assert [e.id for e in evs] == ["id2", "id3", "id4"]
    assert evs[0].blobs == [("t/crop/0", b"\xff\xd8\x02")]
    st.delete(evs[0].seq)
    assert [e.id for e in st.pending()] == ["id3", "id4"]
    assert st.db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 2  # cascade
    assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_checkpoints_off_the_hot_path(tmp_path):
    """Inserts and deletes never run SQLite's automatic checkpoint (an fsync inside an alarm or a
    PUBACK); the background thread keeps the log from growing and truncates it on close."""
    path = str(tmp_path / "ev.db")
    st = EventStore(path, checkpoint_s=0.05)
    assert st.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(300):  # ~2,400 pages through the log, past the 1,000-page automatic mark
        seq = st.add(f"id{i}", "cam", "t/alarm", {"i": i}, [("t/crop/0", os.urandom(8000))])
        if i % 2:
            st.delete(seq)
    deadline = time.time() + 5
    while st.checkpoints == 0 and time.time() < deadline:
        time.sleep(0.02)
    assert st.checkpoints > 0
    st.close()
    wal = path + "-wal"
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0
    st = EventStore(path)
    assert [e.id for e in st.pending(limit=3)] == ["id0", "id2", "id4"] and st.depth()[0] == 150
    st.close()


def test_store_evicts_by_age_and_size(tmp_path):
    st = EventStore(str(tmp_path / "ev.db"), max_bytes=3000, max_age_s=60)
    st.add("old", "c", "t", {}, [], created=time.time() - 120)
    st.add("a", "c", "t", {}, [("x", b"0" * 2000)])
    st.add("b", "c", "t", {}, [("x", b"0" * 2000)])
    assert [e.id for e in st.pending()] == ["b"]


def test_every_config_field_is_described_and_documented():
    text = open(os.path.join(ROOT, "config.example.toml")).read()

    def walk(model, path=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}{name} has no description"
            ann = field.annotation
            sub = getattr(ann, "model_fields", None)
            args = getattr(ann, "__args__", ())
            inner = [a for a in args if hasattr(a, "model_fields")]
            if sub is None and inner:
                ann, sub = inner[0], inner[0].model_fields
            assert name in text, f"config.example.toml does not document {path}{name}"
            if sub is not None:
                walk(ann, f"{path}{name}.")

    walk(Settings)


def test_example_config_is_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(os.path.join(ROOT, "config.example.toml"))
    assert s.prefix.startswith("ganomaly/") and s.cameras


def test_unknown_keys_and_bad_values_are_rejected(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nbundle = "b"\nbogus = 1\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n')
    with pytest.raises(ConfigError, match=r"model\.bogus: Extra inputs are not permitted"):
        load_settings(str(p))
    p.write_text('[model]\nbundle = "b"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n')
    monkeypatch.setenv("GANOMALY_MQTT__PORT", "notaport")
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        load_settings(str(p))
    monkeypatch.setenv("GANOMALY_MQTT__PORT", "8883")
    monkeypatch.setenv("GANOMALY_MQTT__HOST", "broker.example")
    s = load_settings(str(p))
    assert (s.mqtt.host, s.mqtt.port) == ("broker.example", 8883)


def test_password_from_systemd_credentials(tmp_path, monkeypatch):
    from ganomaly_edge.agent.config import MqttConfig

    (tmp_path / "mqtt-pass").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert MqttConfig(username="u", password_file="mqtt-pass").resolved_password() == "s3cret"


def test_parallel_workers_decide_in_frame_order(tiny_bundle, tmp_path):
    """Several inference workers score batches side by side (ONNX Runtime on the CPU); debounce
    and cooldown must still see every frame once, in capture order."""
    from ganomaly_edge.agent.config import CameraConfig
    from ganomaly_edge.agent.pipeline import CameraPipeline
    from ganomaly_edge.agent.topics import Topics
    from ganomaly_edge.engine import load

    video = str(tmp_path / "v.avi")
    vw = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 25, (48, 48))
    rng = np.random.default_rng(0)
    for _ in range(90):
        vw.write(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    vw.release()
    eng = load(tiny_bundle, "onnxruntime", threads=1)
    assert eng.concurrent
    cam = CameraConfig(name="c", source={"kind": "file", "uri": video})
    store = EventStore(str(tmp_path / "ev.db"))
    p = CameraPipeline(cam, eng, store, None, Topics("t"), 0, max_batch=3, workers=3)
    seen = []
    deb = p.inference.debounce
    update = deb.update
    deb.update = lambda score, t, payload: (seen.append(payload[0].frame.index), update(score, t, payload))[1]
    p.start()
    assert p.finished.wait(60)
    p.join(5)
    store.close()
    assert len(p.inference.threads) == 3 and p.q.maxsize == 9
    assert seen == list(range(90)) and p.stats.processed.count == 90


def test_alarm_schema_file_is_generated_from_the_typed_event():
    from ganomaly_edge.agent.alarm import SCHEMA_PATH, schema_text

    assert open(SCHEMA_PATH).read() == schema_text(), \
        "agent/alarm.schema.json is stale: run python -m ganomaly_edge.agent.alarm"


def test_every_topic_comes_from_one_helper():
    from ganomaly_edge.agent.topics import Topics

    t = Topics("plant/line1")
    assert t.available() == "plant/line1/available" and t.stats() == "plant/line1/stats"
    assert t.crop("cam", "ab12", 2) == "plant/line1/cam/alarm/ab12/crop/2"
    assert t.overlay("cam", "ab12") == "plant/line1/cam/alarm/ab12/overlay"
    assert t.status("cam") == "plant/line1/cam/status" and t.alarm("cam") == "plant/line1/cam/alarm"


BASE = '[model]\nbundle = "b"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n'


@pytest.mark.parametrize("section,line,field", [
    ("cameras.decision", "threshold = nan", "threshold"),
    ("cameras.decision", "threshold = -inf", "threshold"),
    ("mqtt", "reconnect_max_s = inf", "reconnect_max_s"),
    ("store", "max_mb = inf", "max_mb"),
    ("mqtt", 'host = ""', "host"),
    ("model", "threads = 100000", "threads"),
    ("store", 'path = ""', "path"),
    ("mqtt", 'prefix = "plant/#"', "prefix"),
    ("mqtt", 'prefix = "$SYS/x"', "prefix"),
])
def test_values_that_make_no_sense_are_refused(tmp_path, section, line, field):
    text = BASE.replace("[model]\n", "[model]\n" + (line + "\n" if section == "model" else ""))
    if section != "model":
        text += f"[{section}]\n{line}\n" if section != "cameras.decision" else f"[cameras.decision]\n{line}\n"
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=field):
        load_settings(str(p))


def test_store_path_must_name_a_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE + f'[store]\npath = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(str(p))


def test_check_config_opens_the_password_file_the_store_and_checks_the_prefix(tmp_path, tiny_bundle):
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    good = (f'[model]\nbundle = "{tiny_bundle}"\n[mqtt]\nusername = "u"\npassword_file = "{tmp_path}/pw"\n'
            f'[store]\npath = "{tmp_path}/db/events.db"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\n'
            'uri = "x"\n')

    def check(text):
        cfg.write_text(text)
        return subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "-c", str(cfg), "--check-config"],
                              capture_output=True, text=True)

    r = check(good)
    assert r.returncode == 2 and "password_file" in r.stderr and "cannot be read" in r.stderr
    (tmp_path / "pw").write_text("secret\n")
    r = check(good)
    assert r.returncode == 0 and os.path.exists(tmp_path / "db" / "events.db"), r.stderr
    r = check(good.replace(f"{tmp_path}/db/events.db", "/proc/no/events.db"))
    assert r.returncode == 2 and "cannot open the event store" in r.stderr


def test_print_config_exits_and_hides_secrets(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + '[mqtt]\nusername = "u"\npassword = "hunter2"\n')
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "-c", str(cfg), "--print-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "hunter2" not in r.stdout and "**********" in r.stdout


def test_a_puback_wakes_the_flush_loop(tmp_path):
    """The backlog drains at the broker's pace: each acknowledgement lets the next event go at once,
    not after the flush loop's poll (it drained at 32 events/s that way)."""
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.packettypes import PacketTypes

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics

    store = EventStore(str(tmp_path / "ev.db"))
    pub = MqttPublisher(MqttConfig(), Topics("t"), "c", store)
    seq = store.add("e1", "cam", "t/cam/alarm", {"i": 1}, [])
    pub.event_mids[seq], pub.json_mid[seq], pub.inflight[7] = {7}, 7, seq
    pub.wake.clear()
    pub._on_publish(pub.client, None, 7, ReasonCode(PacketTypes.PUBACK, identifier=0), None)
    assert pub.wake.is_set() and store.depth()[0] == 0
    seq = store.add("e2", "cam", "t/cam/alarm", {"i": 2}, [])
    pub.event_mids[seq], pub.json_mid[seq], pub.inflight[8] = {8}, 8, seq
    pub._on_publish(pub.client, None, 8, ReasonCode(PacketTypes.PUBACK, identifier=0x87), None)  # not authorized
    assert store.depth()[0] == 1 and pub.stats()["refused_events"] == 1 and seq in pub.refused
    store.close()


def test_events_with_and_without_crops_go_out_once_each_and_leave_the_store(tmp_path):
    """Against a real mosquitto: an event is registered as in flight whether or not it has a crop,
    so it is sent once, its PUBACK deletes it, and the flush loop moves on to the next."""
    from support.agent import Subscriber

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics
    from ganomaly_edge.tools.broker import Mosquitto

    with Mosquitto(workdir=str(tmp_path / "broker")) as broker:
        sub = Subscriber(broker.port, prefix="t")
        store = EventStore(str(tmp_path / "ev.db"))
        topics = Topics("t")
        for i in range(6):
            blobs = [("t/cam/alarm/crop/0", b"\xff\xd8" + bytes([i]))] if i % 2 else []
            store.add(f"e{i}", "cam", topics.alarm("cam"), {"id": f"e{i}"}, blobs)
        pub = MqttPublisher(MqttConfig(port=broker.port), topics, "agent", store)
        pub.start()
        deadline = time.monotonic() + 20
        while store.depth()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # time for any redelivery to show
        pub.stop(flush_timeout=1)
        sub.close()
        assert store.depth()[0] == 0
        assert sorted(e["id"] for e in sub.alarms()) == [f"e{i}" for i in range(6)]  # each exactly once
        store.close()


def test_a_disconnect_while_an_event_goes_out_sends_it_again_after_reconnecting(tmp_path):
    """The connection can drop between an event's publishes and the last message sent for it (the
    latest-crop image). The disconnect forgets what was in flight; the event must then be offered
    again from the store, not skipped because it was counted as sent after the reset."""
    from types import SimpleNamespace

    import paho.mqtt.client as mqtt

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics

    store = EventStore(str(tmp_path / "ev.db"))
    topics = Topics("t")
    pub = MqttPublisher(MqttConfig(), topics, "c", store)
    store.add("e1", "cam", topics.alarm("cam"), {"id": "e1"}, [("t/cam/alarm/crop/0", b"\xff\xd8")])
    mids = iter(range(1, 100))

    def publish(topic, payload, qos=0, retain=False):
        if topic == topics.latest_crop("cam"):
            pub._on_disconnect(pub.client, None, None, mqtt.ReasonCode(mqtt.PacketTypes.DISCONNECT, identifier=0x8B),
                               None)  # the broker went away
        return SimpleNamespace(rc=mqtt.MQTT_ERR_SUCCESS, mid=next(mids))

    pub.client.publish = publish
    pub.connected.set()
    (ev,) = store.pending(limit=1, after_seq=0)
    assert pub._publish_event(ev)
    assert pub.sent_upto == 0 and not pub.inflight and not pub.event_mids
    assert [e.id for e in store.pending(limit=5, after_seq=pub.sent_upto)] == ["e1"]  # offered again
    store.close()


@pytest.mark.parametrize("use_inotify", [True, False])
def test_a_quiet_folder_is_not_listed_again_however_many_files_it_has_seen(tmp_path, use_inotify, monkeypatch):
    """The folder's cost per poll must not grow with its history: new files come from inotify, or,
    without it, a directory is listed again only when its modification time changes."""
    from ganomaly_edge.agent import inotify

    if not use_inotify:
        monkeypatch.setattr(inotify, "Watch", lambda root: (_ for _ in ()).throw(inotify.Unavailable("off")))
    from ganomaly_edge.agent.config import SourceConfig
    from ganomaly_edge.agent.sources import FolderSource

    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(10000):
        (folder / f"old_{i:05d}.png").write_bytes(b"")
    src = FolderSource(SourceConfig(kind="folder", uri=str(folder), poll_interval_s=0.01, settle_s=0.0),
                       seen={str(folder / f"old_{i:05d}.png"): "" for i in range(10000)})
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        src.read()
    assert src.scans == 1  # one listing at the start, none while nothing changes
    cv2.imwrite(str(folder / "new.png"), np.zeros((8, 8, 3), np.uint8))
    frame = None
    deadline = time.monotonic() + 5
    while frame is None and time.monotonic() < deadline:
        frame = src.read()
    assert frame is not None and frame.name == "new.png"
    assert src.scans == (1 if use_inotify else 2)  # inotify: found without listing the 10,000


def test_camera_keys_can_be_overridden_from_the_environment_by_name(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nbundle = "b"\n[[cameras]]\nname = "conveyor"\n[cameras.source]\nkind = "camera"\n'
                 'uri = "0"\n[[cameras]]\nname = "xray"\n[cameras.source]\nkind = "folder"\nuri = "/srv/scans"\n')
    monkeypatch.setenv("GANOMALY_CAMERAS__conveyor__SOURCE__URI", "/dev/video2")
    monkeypatch.setenv("GANOMALY_CAMERAS__CONVEYOR__DECISION__K", "3")
    monkeypatch.setenv("GANOMALY_CAMERAS__xray__ROTATE", "90")
    monkeypatch.setenv("GANOMALY_MQTT__HOST", "broker.plant")  # the rest of the environment still applies
    s = load_settings(str(p))
    conv, xray = s.cameras
    assert conv.source.uri == "/dev/video2" and conv.decision.k == 3 and xray.rotate == 90
    assert s.mqtt.host == "broker.plant" and xray.source.uri == "/srv/scans"
    monkeypatch.setenv("GANOMALY_CAMERAS__nosuch__ROTATE", "90")
    with pytest.raises(ConfigError, match="no camera named 'nosuch'"):
        load_settings(str(p))


def test_default_client_id_is_the_machine_id_not_the_host_name(tmp_path):
    import socket

    from ganomaly_edge.agent.config import machine_id

    p = tmp_path / "c.toml"
    p.write_text(BASE)
    s = load_settings(str(p))
    assert s.client_id == f"ganomaly-{machine_id()[:14]}" and socket.gethostname() not in s.client_id
    assert len(s.client_id) <= 23  # MQTT 3.1.1's guaranteed client id length


def test_log_lines_carry_journald_priorities_under_systemd(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "empty"
    folder.mkdir()
    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\nbundle = "{BUNDLE_DIR}/recon"\n[mqtt]\nport = 1\n[store]\npath = "{tmp_path}/e.db"\n'
                   f'[[cameras]]\nname = "a"\n[cameras.source]\nkind = "folder"\nuri = "{folder}"\nwatch = false\n')
    env = dict(os.environ, JOURNAL_STREAM="8:12345")
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "-c", str(cfg), "--flush-timeout", "0"],
                       capture_output=True, text=True, env=env, timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 0 and lines and all(ln[:3] in ("<6>", "<4>", "<3>", "<7>") for ln in lines), lines[:5]
    assert any(ln.startswith("<3>") and "cannot connect" in ln for ln in lines)  # an error is an error
