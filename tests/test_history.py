"""Alarm history (agent/history.py) on real SQLite and real image files: kept, listed, verdicts,
bounded by age and size with every eviction counted, 0600 files, restarts, a full disk."""

import os
import stat
import subprocess
import time
import uuid

import cv2
import numpy as np
import pytest

from ganomaly_edge.agent.history import BadVerdict, History, UnknownAlarm


def jpeg(seed: int, side: int = 64) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (side, side, 3), np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def png(seed: int, side: int = 64) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (side, side), np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def event(camera="cam1", ts=None, score=1.5, item=None):
    eid = uuid.uuid4().hex
    return {"id": eid, "ts": ts if ts is not None else time.time(), "device_id": "d", "camera": camera,
            "frame_index": 3, "score": score, "raw_score": 0.2, "threshold": 1.0,
            "boxes": [{"x": 1, "y": 2, "w": 10, "h": 12, "residual": 0.3}],
            "crops": [f"p/{camera}/alarm/{eid}/crop/0"], "overlay": f"p/{camera}/alarm/{eid}/overlay",
            "frame_size": {"w": 64, "h": 64}, "item": item, "model": {"name": "tiny", "hash": "abc"}, "schema": 2}


def add(h, seed=0, **kw):
    ev = event(**kw)
    blobs = [(ev["crops"][0], jpeg(seed)), (ev["overlay"], jpeg(seed + 1))]
    assert h.add(ev, blobs, frame=(png(seed), "png"))
    return ev


