"""Nothing lost, part 3: the rows of the third probe, each against real parts (real mosquitto on
loopback, a real tmpfs for the full disk, real files, real SQLite). The model is the shipped 16x16
bundle with a threshold that makes every inspected frame alarm (see test_no_silent_loss.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from support.agent import Subscriber, last_stats, png, start_agent, write_config
from support.data import ROOT
from ganomaly_edge.tools.broker import Mosquitto, free_port

pytestmark = pytest.mark.slow


def video(path, frames=50, size=16):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (size, size))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        vw.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    vw.release()
    return str(path)


def read(path):
    try:
        return open(path).read()
    except OSError:
        return ""


@pytest.fixture
def tmpfs(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    yield disk
    if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(disk)])


def fill(path, stop):
    """Another writer: takes every byte that comes free on the disk until ``stop`` is set."""
    with open(path, "ab", buffering=0) as f:
        while not stop.is_set():
            try:
                f.write(b"\0" * 65536)
            except OSError:
                try:
                    f.write(b"\0" * 4096)
                except OSError:
                    time.sleep(0.01)


def test_delivery_resumes_within_10_s_after_a_full_disk_is_freed(broker, tmpfs, tmp_path):
    """The delete after a PUBACK fails on the full disk; it must not kill delivery."""
    clip = video(tmp_path / "v.avi")
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "file", "uri": clip, "loop": True, "fps": 20.0},
                       tmpfs / "ev.db", camera="cam")
    sub = Subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent.log")
    stop = threading.Event()
    try:
        assert sub.wait(lambda: len(sub.alarms()) >= 20, 120), read(tmp_path / "agent.log")[-3000:]
        writer = threading.Thread(target=fill, args=(tmpfs / "filler", stop), daemon=True)
        writer.start()
        time.sleep(12)
        stop.set()
        writer.join()
        os.remove(tmpfs / "filler")
        freed = time.monotonic()
        before = {a["id"] for a in sub.alarms()}
        assert sub.wait(lambda: len({a["id"] for a in sub.alarms()} - before) >= 20, 10), (
            "no delivery within 10 s of space being freed", read(tmp_path / "agent.log")[-3000:])
        assert time.monotonic() - freed < 10
        assert p.poll() is None
        stats = last_stats(sub)
        assert stats["mqtt"]["connected"] and stats["mqtt"]["network_thread_alive"]
    finally:
        stop.set()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
        sub.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_network_thread_is_restarted_counted_and_delivery_resumes(broker, tmp_path):
    """The second line of defence: whatever ends paho's thread (here a callback that raises, with
    paho's own suppression off as before), the flush loop sees it, says it and starts it again."""
    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.store import EventStore
    from ganomaly_edge.agent.topics import Topics

    store = EventStore(str(tmp_path / "ev.db"))
    acks = []

    def on_ack(seq, dt):
        acks.append(seq)
        if len(acks) == 1:
            raise RuntimeError("a bug in a callback")

    pub = MqttPublisher(MqttConfig(port=broker.port, reconnect_min_s=1, reconnect_max_s=2), Topics("ganomaly/test"),
                        "test-agent", store, on_ack=on_ack)
    pub.client.suppress_exceptions = False
    sub = Subscriber(broker.port)
    pub.start()
    try:
        ids = {f"{i:032x}" for i in range(5)}
        for i in sorted(ids):
            pub.notify_stored(store.add(i, "cam", "ganomaly/test/cam/alarm", {"id": i}, []), time.monotonic())
        assert sub.wait(lambda: ids <= {a["id"] for a in sub.alarms()}, 20), pub.stats()
        assert sub.wait(lambda: store.depth()[0] == 0, 10)
        stats = pub.stats()
        assert stats["network_restarts"] == 1 and stats["network_thread_alive"], stats
        assert pub.health() is None
        assert "restarted 1 time" in sub.last("ganomaly/test/available/reason")
    finally:
        pub.stop(flush_timeout=1)
        store.close()
        sub.close()


def check_config(cfg):
    return subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, "--check-config"],
                          cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("key,value", [("discovery_prefix", "homeassistant/#"), ("discovery_prefix", "$SYS/ha"),
                                       ("discovery_prefix", "ha/+/x"), ("prefix", "a\\u0000b")])
def test_a_topic_segment_the_broker_would_reject_is_refused_at_check(tmp_path, key, value):
    cfg = write_config(tmp_path / "a.toml", 1883, {"kind": "folder", "uri": str(tmp_path)}, tmp_path / "ev.db")
    text = open(cfg).read()
    text = text.replace('prefix = "ganomaly/test"', "") + ""
    text = text.replace("[mqtt]\n", f'[mqtt]\n{key} = "{value}"\n')
    open(cfg, "w").write(text)
    r = check_config(cfg)
    assert r.returncode == 2 and f"mqtt.{key}" in r.stderr and ("wildcards" in r.stderr or "$" in r.stderr), r.stderr


