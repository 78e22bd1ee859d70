"""Durable event store (SQLite, WAL): an alarm is written here before it is published and
deleted only after the broker acknowledged every one of its messages (QoS 1 PUBACK).

While the broker is away the store keeps events, bounded by count, size and age; the oldest are
evicted first and counted. On reconnect they go out in the order they were stored.

WAL checkpoints (copying the log into the database, with its fsync) run on a background thread
with its own connection, never inside an alarm's insert or a PUBACK's delete: SQLite's automatic
checkpoint would otherwise stall whichever of them crossed the 1,000-page mark.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from .errors import AgentError
from .ratelimit import Throttled

log = logging.getLogger(__name__)


class StoreError(AgentError, RuntimeError):
    """The event store cannot be opened; the message names the file and the fix."""


class StoreFull(AgentError, RuntimeError):
    """The disk is full and the store holds nothing older to evict."""


def _is_full(e: sqlite3.Error) -> bool:
    return "full" in str(e).lower() or getattr(e, "sqlite_errorcode", None) == 13  # SQLITE_FULL

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    camera TEXT NOT NULL,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    k INTEGER NOT NULL,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (event_seq, k)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS processed (
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    ts REAL NOT NULL,
    stamp TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (source, path)
);
"""
# Added to stores made before items were keyed by what they are (size:mtime_ns); '' = unknown.
MIGRATIONS = [("processed", "stamp", "ALTER TABLE processed ADD COLUMN stamp TEXT NOT NULL DEFAULT ''")]


def _private_files(path: str, folder: str) -> None:
    """The store holds crops of what the cameras saw: its files are the owner's alone (0600, and
    0700 for a folder made for it), whatever the umask of whoever started the agent. SQLite gives
    the -wal and -shm files the database's own mode; files from before are tightened too."""
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for p in (path, path + "-wal", path + "-shm", path + "-reserve"):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


@dataclass(slots=True)
class StoredEvent:
    seq: int
    id: str
    topic: str
    payload: str
    blobs: list[tuple[str, bytes]]  # (topic, data), in publish order after the JSON


