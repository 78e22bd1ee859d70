"""One camera's pipeline wired together (agent/pipeline.py)."""

import cv2
import numpy as np

from ganomaly_edge.agent.store import EventStore


def decided(p, key) -> list:
    """Run pipeline ``p`` to the end of its source; ``key`` of each frame the debouncer saw, in order."""
    seen = []
    deb = p.inference.debounce
    update = deb.update
    deb.update = lambda score, t, payload: (seen.append(key(payload.item.frame)), update(score, t, payload))[1]
    p.start()
    assert p.finished.wait(60)
    p.join(5)
    return seen


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
    seen = decided(p, lambda frame: frame.index)
    store.close()
    assert len(p.inference.threads) == 3 and p.q.maxsize == 9
    assert seen == list(range(90)) and p.stats.processed.count == 90


def test_a_folder_that_ends_while_inference_is_behind_loses_no_item(tiny_bundle, tmp_path):
    """The end marker waits behind a folder's queued frames. It used to push the oldest queued frame
    out when the queue was full at the end (one scanned item in 150 never inspected, no alarm, no
    counter: a CI failure of the full-disk test, whose slow store kept the queue full)."""
    import time

    from ganomaly_edge.agent.config import CameraConfig
    from ganomaly_edge.agent.pipeline import CameraPipeline
    from ganomaly_edge.agent.topics import Topics
    from ganomaly_edge.engine import load

    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(scans / f"item_{i:02d}.png"), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    eng = load(tiny_bundle, "onnxruntime", threads=1)
    score_frames = eng.score_frames

    def slow(*a, **k):  # inference behind the scanner: the queue is full whenever the folder ends
        time.sleep(0.3)  # longer than the 0.1 s a frame waits for room before anything is dropped
        return score_frames(*a, **k)

    eng.score_frames = slow
    cam = CameraConfig(name="c", source={"kind": "folder", "uri": str(scans), "watch": False},
                       decision={"threshold": -1e6, "k": 1, "n": 1, "cooldown_s": 0})
    store = EventStore(str(tmp_path / "ev.db"))
    p = CameraPipeline(cam, eng, store, None, Topics("t"), 2, max_batch=1, workers=1)
    seen = decided(p, lambda frame: frame.name)
    alarms = sum(e.topic == Topics("t").alarm("c") for e in store.pending(100))  # results are stored too
    store.close()
    assert seen == [f"item_{i:02d}.png" for i in range(6)]
    assert p.stats["dropped"] == 0 and alarms == 6