def test_the_wildcard_discovery_prefix_no_longer_passes_the_check(tmp_path):
    cfg = write_config(tmp_path / "a.toml", 1883, {"kind": "folder", "uri": str(tmp_path)}, tmp_path / "ev.db",
                       mqtt_extra='discovery_prefix = "homeassistant/#"')
    r = check_config(cfg)
    assert r.returncode == 2 and "discovery_prefix" in r.stderr and "wildcards" in r.stderr, (r.stdout, r.stderr)


SECRET = "Pl4nted-S3cret"


def test_a_planted_password_leaves_by_no_output_channel(broker, tmp_path):
    """An RTSP URL and a GStreamer pipeline with a password, both failing to open (so their URIs
    land in errors, the status topics and the stats): the password is in none of the outputs."""
    import socket

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    closed = free_port()
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "url", "uri": f"rtsp://admin:{SECRET}@127.0.0.1:{closed}/s1",
                                                          "stall_timeout_s": 2.0}, tmp_path / "ev.db", camera="door",
                       mqtt_extra=f'username = "agent"\npassword = "{SECRET}"')
    with open(cfg, "a") as f:
        f.write(f'[[cameras]]\nname = "gate"\n[cameras.source]\nkind = "gstreamer"\nuri = "rtspsrc location='
                f'rtsp://127.0.0.1:{closed}/s2 user-id=admin user-pw={SECRET} ! decodebin ! appsink"\n'
                'retry_min_s = 0.2\nretry_max_s = 0.5\n')
    outputs = {}
    for flag in ("--print-config", "--check-config"):
        r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, flag], cwd=ROOT,
                           capture_output=True, text=True)
        outputs[flag] = r.stdout + r.stderr
    assert "admin:***@127.0.0.1" in outputs["--print-config"], outputs["--print-config"]
    everything = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="spy")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
    sub.on_message = lambda c, u, m: everything.append((m.topic, m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000", GANOMALY_LOG_STATS="1")
    p = subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    notes = []
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                notes.append(notify.recv(65536))
            except socket.timeout:
                pass
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        sub.loop_stop()
        sub.disconnect()
        notify.close()
    outputs["journal"] = out.decode(errors="replace")
    outputs["mqtt"] = "\n".join(f"{t} {pl.decode(errors='replace')}" for t, pl in everything)
    outputs["systemd"] = "\n".join(n.decode(errors="replace") for n in notes)
    assert "cannot open" in outputs["journal"] and "user-pw=***" in outputs["journal"], outputs["journal"][-3000:]
    assert "door/status/reason" in outputs["mqtt"] and "/stats" in outputs["mqtt"], outputs["mqtt"][:2000]
    leaked = {name: text for name, text in outputs.items() if SECRET in text}
    assert not leaked, {k: v[v.index(SECRET) - 200:v.index(SECRET) + 50] for k, v in leaked.items()}


def test_a_rewritten_file_is_a_new_item_3_of_3(broker, scans, tmp_path):
    """A scanner that writes scan.png, overwrites it, then deletes and writes it again: three items."""
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "settle_s": 0.2,
                                                          "rescan_s": 1.0}, tmp_path / "ev.db")
    sub = Subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent.log")
    try:
        png(scans / "scan.png", 10)
        assert sub.wait(lambda: len(sub.alarms()) == 1, 120), read(tmp_path / "agent.log")[-3000:]
        time.sleep(0.5)
        png(scans / "scan.png", 20)  # overwritten in place
        assert sub.wait(lambda: len(sub.alarms()) == 2, 20), read(tmp_path / "agent.log")[-3000:]
        time.sleep(0.5)
        os.remove(scans / "scan.png")
        time.sleep(0.5)
        png(scans / "scan.png", 30)  # deleted and written anew
        assert sub.wait(lambda: len(sub.alarms()) == 3, 20), read(tmp_path / "agent.log")[-3000:]
        alarms = sub.alarms()
        assert [a["item"] for a in alarms] == ["scan.png"] * 3 and len({a["id"] for a in alarms}) == 3
        time.sleep(2.5)  # listings after it (rescan_s = 1) find nothing new
        assert len(sub.alarms()) == 3
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        sub.close()


def _drop_share(share, mount_point):
    """Unmount the share (a bind mount stands in for NFS/SMB), or, where mounting is not permitted,
    take its files away: either way the folder lists empty."""
    if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode == 0:
        return "mount"
    for f in os.listdir(mount_point):
        os.rename(mount_point / f, share / f)
    return "move"


