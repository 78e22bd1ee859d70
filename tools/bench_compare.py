"""``ganomaly-bench engine BUNDLE --compare [--int8 INT8_BUNDLE]``: every CPU path side by side, in one run.

Our engine on each CPU backend and precision (ONNX Runtime and OpenVINO, fp32, bf16 where the CPU
has it, int8 from an INT8 bundle; ONNX Runtime also "unsplit", every call on all threads at once,
to show what splitting a call across the cores gains), and the peers: a raw ONNX Runtime session and a raw OpenVINO
compiled model on the same ONNX files with their default settings. Workloads: the model input at
batch 1 and 8 and, for a tiled bundle, 1 and 2 frames at working resolution (one frame = all its
tiles; our engine scores frames, tiles and stitches included, the peers run the same tiles).
Interleaved rounds: every path runs every workload in each round (untimed calls of its own
first, then timed ones: ``interleaved``), so a busy moment on a shared machine hits them all
alike; medians and ratios (against our fp32 ONNX Runtime engine) come from
one run. Share of peak: the graph's convolution and matrix-product work over the time, against this
CPU's fp32 matrix peak (numpy) and its int8 one (ONNX Runtime's MatMulInteger). With ``--profile``,
ONNX Runtime's per-operator profile of one call per graph says where INT8 wins or loses time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Callable

import numpy as np


def int8_matmul_peak(n: int = 1024, reps: int = 10, threads: int = 0) -> float:
    """GOP/s of an n x n uint8 x int8 matrix product in ONNX Runtime (MatMulInteger), best of ``reps``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "mmi",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    s.run(None, feed)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        s.run(None, feed)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def _raw_ort(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})


def _raw_ov(path: str, threads: int):
    import openvino as ov

    c = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads or (os.cpu_count() or 1),
                                              "PERFORMANCE_HINT": "LATENCY"})
    req = c.create_infer_request()
    return lambda x: req.infer({0: x})


def paths(bundles: dict[str, str], threads: int) -> dict[str, tuple[Any, Callable, Callable]]:
    """name -> (engine or None, run on model inputs, run on frames). Our engines score frames with
    ``score_frames``; a peer runs the frames' tiles."""
    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.backends.openvino import cpu_capabilities, openvino_available

    out: dict[str, tuple[Any, Callable, Callable]] = {}
    backends = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
    for prec, path in bundles.items():
        for be in backends:
            e = load(path, be, threads=threads)
            out[f"ours {be} {prec}"] = (e, e.infer, e.score_frames)
            if be == "onnxruntime" and e.split:
                # The same engine with every call on all threads at once: what the split gains.
                from ganomaly_edge.engine.backends.onnxruntime import OnnxRuntimeEngine

                u = OnnxRuntimeEngine(e.bundle, threads=threads, split=False)
                u.self_test()
                out[f"ours {be} {prec} unsplit"] = (u, u.infer, u.score_frames)
        if prec == "fp32" and openvino_available():
            import openvino as ov

            if "BF16" in cpu_capabilities(ov.Core()):
                e = load(path, "openvino", threads=threads, openvino_precision="bf16")
                out["ours openvino bf16"] = (e, e.infer, e.score_frames)
        onnx_path = os.path.join(path, "model.onnx")
        tiling = out[f"ours onnxruntime {prec}"][0].tiling
        peers = [("onnxruntime", _raw_ort)] + ([("openvino", _raw_ov)] if openvino_available() else [])
        for name, make in peers:
            run = make(onnx_path, threads)
            out[f"raw {name} {prec}"] = (None, run, lambda f, run=run, t=tiling: run(t.split(f)))
    return out


def workloads(eng, rng) -> dict[str, tuple[str, np.ndarray]]:
    """name -> ("inputs" or "frames", data)."""
    h, w, c = eng.spec.shape
    out = {f"{h}px batch {b}": ("inputs", rng.integers(0, 256, (b, h, w, c), dtype=np.uint8)) for b in (1, 8)}
    t = eng.tiling
    if t.tiled:
        for n in (1, 2):
            out[f"{t.width}x{t.height} {n} frame(s), {n * t.count} tiles"] = (
                "frames", rng.integers(0, 256, (n, t.height, t.width, c), dtype=np.uint8))
    return out


SETTLE_S = 0.3  # interleaved: untimed calls of a path before its timed ones, each round
TIMED = 3  # interleaved: timed calls of a path per round (their median is the round's figure)


