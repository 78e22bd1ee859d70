"""``ganomaly-bench tiles``: the agent with a tiled bundle on 1920x1080 frames.

A 1080p MJPG stream of cast parts riding a belt is written once; the agent then reads it with a
region of interest, resized to the working resolution and cut into tiles, as fast as it goes
(frames per second of busy time) and paced like a camera (capture -> PUBACK latency, with a
quarter of the frames raising an alarm so localisation, crops, SQLite and MQTT QoS 1 are all
in the path). Medians over interleaved rounds.
"""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np

W, H = 1920, 1080


def write_stream(path: str, frames: int, seed: int = 0) -> None:
    """Cast parts (tools/defects.part, 540 px) sliding along a belt, 30 fps, MJPG."""
    from .defects import part

    rng = np.random.default_rng(seed)
    belt = np.clip(60 + rng.normal(0, 4, (H, W)), 0, 255).astype(np.uint8)
    items = [cv2.resize(part(300, rng)[0], (540, 540), interpolation=cv2.INTER_LINEAR) for _ in range(6)]
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    for i in range(frames):
        f = belt.copy()
        x = (i * 24) % (W + 540) - 540  # one part crosses the frame every 100 frames
        item = items[(i * 24) // (W + 540) % len(items)]
        a, b = max(x, 0), min(x + 540, W)
        if b > a:
            f[270:810, a:b] = item[:, a - x:b - x]
        vw.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    vw.release()


def _threshold(bundle: str, video: str, roi: tuple[int, ...], size: tuple[int, int], share: float) -> float:
    """The calibrated score that a ``share`` of the stream's frames exceed."""
    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.preprocess import prepare

    eng = load(bundle, "auto")
    t = eng.tiling.resized(size[1], size[0])
    cap = cv2.VideoCapture(video)
    scores = []
    for i in range(60):
        ok, f = cap.read()
        if not ok:
            break
        x, y, w, h = roi
        frame = prepare(f[y:y + h, x:x + w], (size[1], size[0]), eng.spec.channels)[None]
        scores.append(eng.calibrated(eng.score_frames(frame, t)[0])[0])
    cap.release()
    eng.close()
    return float(np.quantile(scores, 1 - share))


def bench_tiles(bundle: str, roi_text: str, sizes: list[str], frames: int, paced_fps: float, rounds: int) -> dict:
    from ganomaly_edge.engine.bundle import open_bundle

    from .bench import _agent_run

    b = open_bundle(bundle)
    tiling = b.tiling
    roi = tuple(int(v) for v in roi_text.split(","))
    work = tempfile.mkdtemp(prefix="bench-tiles-")
    video = os.path.join(work, "line-1080p.avi")
    write_stream(video, frames)
    out = {"frame": f"{W}x{H}", "roi": roi_text, "bundle_working_size": f"{tiling.width}x{tiling.height}",
           "tile": tiling.tile, "stride": tiling.stride, "cores": os.cpu_count(), "runs": []}
    for text in sizes or [f"{tiling.width}x{tiling.height}"]:
        w, h = (int(v) for v in text.lower().split("x"))
        t = tiling.resized(h, w)
        extra = f"working_size = [{w}, {h}]\nroi = {{ x = {roi[0]}, y = {roi[1]}, w = {roi[2]}, h = {roi[3]} }}"
        thr = _threshold(bundle, video, roi, (w, h), 0.25)
        fps, p50, p99 = [], [], []
        for _ in range(rounds):
            fast = _agent_run(bundle, video, work, 0, 1e9, None, False, camera_extra=extra)
            cam = fast["cameras"]["bench"]
            fps.append(cam["frames_processed"] / cam["busy_s"])
            paced = _agent_run(bundle, video, work, 0, thr, paced_fps, False, camera_extra=extra)
            lat = paced["capture_to_publish"] or {}
            p50.append(lat.get("p50_ms", float("nan")))
            p99.append(lat.get("p99_ms", float("nan")))
        out["runs"].append({"working_size": text, "tiles_per_frame": t.count, "agent_fps": round(float(np.median(fps)), 1),
                            "paced_fps": paced_fps, "alarms_paced": paced["cameras"]["bench"]["alarms"],
                            "dropped_paced": paced["cameras"]["bench"]["dropped"],
                            "capture_to_publish_p50_ms": round(float(np.median(p50)), 1),
                            "capture_to_publish_p99_ms": round(float(np.median(p99)), 1),
                            "fps_per_round": [round(v, 1) for v in fps]})
    return out
