"""One camera's pipeline wired together (agent/pipeline.py)."""

import cv2
import numpy as np

from ganomaly_edge.agent.store import EventStore


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
    deb.update = lambda score, t, payload: (seen.append(payload.item.frame.index), update(score, t, payload))[1]
    p.start()
    assert p.finished.wait(60)
    p.join(5)
    store.close()
    assert len(p.inference.threads) == 3 and p.q.maxsize == 9
    assert seen == list(range(90)) and p.stats.processed.count == 90
