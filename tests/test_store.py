"""The durable event store (agent/store.py)."""

import os
import time

from ganomaly_edge.agent.store import EventStore


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
