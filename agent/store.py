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

log = logging.getLogger(__name__)

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
"""


@dataclass
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
            os.makedirs(d, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # see the module docstring
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise RuntimeError(f"cannot open the event store {path!r}: {e} (check store.path and its "
                               "directory's permissions)") from e
        self.path = path
        self.max_events, self.max_bytes, self.max_age_s = max_events, max_bytes, max_age_s
        self.lock = threading.Lock()
        self.checkpoints = 0
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_s,),
                                              name="store-checkpoint", daemon=True)
        self._checkpointer.start()

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
            created: float | None = None) -> int:
        text = json.dumps(payload, separators=(",", ":"))
        size = len(text) + sum(len(b) for _, b in blobs)
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = self.db.execute(
                    "INSERT INTO events (id, camera, created, topic, payload, bytes) VALUES (?,?,?,?,?,?)",
                    (event_id, camera, created or time.time(), topic, text, size))
                seq = cur.lastrowid
                self.db.executemany("INSERT INTO blobs (event_seq, k, topic, data) VALUES (?,?,?,?)",
                                    [(seq, k, t, sqlite3.Binary(b)) for k, (t, b) in enumerate(blobs)])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        self.evict()
        return seq

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
        dropped = 0
        with self.lock:
            cur = self.db.execute("DELETE FROM events WHERE created < ?", (time.time() - self.max_age_s,))
            dropped += cur.rowcount
            n, size = self.db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events").fetchone()
            while n > self.max_events or size > self.max_bytes:
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

    def depth(self) -> tuple[int, int]:
        with self.lock:
            n, size = self.db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM events").fetchone()
        return int(n), int(size)

    def counter(self, name: str) -> int:
        with self.lock:
            row = self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join(timeout=10)
        with self.lock:
            self.db.close()