def _restore_share(share, mount_point, how):
    if how == "mount":
        subprocess.run(["mount", "--bind", str(share), str(mount_point)], check=True)
    else:
        for f in os.listdir(share):
            os.rename(share / f, mount_point / f)  # rename keeps size and mtime, as a share does


def test_a_share_that_drops_and_comes_back_is_not_inspected_again(broker, tmp_path):
    share, scans = tmp_path / "share", tmp_path / "scans"
    share.mkdir()
    scans.mkdir()
    for i in range(20):
        png(share / f"item_{i:02d}.png", 10 * i)
    mounted = subprocess.run(["mount", "--bind", str(share), str(scans)], capture_output=True).returncode == 0
    if not mounted:
        for f in os.listdir(share):
            os.rename(share / f, scans / f)
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "settle_s": 0.2,
                                                          "rescan_s": 1.0, "poll_interval_s": 0.2}, tmp_path / "ev.db")
    sub = Subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent.log")
    how = None
    try:
        assert sub.wait(lambda: len(sub.alarms()) == 20, 120), read(tmp_path / "agent.log")[-3000:]
        how = _drop_share(share, scans)
        assert os.listdir(scans) == []
        time.sleep(3)  # full listings of the empty folder (rescan_s = 1)
        _restore_share(share, scans, how)
        time.sleep(4)  # more full listings, inotify events for the moved files
        assert len(sub.alarms()) == 20, [a["item"] for a in sub.alarms()][20:]
        assert "lists no images although 20 processed" in read(tmp_path / "agent.log")
        png(scans / "new.png", 99)  # the folder still works: a new file is an item
        assert sub.wait(lambda: len(sub.alarms()) == 21, 20)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        sub.close()
        if mounted:
            subprocess.run(["umount", "-l", str(scans)], capture_output=True)


def _deploy_queue_settings():
    """What deploy/mosquitto.conf says about crash safety and queues (its listeners need install.sh)."""
    keys = ("autosave", "max_queued")
    return "".join(ln for ln in open(os.path.join(ROOT, "deploy", "mosquitto.conf")) if ln.startswith(keys))


def test_the_deploy_broker_config_queues_500_alarms_for_an_offline_subscriber(tmp_path):
    """500 acknowledged alarms, each with two crops and an overlay as the agent sends them, while a
    persistent QoS 1 subscriber is away: it gets all of them when it comes back."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    settings = _deploy_queue_settings()
    assert "max_queued_messages" in settings
    b = Mosquitto(workdir=str(tmp_path / "b"), autosave="", extra=settings).start()
    try:
        sub = Subscriber(b.port, client_id="plc-bridge")
        sub.close()  # offline, its session kept
        pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="agent")
        pub.max_inflight_messages_set(20)
        pub.connect("127.0.0.1", b.port)
        pub.loop_start()
        crop = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
        infos = []
        for i in range(500):
            eid = f"{i:032x}"
            infos.append(pub.publish("ganomaly/test/cam/alarm", json.dumps({"id": eid}), qos=1))
            for k in range(2):
                infos.append(pub.publish(f"ganomaly/test/cam/alarm/{eid}/crop/{k}", crop, qos=1))
            infos.append(pub.publish(f"ganomaly/test/cam/alarm/{eid}/overlay", crop, qos=1))
        for info in infos:
            info.wait_for_publish(30)  # every one acknowledged by the broker: the agent would delete it
        pub.loop_stop()
        pub.disconnect()
        sub = Subscriber(b.port, client_id="plc-bridge")
        assert sub.wait(lambda: len(sub.alarms()) >= 500 and len(sub.topics("/overlay")) >= 500, 60), \
            (len(sub.alarms()), len(sub.topics("/overlay")))
        assert len({a["id"] for a in sub.alarms()}) == 500 and len(sub.topics("/crop/1")) == 500
        sub.close()
        assert "dropped" not in open(os.path.join(b.dir, "broker.log")).read()
    finally:
        b.stop()


def bomb_tiff(path, w=30000, h=30000):
    """A TIFF of a few hundred bytes whose header claims w x h grey pixels in one deflate strip:
    complete as a file, so only the header's size can stop it."""
    import struct
    import zlib

    strip = zlib.compress(b"\0" * 65536)
    entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, None), (277, 3, 1),
               (278, 4, h), (279, 4, len(strip))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        value = data_at if value is None else value
        ifd += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip)


