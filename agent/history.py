"""Alarm history: every alarm kept after its delivery, for review and operator verdicts.

The outbox (``store.py``) forgets an alarm once the broker has it; history keeps it, bounded by
age (``[history] max_days``) and size (``max_mb``), oldest first, every eviction counted. A
folder of its own holds ``history.db`` (SQLite, WAL: the alarms, their verdicts, counters) and
``files/<id>/`` with the alarm's images: ``frame.png`` (or ``.jpg``: the full frame as the model
saw it, after ROI and rotation, before resize), ``crop-<k>.jpg``, ``overlay.jpg`` and
``thumb.jpg`` (the review page's thumbnail: the first crop scaled to at most ``THUMB_PX`` a side,
made once here, so a page never makes one). Every file is 0600 and the folders 0700. Alarms
kept before thumbnails came have none; the console falls back to their crop.

The API, for the agent, the console (``console.py``) and tools such as an exporter::

    h = History("/var/lib/ganomaly-edge/history", max_days=30, max_mb=2048)
    h.add(event_payload, blobs, frame=(b"...png...", "png"))   # the alarm thread; never raises
    h.list(camera="cam1", since=ts, until=ts, verdict="false_alarm", min_score=1.2, limit=100)
    h.get(event_id)            # one alarm (dict) with "images": name -> absolute path, or None
    h.image(event_id, "frame") # absolute path of one image, or None (names checked: no traversal)
    h.set_verdict(event_id, "false_alarm", source="console")   # the alarm, or UnknownAlarm
    h.precision()              # per camera: reviewed, defects, false alarms, precision
    h.totals()                 # alarms and bytes held
    h.version                  # changes whenever an alarm is added, dropped or given a verdict

Verdicts are ``VERDICTS`` (``unreviewed`` in a filter = no verdict yet). Each thread reads with
its own SQLite connection, so the console never waits on the alarm thread's writes; writes take
one lock. The per-camera verdict tallies and the totals are kept in memory by that writer (read
from the database once at open), so metrics, stats and the console read them without scanning a
history of 100,000 alarms. A full disk drops the oldest alarms to make room, then this one (counted): history
never stops inspection or delivery.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from typing import Any

from .errors import AgentError
from .ratelimit import Throttled

log = logging.getLogger(__name__)

VERDICTS = ("defect", "false_alarm")
ID_RE = re.compile(r"^[0-9a-f]{32}$")
IMAGE_RE = re.compile(r"^(frame|overlay|thumb|crop-[0-9]{1,2})$")
THUMB_PX = 160  # longest side of thumb.jpg
THUMB_QUALITY = 80

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    camera TEXT NOT NULL,
    ts REAL NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    item TEXT,
    model_name TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    event TEXT NOT NULL,
    images TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    verdict TEXT,
    verdict_ts REAL,
    verdict_source TEXT
);
CREATE INDEX IF NOT EXISTS alarms_ts ON alarms (ts);
CREATE INDEX IF NOT EXISTS alarms_camera_ts ON alarms (camera, ts);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COLUMNS = "id, camera, ts, score, threshold, item, model_name, model_hash, event, images, verdict, verdict_ts, verdict_source"


class UnknownAlarm(AgentError, KeyError):
    """No alarm with this id in history (never raised, or evicted)."""


class BadVerdict(AgentError, ValueError):
    pass


def check_verdict(verdict: Any) -> str:
    if verdict not in VERDICTS:
        raise BadVerdict(f"verdict must be one of {list(VERDICTS)}, not {str(verdict)[:40]!r}")
    return verdict


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def thumbnail(images: dict[str, tuple[str, bytes]]) -> bytes | None:
    """thumb.jpg: the first crop (else the overlay, else the frame) scaled to at most THUMB_PX a
    side (never enlarged), JPEG; None when there is nothing to make it from or it cannot be decoded."""
    import cv2
    import numpy as np

    name = "crop-0" if "crop-0" in images else ("overlay" if "overlay" in images else "frame")
    if name not in images:
        return None
    img = cv2.imdecode(np.frombuffer(images[name][1], np.uint8), cv2.IMREAD_COLOR)  # 16-bit frames: 8-bit
    if img is None:
        return None
    h, w = img.shape[:2]
    if max(h, w) > THUMB_PX:
        s = THUMB_PX / max(h, w)
        img = cv2.resize(img, (max(round(w * s), 1), max(round(h * s), 1)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    return data.tobytes() if ok else None


def _row(r: tuple) -> dict[str, Any]:
    (eid, camera, ts, score, threshold, item, mname, mhash, event, images, verdict, vts, vsrc) = r
    ev = json.loads(event)
    return {"id": eid, "camera": camera, "ts": ts, "score": score, "threshold": threshold, "item": item,
            "verdict": verdict, "verdict_ts": vts, "verdict_source": vsrc,
            "model": {"name": mname, "hash": mhash}, "boxes": ev.get("boxes", []),
            "frame_size": ev.get("frame_size"), "raw_score": ev.get("raw_score"),
            "frame_index": ev.get("frame_index"), "image_names": json.loads(images)}


class History:
    COUNTERS = ("added", "evicted_age", "evicted_size", "evicted_disk_full", "dropped_disk_full", "verdicts")

    def __init__(self, folder: str, max_days: float = 30.0, max_mb: float = 2048.0):
        self.folder = os.path.abspath(folder)
        self.files = os.path.join(self.folder, "files")
        self.path = os.path.join(self.folder, "history.db")
        self.max_age_s, self.max_bytes = max_days * 86400.0, int(max_mb * (1 << 20))
        try:
            _private_dir(self.folder)
            _private_dir(self.files)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self.db = self._connect()
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise RuntimeError(f"cannot open the alarm history in {folder!r}: {e} (check history.path and "
                               "its permissions)") from e
        for p in (self.path + "-wal", self.path + "-shm"):
            if os.path.exists(p) and os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
        self.lock = threading.Lock()  # the writer's
        self.figures = threading.Lock()  # bytes, tally, version: held for microseconds, never over I/O
        self.local = threading.local()
        self.mem_counters: dict[str, int] = {}
        self.throttled = Throttled(log)
        self.on_verdict = None  # callback(alarm dict) after a verdict is recorded (MQTT, metrics)
        # Kept up to date by the writer (under self.figures): no scan of the history per alarm, per
        # scrape or per stats message. tally: camera -> verdict (None: unreviewed) -> alarms.
        self.tally: dict[str, dict[str | None, int]] = {}
        for cam, verdict, n in self.db.execute("SELECT camera, verdict, COUNT(*) FROM alarms GROUP BY camera, verdict"):
            self.tally.setdefault(cam, {})[verdict] = n
        self.bytes = int(self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM alarms").fetchone()[0])
        self.version = 0  # +1 on every add, drop and verdict: what the console's caches are keyed by

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # A small log, checkpointed often and cut back: history rows are small and a full disk
        # must find the space in the images, not in a grown WAL.
        db.execute("PRAGMA wal_autocheckpoint=64")
        db.execute("PRAGMA journal_size_limit=524288")
        return db

    def _reader(self) -> sqlite3.Connection:
        """This thread's own connection: readers never queue behind the writer's lock."""
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = self._connect()
        return db

    # -- writing (the alarm thread) ------------------------------------------------------------
    def add(self, event: dict, blobs: list[tuple[str, bytes]], frame: tuple[bytes, str] | None = None) -> bool:
        """Keep one alarm: its event (the published payload), its JPEGs (topic, bytes: crops then
        overlay, as stored in the outbox) and the full frame (bytes, "png" | "jpg"). False when it
        could not be kept (counted, logged); never raises, so inspection goes on."""
        try:
            self._add(event, blobs, frame)
            return True
        except Exception as e:  # disk trouble, a bad path: history is second to inspection
            self._count("dropped_disk_full" if _full(e) else "dropped_error")
            self.throttled.log(logging.ERROR, "add", "alarm history %s: alarm %s not kept (%s)",
                               self.folder, event.get("id"), e)
            return False

    def _add(self, event: dict, blobs: list[tuple[str, bytes]], frame: tuple[bytes, str] | None) -> None:
        eid = event["id"]
        if not ID_RE.match(eid):
            raise ValueError(f"bad alarm id {eid!r}")
        images = {}
        for topic, data in blobs:
            name = "overlay" if topic.endswith("/overlay") else f"crop-{int(topic.rsplit('/', 1)[1])}"
            images[name] = (f"{name}.jpg", data)
        if frame is not None:
            images["frame"] = (f"frame.{frame[1]}", frame[0])
        try:
            thumb = thumbnail(images)
        except Exception as e:  # cv2 trouble: the alarm is kept without one (the page falls back)
            thumb = None
            self.throttled.log(logging.WARNING, "thumb", "alarm history: no thumbnail for %s (%s)", eid, e)
        if thumb is not None:
            images["thumb"] = ("thumb.jpg", thumb)
        size = len(json.dumps(event)) + sum(len(d) for _, d in images.values())
        for attempt in range(3):
            try:
                self._write(event, images, size)
                break
            except (OSError, sqlite3.OperationalError) as e:
                if not _full(e) or attempt == 2 or not self._evict_oldest(2 * size, "evicted_disk_full"):
                    shutil.rmtree(os.path.join(self.files, eid), ignore_errors=True)
                    raise
        self._count("added")
        self.evict()

    def _write(self, event: dict, images: dict[str, tuple[str, bytes]], size: int) -> None:
        eid = event["id"]
        folder = os.path.join(self.files, eid)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for fname, data in images.values():
            _write_private(os.path.join(folder, fname), data)
        model = event.get("model") or {}
        row = (eid, event["camera"], event["ts"], event["score"], event["threshold"], event.get("item"),
               model.get("name", ""), model.get("hash", ""), json.dumps(event, separators=(",", ":")),
               json.dumps({k: v[0] for k, v in images.items()}), size)
        with self.lock:
            self.db.execute("INSERT INTO alarms (id, camera, ts, score, threshold, item, model_name, "
                            "model_hash, event, images, bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
            with self.figures:
                self.bytes += size
                self._tally(event["camera"], None, +1)
                self.version += 1

    def evict(self) -> int:
        """Drop alarms older than max_days, then the oldest while over max_mb; returns how many."""
        try:
            with self.lock:
                old = [r[0] for r in self.db.execute("SELECT id FROM alarms WHERE ts < ?",
                                                     (time.time() - self.max_age_s,))]
            n = self._drop(old, "evicted_age")
            if self.bytes > self.max_bytes:
                n += self._evict_oldest(self.bytes - self.max_bytes, "evicted_size")
            return n
        except (OSError, sqlite3.Error) as e:
            self.throttled.log(logging.ERROR, "evict", "alarm history %s: cannot evict (%s)", self.folder, e)
            return 0

    def free(self, nbytes: int) -> bool:
        """Drop the oldest alarms holding ``nbytes`` for the outbox on a full disk (undelivered
        alarms come first); whether anything was dropped."""
        try:
            return self._evict_oldest(nbytes, "evicted_disk_full") > 0
        except (OSError, sqlite3.Error) as e:
            self.throttled.log(logging.ERROR, "free", "alarm history %s: cannot make room (%s)", self.folder, e)
            return False

    def _evict_oldest(self, nbytes: int, why: str) -> int:
        ids, total = [], 0
        for eid, size in self._reader().execute("SELECT id, bytes FROM alarms ORDER BY ts, seq LIMIT 500"):
            ids.append(eid)
            total += size
            if total >= nbytes:
                break
        return self._drop(ids, why)

    def _drop(self, ids: list[str], why: str) -> int:
        if not ids:
            return 0
        for eid in ids:  # files first: space comes back even when the database cannot write
            shutil.rmtree(os.path.join(self.files, eid), ignore_errors=True)
        with self.lock:
            marks = ",".join("?" * len(ids))
            gone = self.db.execute(f"SELECT camera, verdict, bytes FROM alarms WHERE id IN ({marks})", ids).fetchall()
            self.db.executemany("DELETE FROM alarms WHERE id=?", [(i,) for i in ids])
            with self.figures:
                for cam, verdict, size in gone:
                    self.bytes -= size
                    self._tally(cam, verdict, -1)
                self.version += 1
            if why == "evicted_disk_full":
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self._count(why, len(ids))
        log.info("alarm history: %s %d alarm(s)", why.replace("_", " by "), len(ids))
        return len(ids)

    def _count(self, name: str, n: int = 1) -> None:
        """Counters survive restarts in the database; on a full disk they are kept in memory too."""
        self.mem_counters[name] = self.mem_counters.get(name, 0) + n
        try:
            with self.lock:
                self.db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
                                "DO UPDATE SET value = value + excluded.value", (name, n))
        except sqlite3.Error:
            pass

    def _tally(self, camera: str, verdict: str | None, n: int) -> None:
        """Under self.figures."""
        cam = self.tally.setdefault(camera, {})
        cam[verdict] = cam.get(verdict, 0) + n
        if cam[verdict] <= 0:
            del cam[verdict]
        if not cam:
            del self.tally[camera]

    # -- verdicts ------------------------------------------------------------------------------
    def set_verdict(self, event_id: str, verdict: str, source: str = "console") -> dict[str, Any]:
        """Record an operator's (or a PLC's) verdict; returns the alarm. UnknownAlarm, BadVerdict."""
        check_verdict(verdict)
        if not isinstance(event_id, str) or not ID_RE.match(event_id):
            raise UnknownAlarm(event_id)
        with self.lock:
            old = self.db.execute("SELECT camera, verdict FROM alarms WHERE id=?", (event_id,)).fetchone()
            if old is None:
                raise UnknownAlarm(event_id)
            self.db.execute("UPDATE alarms SET verdict=?, verdict_ts=?, verdict_source=? WHERE id=?",
                            (verdict, time.time(), source[:64], event_id))
            with self.figures:
                self._tally(old[0], old[1], -1)
                self._tally(old[0], verdict, +1)
                self.version += 1
        self._count("verdicts")
        alarm = self.get(event_id)
        if self.on_verdict is not None:
            try:
                self.on_verdict(alarm)
            except Exception:  # a publisher problem must not undo the recorded verdict
                log.exception("alarm history: verdict callback failed")
        return alarm

    # -- reading (any thread) ------------------------------------------------------------------
    def list(self, camera: str | None = None, since: float | None = None, until: float | None = None,
             verdict: str | None = None, min_score: float | None = None, limit: int = 100,
             before: float | None = None) -> list[dict[str, Any]]:
        """Alarms newest first. ``verdict``: one of VERDICTS, or "unreviewed"; ``before``: ts of the
        last alarm of the previous page."""
        where, args = [], []
        for cond, val in (("camera = ?", camera), ("ts >= ?", since), ("ts <= ?", until),
                          ("score >= ?", min_score), ("ts < ?", before)):
            if val is not None:
                where.append(cond)
                args.append(val)
        if verdict == "unreviewed":
            where.append("verdict IS NULL")
        elif verdict is not None:
            where.append("verdict = ?")
            args.append(check_verdict(verdict))
        sql = (f"SELECT {COLUMNS} FROM alarms" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY ts DESC, seq DESC LIMIT ?")
        return [_row(r) for r in self._reader().execute(sql, (*args, max(0, int(limit))))]

    def get(self, event_id: str) -> dict[str, Any] | None:
        if not isinstance(event_id, str) or not ID_RE.match(event_id):
            return None
        r = self._reader().execute(f"SELECT {COLUMNS} FROM alarms WHERE id=?", (event_id,)).fetchone()
        if r is None:
            return None
        out = _row(r)
        out["images"] = {k: os.path.join(self.files, event_id, v) for k, v in out["image_names"].items()}
        return out

    def image(self, event_id: str, name: str) -> str | None:
        """The file of one image of an alarm, or None: ids and names are matched against fixed
        patterns before any path is built, so nothing outside the history folder can be named."""
        if not isinstance(name, str) or not IMAGE_RE.match(name):
            return None
        alarm = self.get(event_id)
        path = alarm and alarm["images"].get(name)
        return path if path and os.path.isfile(path) else None

    def cameras(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT DISTINCT camera FROM alarms ORDER BY camera")]

    def precision(self) -> dict[str, dict[str, Any]]:
        """Per camera: alarms kept, verdicts given, precision at the line (defects / reviewed).
        From the writer's tallies: no scan of the history."""
        out = {}
        with self.figures:
            tally = {cam: dict(v) for cam, v in self.tally.items()}
        for cam in sorted(tally):
            v = tally[cam]
            defects, false = v.get("defect", 0), v.get("false_alarm", 0)
            reviewed = defects + false
            out[cam] = {"alarms": sum(v.values()), "defect": defects, "false_alarm": false, "reviewed": reviewed,
                        "precision": round(defects / reviewed, 4) if reviewed else None}
        return out

    def totals(self) -> dict[str, int]:
        """Alarms and bytes held (the writer's running figures: no scan of the history)."""
        with self.figures:
            return {"alarms": sum(sum(v.values()) for v in self.tally.values()), "bytes": int(self.bytes)}

    def counter(self, name: str) -> int:
        row = self._reader().execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return max(int(row[0]) if row else 0, self.mem_counters.get(name, 0))

    def counters(self) -> dict[str, int]:
        return {name: self.counter(name) for name in self.COUNTERS + ("dropped_error",)}

    def close(self) -> None:
        reader = getattr(self.local, "db", None)
        if reader is not None:
            reader.close()
            self.local.db = None
        with self.lock:
            self.db.close()


def _full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return "full" in str(e).lower()
