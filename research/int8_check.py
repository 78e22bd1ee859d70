"""Does INT8 (or OpenVINO) hold the detection figures? One script, rerun as it is (docs/int8-openvino.md).

For each real set (the ELPV monocrystalline cells, the parts stand-in, the brick texture) and its
trained tiled checkpoint, and for the demo scene (``make demo``'s checkpoint demo/tshirt.pt, trained
with the demo's own command when it is missing; 300 unseen normal and 300 anomalous items written by
``examples.scene.write_eval_folders`` into <data>/demo/test): the fp32 bundle and the INT8 bundle (quantised on the checkpoint's
held-out normal frames), then on the set's test frames, per CPU path (ONNX Runtime and OpenVINO,
fp32 and int8): the frame ROC AUC, the false-alarm rate on the normal test frames at each bundle's
own calibrated threshold against its target, and the throughput (tiled frames per second, medians
of interleaved rounds on one frame). ``--limit N`` scores at most N frames per class (evenly spread,
deterministic), to keep a run short on a shared machine; the output says so.

    python -m research.int8_check --runs runs --data runs/hires-data --out runs/int8-check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

SETS = {"elpv-mono": "elpv/s0/model.pt", "parts": "parts/s0/model.pt", "brick": "brick/s0/brick/tile64/model.pt",
        "demo": None}


def demo_set(data: str) -> str:
    """``make demo``'s checkpoint (trained as the demo trains it when absent) and its test folders."""
    from examples import demo, scene

    ck = demo.demo_checkpoint(demo._parser().parse_args([]))
    test = os.path.join(data, "demo", "test")
    if not os.path.isdir(os.path.join(test, "abnormal")):
        scene.write_eval_folders(test)
    return ck


def test_frames(data: str, shape: tuple[int, int], channels: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The test frames (normal, then abnormal; ELPV's uncertain cells are left out) and labels."""
    from ganomaly_edge.train.data import load_folder

    xs, ys = [], []
    for label, sub in ((0, "normal"), (1, "abnormal")):
        x = load_folder(os.path.join(data, "test", sub), shape, channels).images
        if limit and len(x) > limit:
            x = x[np.unique(np.linspace(0, len(x) - 1, limit).astype(int))]
        xs.append(x)
        ys.append(np.full(len(x), label))
    return np.concatenate(xs), np.concatenate(ys)


def bundles(ck: str, work: str, ops: str) -> dict[str, str]:
    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.train.export import checkpoint_to_bundle
    from ganomaly_edge.train.int8_build import make_int8

    fp32, int8 = os.path.join(work, "fp32"), os.path.join(work, f"int8-{ops}")
    if not os.path.exists(os.path.join(fp32, "bundle.json")):
        checkpoint_to_bundle(ck, fp32)
    if not os.path.exists(os.path.join(int8, "bundle.json")):
        import shutil

        shutil.copytree(fp32, int8, dirs_exist_ok=True)
        make_int8(open_bundle(int8), None, ops)
    return {"fp32": fp32, "int8": int8}


def evaluate(paths: dict[str, str], x: np.ndarray, y: np.ndarray, threads: int, rounds: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.backends.openvino import openvino_available

    engines = {}
    for prec, b in paths.items():
        for be in ["onnxruntime"] + (["openvino"] if openvino_available() else []):
            engines[f"{be} {prec}"] = load(b, be, threads=threads)
    out = {}
    for name, e in engines.items():
        step = e.max_frames() or 1
        raw = np.concatenate([e.score_frames(x[i:i + step])[0] for i in range(0, len(x), step)])
        cal = e.calibrated(raw)
        c = e.bundle.calibration
        out[name] = {"roc_auc": round(float(roc_auc_score(y, raw)), 4),
                     "test_far": round(float(np.mean(cal[y == 0] > 1.0)), 4), "target_far": c.target_far,
                     "selftest_max_score_diff": round(e.selftest_report["max_score_diff_calibrated"], 4)}
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds + 1):
        for name, e in engines.items():
            t0 = time.perf_counter()
            e.score_frames(x[:1])
            times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["onnxruntime fp32"][1:]))
    for name in engines:
        med = float(np.median(times[name][1:]))
        out[name].update(frame_ms=round(1e3 * med, 1), vs_onnxruntime_fp32=round(base / med, 3))
        engines[name].close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.int8_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", help="folder with the trained runs (elpv/s0/model.pt, ...)")
    ap.add_argument("--data", default="runs/hires-data", help="folder with the sets (elpv-mono/test, ...)")
    ap.add_argument("--out", default="runs/int8-check", help="work folder for the bundles and the report")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--ops", default="conv+deconv", choices=["conv", "conv+deconv"])
    ap.add_argument("--limit", type=int, default=0, help="at most this many test frames per class (0 = all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    report = {"limit_per_class": args.limit or None, "ops": args.ops, "sets": {}}
    for name in args.sets.split(","):
        work = os.path.join(args.out, name)
        os.makedirs(work, exist_ok=True)
        ck = demo_set(args.data) if name == "demo" else os.path.join(args.runs, SETS[name])
        paths = bundles(ck, work, args.ops)
        from ganomaly_edge.engine.bundle import open_bundle

        b = open_bundle(paths["int8"])
        t = b.tiling
        x, y = test_frames(os.path.join(args.data, name), (t.height, t.width), b.input.channels, args.limit)
        res = evaluate(paths, x, y, args.threads, args.rounds)
        report["sets"][name] = {"frames": {"normal": int((y == 0).sum()), "abnormal": int((y == 1).sum())},
                                "quantization": b.meta.quantization.measured, "paths": res}
        print(json.dumps({name: report["sets"][name]}, indent=1), flush=True)
    with open(os.path.join(args.out, f"report-{args.ops}.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