class EventStore:
    def __init__(self, path: str, max_events: int = 10000, max_bytes: int = 512 << 20,
                 max_age_s: float = 7 * 86400, checkpoint_s: float = 2.0):
        d = os.path.dirname(os.path.abspath(path))
        try:
            _private_files(path, d)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # see the module docstring
            self.db.executescript(SCHEMA)
            for table, column, sql in MIGRATIONS:
                if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                    self.db.execute(sql)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the event store {path!r}: {e} (check store.path and its "
                             "directory's permissions)") from e
        self.path = path
        self.max_events, self.max_bytes, self.max_age_s = max_events, max_bytes, max_age_s
        self.lock = threading.Lock()
        self.mem_counters: dict[str, int] = {}
        self.throttled = Throttled(log)
        self.checkpoints = 0
        # On a full disk, unsent alarms come before kept ones: a callback (nbytes) -> whether the
        # alarm history freed some of its own (agent/history.py), asked before any unsent event goes.
        self.free_elsewhere = None
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_s,),
                                              name="store-checkpoint", daemon=True)
        self._checkpointer.start()
        self._ensure_reserve()

    def _checkpoint_loop(self, interval: float) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            while not self._closing.wait(interval):
                self.checkpoint(db)
            self.checkpoint(db, "TRUNCATE")
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection | None = None, mode: str = "PASSIVE") -> None:
        """Copy the write-ahead log into the database (PASSIVE: never blocks readers or writers)."""
        try:
            (db or self.db).execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            self.checkpoints += 1
        except sqlite3.Error as e:  # busy or disk trouble: the log keeps the data, retry next time
            log.warning("event store: WAL checkpoint failed (%s); will retry", e)

    def add(self, event_id: str, camera: str, topic: str, payload: dict, blobs: list[tuple[str, bytes]],
            created: float | None = None, processed: tuple[str, str, str] | None = None) -> int:
        """Store an event; on a full disk, evict (expired first, then the oldest unsent) and retry.
        StoreFull when even an empty store has no room for it."""
        text = json.dumps(payload, separators=(",", ":"))
        row = (event_id, camera, created or time.time(), topic, text, len(text) + sum(len(b) for _, b in blobs))
        while True:
            try:
                seq = self._insert(row, blobs, processed)
                break
            except sqlite3.OperationalError as e:
                if not _is_full(e):
                    raise
                if self.free_elsewhere is not None and self.free_elsewhere(2 * row[5] + (64 << 10)):
                    continue
                if not self._make_room(event_id, row[5], e):
                    self._bump_safely("dropped_disk_full", 1)
                    raise StoreFull(f"event store {self.path}: the disk is full ({e}) and nothing older is "
                                    f"left to evict: alarm {event_id} is lost (counted as dropped_disk_full)") from e
        self.evict()
        self._bound_wal()
        self._ensure_reserve()
        return seq

    def _bound_wal(self) -> None:
        try:
            if os.path.getsize(self.path + "-wal") <= self.WAL_LIMIT:
                return
            with self.lock:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except (OSError, sqlite3.Error) as e:  # busy or full: the next write tries again
            self.throttled.log(logging.WARNING, "wal", "event store %s: WAL checkpoint failed (%s)", self.path, e)

    def _insert(self, row: tuple, blobs: list[tuple[str, bytes]], processed: tuple[str, str, str] | None = None) -> int:
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                cur = self.db.execute(
                    "INSERT INTO events (id, camera, created, topic, payload, bytes) VALUES (?,?,?,?,?,?)", row)
                seq = cur.lastrowid
                self.db.executemany("INSERT INTO blobs (event_seq, k, topic, data) VALUES (?,?,?,?)",
                                    [(seq, k, t, sqlite3.Binary(b)) for k, (t, b) in enumerate(blobs)])
                if processed:  # the item and its alarm are recorded together: a crash keeps both or neither
                    source, path, stamp = processed
                    self.db.execute("INSERT OR REPLACE INTO processed (source, path, status, ts, stamp) "
                                    "VALUES (?,?,?,?,?)", (source, path, "alarm", time.time(), stamp))
                self.db.execute("COMMIT")
                return seq
            except BaseException:
                if self.db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                    self.db.execute("ROLLBACK")
                raise

    def _make_room(self, event_id: str, need: int, err: Exception) -> bool:
        """Free space for a new event of ``need`` bytes: expired events first, else the oldest unsent
        ones. The reserve file is given up first, so that the deletes (which append to the WAL) and
        the checkpoint that returns the log's space have room. False when nothing could be freed."""
        released = self._release_reserve()
        try:
            with self.lock:
                expired = self.db.execute("DELETE FROM events WHERE created < ?",
                                          (time.time() - self.max_age_s,)).rowcount
                evicted = 0 if expired else self._delete_oldest(2 * need + (64 << 10))
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as e:
            self.throttled.log(logging.ERROR, "full-evict", "event store %s: disk full and eviction failed (%s)",
                               self.path, e)
            return False
        if not (expired or evicted):
            return False
        self._bump_safely("evicted_disk_full", expired or evicted)
        self.throttled.log(logging.ERROR, "full", "event store %s: disk full (%s): evicted %s to keep alarm %s%s",
                           self.path, err, f"{expired} expired event(s)" if expired else
                           f"the oldest unsent event(s) ({evicted})", event_id,
                           "" if released else "; no reserve file was left")
        return True

    def _delete_oldest(self, nbytes: int) -> int:
        """Delete the oldest events holding at least ``nbytes``; returns how many (lock held)."""
        total, last, n = 0, None, 0
        for seq, size in self.db.execute("SELECT seq, bytes FROM events ORDER BY seq LIMIT 1000"):
            total, last, n = total + size, seq, n + 1
            if total >= nbytes:
                break
        if last is not None:
            self.db.execute("DELETE FROM events WHERE seq <= ?", (last,))
        return n

    # Disk kept in hand: on a full disk, deleting rows still appends to the WAL, and the checkpoint
    # that gives the log's space back first copies it into the database. The WAL is kept under
    # WAL_LIMIT (a truncating checkpoint after any write that passes it), so the reserve covers both.
    WAL_LIMIT = 1 << 20
    RESERVE_BYTES = 2 << 20

    def _ensure_reserve(self) -> None:
        path = self.path + "-reserve"
        if os.path.exists(path):
            return
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(b"\0" * self.RESERVE_BYTES)
        except OSError:
            try:
                os.remove(path)
            except OSError:
                pass

    def _release_reserve(self) -> bool:
        try:
            os.remove(self.path + "-reserve")
            return True
        except OSError:
            return False

    def _bump_safely(self, name: str, n: int) -> None:
        """Counters survive restarts in the database; on a full disk they are kept in memory too."""
        self.mem_counters[name] = self.mem_counters.get(name, 0) + n
        try:
            with self.lock:
                self._bump(name, n)
        except sqlite3.Error:
            pass

    def pending(self, limit: int = 50, after_seq: int = 0) -> list[StoredEvent]:
        with self.lock:
            rows = self.db.execute("SELECT seq, id, topic, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                   (after_seq, limit)).fetchall()
            out = []
            for seq, eid, topic, payload in rows:
                blobs = self.db.execute("SELECT topic, data FROM blobs WHERE event_seq=? ORDER BY k", (seq,)).fetchall()
                out.append(StoredEvent(seq, eid, topic, payload, [(t, bytes(d)) for t, d in blobs]))
            return out

    def delete(self, seq: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM events WHERE seq=?", (seq,))

    def _bump(self, name: str, n: int) -> None:
        self.db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def evict(self) -> int:
        """Drop the oldest events beyond the age, count and size limits; returns how many."""
        try:
            return self._evict()
        except sqlite3.OperationalError as e:  # a full disk: add() makes room when it must
            if not _is_full(e):
                raise
            self.throttled.log(logging.ERROR, "evict", "event store %s: cannot evict (%s)", self.path, e)
            return 0

    def _evict(self) -> int:
        dropped = 0
        with self.lock:
            cur = self.db.execute("DELETE FROM events WHERE created < ?", (time.time() - self.max_age_s,))
            dropped += cur.rowcount
            n, size = self.db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events").fetchone()
            while n > self.max_events or size > self.max_bytes or self._disk_over():
                row = self.db.execute("SELECT seq, bytes FROM events ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    break
                self.db.execute("DELETE FROM events WHERE seq=?", (row[0],))
                n, size, dropped = n - 1, size - row[1], dropped + 1
            if dropped:
                self._bump("evicted", dropped)
        if dropped:
            log.warning("event store full or events too old: evicted %d oldest unsent event(s)", dropped)
        return dropped

    def _disk_over(self) -> bool:
        """Whether the live pages, the WAL's limit and the reserve together pass max_bytes: deleted
        events' pages are reused before the file grows, so the files on disk stay within max_mb."""
        overhead = self.WAL_LIMIT + self.RESERVE_BYTES
        if self.max_bytes < 4 * overhead:  # a tiny budget (tests): the events' own bytes decide
            return False
        pages, free, size = (self.db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size + overhead > self.max_bytes

    def files_bytes(self) -> dict[str, int]:
        """Bytes on disk of the database, its WAL and the reserve."""
        out = {}
        for name, path in (("db", self.path), ("wal", self.path + "-wal"), ("reserve", self.path + "-reserve")):
            try:
                out[name] = os.path.getsize(path)
            except OSError:
                out[name] = 0
        return out

    def processed_paths(self, source: str) -> dict[str, str]:
        """path -> stamp (size:mtime_ns, '' when recorded before stamps) of the source's processed files."""
        with self.lock:
            return dict(self.db.execute("SELECT path, stamp FROM processed WHERE source=?", (source,)).fetchall())

    def mark_processed(self, source: str, path: str, status: str, stamp: str = "") -> None:
        try:
            with self.lock:
                self.db.execute("INSERT OR REPLACE INTO processed (source, path, status, ts, stamp) VALUES (?,?,?,?,?)",
                                (source, path, status, time.time(), stamp))
        except sqlite3.OperationalError as e:  # a full disk: the item may be inspected again after a restart
            self.throttled.log(logging.ERROR, "processed", "event store %s: cannot record a processed file (%s)",
                               self.path, e)

    def forget_processed(self, source: str, paths: list[str]) -> None:
        """Records of files that are gone from the folder: they cannot come back under the same name
        unchanged, and the table stays as large as the folder, not its history."""
        with self.lock:
            self.db.executemany("DELETE FROM processed WHERE source=? AND path=?", [(source, p) for p in paths])

    def depth(self) -> tuple[int, int]:
        with self.lock:
            n, size = self.db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events").fetchone()
        return int(n), int(size)

    def counter(self, name: str) -> int:
        with self.lock:
            row = self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return max(int(row[0]) if row else 0, self.mem_counters.get(name, 0))

    def counters(self) -> dict[str, int]:
        return {name: self.counter(name) for name in ("evicted", "evicted_disk_full", "dropped_disk_full")}

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join(timeout=10)
        with self.lock:
            self.db.close()