def test_kept_listed_and_read_back_with_private_files(tmp_path):
    h = History(str(tmp_path / "hist"))
    a = add(h, 0, camera="cam1", ts=time.time() - 10, score=1.2, item="a.png")
    b = add(h, 1, camera="cam2", score=3.0)
    rows = h.list()
    assert [r["id"] for r in rows] == [b["id"], a["id"]]  # newest first
    assert rows[1]["item"] == "a.png" and rows[1]["verdict"] is None and rows[1]["model"]["name"] == "tiny"
    assert [r["id"] for r in h.list(camera="cam1")] == [a["id"]]
    assert [r["id"] for r in h.list(min_score=2.0)] == [b["id"]]
    assert [r["id"] for r in h.list(since=time.time() - 5)] == [b["id"]]
    got = h.get(a["id"])
    assert set(got["images"]) == {"frame", "overlay", "crop-0", "thumb"}
    frame = cv2.imdecode(np.frombuffer(open(got["images"]["frame"], "rb").read(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (64, 64)  # lossless: the very pixels
    assert np.array_equal(frame, cv2.imdecode(np.frombuffer(png(0), np.uint8), cv2.IMREAD_UNCHANGED))
    for root, dirs, files in os.walk(tmp_path / "hist"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f
    assert h.totals()["alarms"] == 2 and h.counter("added") == 2


def test_verdicts_survive_a_restart_and_give_precision(tmp_path):
    h = History(str(tmp_path / "hist"))
    evs = [add(h, i) for i in range(3)]
    seen = []
    h.on_verdict = seen.append
    assert h.set_verdict(evs[0]["id"], "defect")["verdict"] == "defect"
    h.set_verdict(evs[1]["id"], "false_alarm", source="mqtt")
    assert [a["id"] for a in seen] == [evs[0]["id"], evs[1]["id"]]
    h.close()
    h = History(str(tmp_path / "hist"))
    assert h.get(evs[1]["id"])["verdict"] == "false_alarm" and h.get(evs[1]["id"])["verdict_source"] == "mqtt"
    assert [a["id"] for a in h.list(verdict="unreviewed")] == [evs[2]["id"]]
    assert [a["id"] for a in h.list(verdict="false_alarm")] == [evs[1]["id"]]
    p = h.precision()["cam1"]
    assert (p["reviewed"], p["defect"], p["false_alarm"], p["precision"]) == (2, 1, 1, 0.5)


def test_bad_verdicts_and_ids_write_nothing(tmp_path):
    h = History(str(tmp_path / "hist"))
    ev = add(h)
    with pytest.raises(BadVerdict, match="defect"):
        h.set_verdict(ev["id"], "maybe")
    with pytest.raises(UnknownAlarm):
        h.set_verdict(uuid.uuid4().hex, "defect")
    with pytest.raises(UnknownAlarm):
        h.set_verdict("../../etc/passwd", "defect")
    assert h.get(ev["id"])["verdict"] is None and h.counter("verdicts") == 0
    assert h.image(ev["id"], "../history.db") is None
    assert h.image("../" + ev["id"], "frame") is None
    assert h.image(ev["id"], "frame").startswith(str(tmp_path / "hist" / "files"))


def test_eviction_by_age_and_size_is_counted_and_removes_files(tmp_path):
    h = History(str(tmp_path / "hist"), max_days=1, max_mb=0.2)
    old = add(h, 0, ts=time.time() - 2 * 86400)
    assert h.get(old["id"]) is None and not os.path.exists(tmp_path / "hist" / "files" / old["id"])
    assert h.counter("evicted_age") == 1
    evs = [add(h, i) for i in range(40)]  # about 25 KB each: far over 0.2 MB
    assert h.counter("evicted_size") > 0
    assert h.totals()["bytes"] <= 0.2 * (1 << 20)
    assert h.get(evs[-1]["id"]) is not None and h.get(evs[0]["id"]) is None  # oldest first
    assert len(os.listdir(tmp_path / "hist" / "files")) == h.totals()["alarms"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_evicts_oldest_and_never_raises(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    try:
        h = History(str(mnt / "hist"), max_mb=100)  # the size limit far above the disk: the disk fills first
        kept = 0
        for i in range(60):  # ~60 x 25 KB > 1 MB
            ev = event()
            kept += h.add(ev, [(ev["crops"][0], jpeg(i)), (ev["overlay"], jpeg(i + 1))], frame=(png(i), "png"))
        assert kept > 40  # room made by dropping the oldest
        assert h.counter("evicted_disk_full") > 0
        assert h.list(limit=1)[0]["id"] == ev["id"]  # the newest is kept
        h.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_on_a_full_disk_the_outbox_takes_room_from_history_first(tmp_path):
    """Undelivered alarms come before kept ones: the store frees history's oldest, never its own."""
    from ganomaly_edge.agent.store import EventStore

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    try:
        h = History(str(mnt / "history"), max_mb=100)
        for i in range(400):  # fill the disk with history (until it evicts its own)
            add(h, i)
            if h.counter("evicted_disk_full"):
                break
        before = h.totals()["alarms"]
        st = EventStore(str(mnt / "ev.db"), max_bytes=100 << 20)
        st.free_elsewhere = h.free
        blob = np.random.default_rng(0).integers(0, 255, 30000, np.uint8).tobytes()
        for i in range(20):  # 600 KB of undelivered alarms
            st.add(f"e{i}", "cam", "t", {"i": i}, [("t/crop/0", blob)])
        assert st.depth()[0] == 20 and st.counters()["evicted_disk_full"] == 0
        assert h.totals()["alarms"] < before  # history gave the room
        st.close()
        h.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_small_private_thumbnail_is_kept_beside_each_alarm_and_evicted_with_it(tmp_path):
    """thumb.jpg, made once when the alarm is kept: the first crop scaled to THUMB_PX a side (a
    large crop shrinks, a small one is not enlarged), 0600, and gone with its alarm."""
    from ganomaly_edge.agent.history import THUMB_PX

    h = History(str(tmp_path / "hist"), max_mb=1.0)
    ev = event()
    big = cv2.imencode(".jpg", cv2.resize(cv2.imdecode(np.frombuffer(jpeg(0, 64), np.uint8), cv2.IMREAD_COLOR),
                                          (512, 384)), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert h.add(ev, [(ev["crops"][0], big), (ev["overlay"], jpeg(1))], frame=(png(0), "png"))
    path = h.image(ev["id"], "thumb")
    assert path == os.path.join(str(tmp_path / "hist" / "files"), ev["id"], "thumb.jpg")
    thumb = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert thumb.shape == (120, THUMB_PX, 3)  # 512 x 384 kept its aspect
    assert os.path.getsize(path) < 16 * 1024 < len(big)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    small = add(h, 2)  # a 64 px crop: its thumbnail stays 64 px
    assert cv2.imread(h.image(small["id"], "thumb")).shape == (64, 64, 3)
    folder = tmp_path / "hist" / "files" / ev["id"]
    for i in range(80):  # far over 1 MB: the first alarm goes, its thumbnail with it
        add(h, 10 + i)
    assert h.get(ev["id"]) is None and h.image(ev["id"], "thumb") is None and not folder.exists()
    assert h.counter("evicted_size") > 0


def test_an_alarm_without_a_decodable_image_is_kept_without_a_thumbnail(tmp_path):
    h = History(str(tmp_path / "hist"))
    ev = event()
    assert h.add(ev, [(ev["crops"][0], b"not a jpeg")])
    assert set(h.get(ev["id"])["images"]) == {"crop-0"} and h.image(ev["id"], "thumb") is None


def test_totals_and_precision_kept_in_memory_agree_with_the_database(tmp_path):
    """The writer's running tallies (no scan per scrape) against a fresh count, through adds,
    verdicts given and changed, evictions and a reopen; ``version`` moves on each change."""
    import sqlite3

    def scanned(folder):
        db = sqlite3.connect(os.path.join(folder, "history.db"))
        n, size = db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM alarms").fetchone()
        per = {}
        for cam, cnt, d, f in db.execute("SELECT camera, COUNT(*), SUM(verdict='defect'), "
                                          "SUM(verdict='false_alarm') FROM alarms GROUP BY camera"):
            per[cam] = (cnt, d or 0, f or 0)
        db.close()
        return {"alarms": n, "bytes": size}, per

    def check(h):
        totals, per = scanned(h.folder)
        assert h.totals() == totals
        assert {c: (p["alarms"], p["defect"], p["false_alarm"]) for c, p in h.precision().items()} == per

    folder = str(tmp_path / "hist")
    h = History(folder, max_mb=0.5)
    v = h.version
    evs = [add(h, i, camera=("a", "b")[i % 2]) for i in range(6)]
    assert h.version > v
    check(h)
    v = h.version
    h.set_verdict(evs[0]["id"], "defect")
    assert h.version > v
    h.set_verdict(evs[1]["id"], "false_alarm")
    h.set_verdict(evs[0]["id"], "false_alarm")  # changed: one defect less
    check(h)
    assert h.precision()["a"]["false_alarm"] == 1 and h.precision()["a"]["defect"] == 0
    for i in range(40):  # evictions by size, verdicts among the evicted
        add(h, 20 + i, camera="a")
    assert h.counter("evicted_size") > 0
    check(h)
    h.close()
    h = History(folder, max_mb=0.5)
    check(h)