def test_a_tiff_claiming_more_than_max_pixels_is_skipped_before_decoding(broker, scans, tmp_path):
    bomb_tiff(scans / "a_bomb.tif")
    cv2.imwrite(str(scans / "b_good.tif"), np.full((16, 16, 3), 90, np.uint8))
    good = cv2.imencode(".tiff", np.full((16, 16, 3), 30, np.uint8))[1].tobytes()
    (scans / "c_cut.tiff").write_bytes(good[:len(good) // 2])  # a scanner that died mid-write
    cfg = write_config(tmp_path / "a.toml", broker.port, {"kind": "folder", "uri": str(scans), "settle_s": 0.1,
                                                          "poll_interval_s": 0.1}, tmp_path / "ev.db")
    sub = Subscriber(broker.port)
    p = start_agent(cfg, tmp_path / "agent.log")
    try:
        assert sub.wait(lambda: (last_stats(sub) or {}).get("cameras", {}).get("scanner", {}).get("skipped") == 2, 120), \
            read(tmp_path / "agent.log")[-3000:]
        assert [a["item"] for a in sub.alarms()] == ["b_good.tif"]
        log = read(tmp_path / "agent.log")
        assert ("a_bomb.tif: its TIFF header claims 30000x30000 = 900,000,000 pixels, above source.max_pixels "
                "(100,000,000)") in log, log[-3000:]
        assert "c_cut.tiff: truncated (TIFF" in log
        assert last_stats(sub)["peak_rss_mb"] < 900  # nothing near 900 MB was ever allocated
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        sub.close()


def test_every_format_the_folder_reads_has_its_size_read_from_the_header(tmp_path):
    from ganomaly_edge.agent.imagefile import SkipFile, complete, header_size, read_image_file

    img = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".tif", ".webp"):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert header_size(data) == (30, 40), ext
        assert complete(data) and not complete(data[:len(data) - 40]), ext
        path = tmp_path / f"x{ext}"
        path.write_bytes(data)
        assert read_image_file(str(path), 3, 1200).shape == (40, 30, 3)
        with pytest.raises(SkipFile, match=r"claims 30x40 = 1,200 pixels, above source.max_pixels \(1,199\)"):
            read_image_file(str(path), 3, 1199)
    # A format OpenCV decodes but whose size is not read first (PNM, JPEG 2000, ...) is refused, named
    path = tmp_path / "disguised.png"
    path.write_bytes(cv2.imencode(".ppm", img)[1].tobytes())
    with pytest.raises(SkipFile, match="not an image format whose size can be checked before decoding"):
        read_image_file(str(path), 3, 10**8)


def test_the_store_is_private_whatever_the_umask(tmp_path):
    """By hand (umask 022) events.db, which holds crops, came out 0644."""
    import stat

    from ganomaly_edge.agent.store import EventStore

    old = os.umask(0o022)
    try:
        store = EventStore(str(tmp_path / "new" / "events.db"))
        store.add("0" * 32, "cam", "t/cam/alarm", {"id": "0" * 32}, [("t/cam/alarm/0/crop/0", b"jpeg")])
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").iterdir()}
        store.close()
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
        assert set(modes) >= {"events.db", "events.db-wal", "events.db-shm", "events.db-reserve"}, modes
        assert all(m == 0o600 for m in modes.values()), {k: oct(m) for k, m in modes.items()}
        # a store made earlier, world-readable, is tightened when opened
        loose = tmp_path / "old.db"
        EventStore(str(loose)).close()
        os.chmod(loose, 0o644)
        EventStore(str(loose)).close()
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize("use_inotify", [True, False])
def test_a_file_rewritten_in_place_is_a_new_item_with_or_without_inotify(tmp_path, monkeypatch, use_inotify):
    """Polling sees a directory change only by its mtime, which a rewrite in place leaves alone: the
    full listing every rescan_s compares each processed file's size and mtime."""
    from ganomaly_edge.agent import inotify
    from ganomaly_edge.agent.config import SourceConfig
    from ganomaly_edge.agent.sources import FolderSource

    if not use_inotify:
        monkeypatch.setattr(inotify, "Watch", lambda root: (_ for _ in ()).throw(inotify.Unavailable("off")))
    folder = tmp_path / "scans"
    folder.mkdir()
    png(folder / "scan.png", 10)
    src = FolderSource(SourceConfig(kind="folder", uri=str(folder), poll_interval_s=0.05, settle_s=0.0,
                                    rescan_s=0.5))

    def next_frame(timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = src.read()
            if frame is not None:
                return frame
        return None

    first = next_frame()
    assert first is not None and first.image.mean() == 10
    assert next_frame(1.0) is None
    png(folder / "scan.png", 20)  # the same name, the same inode, another image
    second = next_frame()
    assert second is not None and second.image.mean() == 20 and second.stamp != first.stamp
    assert next_frame(1.5) is None  # and once only
    src.close()