def interleaved(runs: dict[str, tuple[Any, Callable, Callable]], loads: dict[str, tuple[str, np.ndarray]],
                rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per (path, workload) over ``rounds`` interleaved rounds.

    In every round each path first calls for SETTLE_S seconds untimed, then TIMED calls are
    timed. A runtime's worker threads keep spinning after a call (ONNX Runtime's by default), and
    on a machine with as many cores as threads they take the CPU from whichever session runs
    next: on 2 cores, a 49-tile call timed right after another session's took 96 ms where it
    took 61 ms after its own, and a single untimed call did not absorb it for short calls (64 px
    at batch 8: 18 ms against 10 ms). So each path is timed as a deployment runs it, one session
    after its own previous calls, while the rounds still share the host's drift alike."""
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds + 1):
        for wname, (kind, x) in loads.items():
            for pname, (_, on_inputs, on_frames) in runs.items():
                fn = on_frames if kind == "frames" else on_inputs
                t0 = time.perf_counter()
                while True:
                    fn(x)
                    if time.perf_counter() - t0 >= SETTLE_S:
                        break
                took = []
                for _ in range(TIMED):
                    t1 = time.perf_counter()
                    fn(x)
                    took.append(1e3 * (time.perf_counter() - t1))
                if r:  # round 0 warms up
                    times.setdefault((pname, wname), []).append(float(np.median(took)))
    out: dict[str, dict[str, float]] = {}
    for (p, w), v in times.items():
        out.setdefault(w, {})[p] = round(float(np.median(v)), 2)
    return out


def op_profile(onnx_path: str, x: np.ndarray, threads: int) -> dict[str, float]:
    """ONNX Runtime's per-operator-type time (ms) for one call on ``x`` (after a warm-up call)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="ganomaly-prof-"), "p")
    s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: x})
    s.run(None, {name: x})
    with open(s.end_profiling()) as f:
        events = json.load(f)
    per: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per.setdefault(ev["args"]["op_name"], []).append(ev["dur"] / 1e3)
    # the second call only: each node ran twice, the second half of each list is the measured call
    return dict(sorted(((k, round(sum(v[len(v) // 2:]), 2)) for k, v in per.items()), key=lambda kv: -kv[1]))


def agent_fps(bundles: dict[str, str], frames: int, rounds: int) -> dict[str, Any]:
    """The agent (a process, real broker) on a 1920x1080 stream, its 1080x1080 ROI resized to the
    bundle's working size: frames per busy second, per backend and precision, interleaved rounds."""
    from ganomaly_edge.engine.backends.openvino import openvino_available

    from .bench import _agent_run
    from .bench_tiles import write_stream

    work = tempfile.mkdtemp(prefix="ganomaly-compare-agent-")
    video = os.path.join(work, "line-1080p.avi")
    write_stream(video, frames)
    extra = "roi = { x = 420, y = 0, w = 1080, h = 1080 }"
    runs = [(p, be) for p in bundles for be in ["onnxruntime"] + (["openvino"] if openvino_available() else [])]
    fps: dict[str, list[float]] = {}
    for _ in range(rounds):
        for prec, be in runs:
            st = _agent_run(bundles[prec], video, work, 0, 1e9, None, False, camera_extra=extra, backend=be)
            cam = st["cameras"]["bench"]
            fps.setdefault(f"agent {be} {prec}", []).append(cam["frames_processed"] / cam["busy_s"])
    return {"frames": frames, "roi": "420,0,1080,1080 of 1920x1080", "rounds": rounds,
            "fps": {k: round(float(np.median(v)), 2) for k, v in fps.items()}}


def bench_compare(bundle: str, int8_bundle: str | None, rounds: int, threads: int, profile: bool,
                  agent_frames: int = 0) -> dict:
    from .bench import graph_gflop, matmul_peak

    bundles = {"fp32": bundle} | ({"int8": int8_bundle} if int8_bundle else {})
    runs = paths(bundles, threads)
    base = "ours onnxruntime fp32"
    eng = runs[base][0]
    loads = workloads(eng, np.random.default_rng(0))
    peak32, peak8 = matmul_peak(), int8_matmul_peak(threads=threads)
    med = interleaved(runs, loads, rounds)
    gflop = graph_gflop(os.path.join(bundle, "model.onnx"))
    table = {}
    for wname, (kind, x) in loads.items():
        n_in = len(x) * (eng.tiling.count if kind == "frames" else 1)
        table[wname] = {p: {"median_ms": ms, "vs_ours_fp32_ort": round(med[wname][base] / ms, 3),
                            "share_of_peak": round(gflop * n_in / (ms / 1e3) / (peak8 if "int8" in p else peak32), 3)}
                        for p, ms in sorted(med[wname].items(), key=lambda kv: kv[1])}
    res = {"rounds": rounds, "threads": threads or os.cpu_count(), "gflop_per_input": round(gflop, 4),
           "fp32_matmul_peak_gflops": round(max(peak32, matmul_peak()), 1), "int8_matmul_peak_gops": round(peak8, 1),
           "engines": {p: r[0].describe() | {"selftest": r[0].selftest_report} for p, r in runs.items() if r[0]},
           "results": table}
    if profile:
        t = eng.tiling
        x = t.split(np.random.default_rng(1).integers(0, 256, (1, t.height, t.width, eng.spec.channels), np.uint8))
        res["ort_op_profile_ms"] = {p: op_profile(os.path.join(b, "model.onnx"), x, threads) for p, b in bundles.items()}
    for r in runs.values():
        if r[0] is not None:
            r[0].close()
    if agent_frames and eng.tiling.tiled:
        res["agent"] = agent_fps(bundles, agent_frames, max(1, rounds // 3))
    return res
