"""Does feedback from the line help? One command, both scenes, both paths:

    python -m research.feedback_bench --out runs/feedback [--scene tshirt parts]

For each scene (the demo's T-shirts, examples/scene.py; the cast parts stand-in, tools/defects.py):

1. a base model is trained on normal frames as the scene renders them (ganomaly-train);
2. the line then runs under a changed condition (its lighting: ``--drift``), which the training
   frames did not show: a fresh normal stream raises alarms (the bundle on ONNX Runtime, scored
   as the agent scores a scanner folder: one frame per item, calibrated score above 1.0);
3. every alarm on that stream is a false alarm (the stream is all normal): they are exported as
   the console's export writes them (frames at the working resolution);
4. three paths: fine-tune, ``ganomaly-train --init-from base.pt --data train/ --data exported/``
   within the budget (its threshold set on held-out frames of both folders, as the trainer
   does); recalibrate, ``ganomaly-calibrate base-bundle --normal stream1/`` (the recent frames
   of the line, the false alarms among them); and both, the fine-tuned checkpoint recalibrated
   on stream 1 (``ganomaly-calibrate finetuned.pt --normal stream1/``). A control tells what the
   exported frames added: the same fine-tune on the training folder alone, recalibrated the same
   way (``--no-control`` skips it); and fine-tune on the recent frames, the training folder and
   the whole of stream 1 (``[history] sample_every`` keeps such a sample on a device), its
   threshold set on held-out frames of both, as the trainer does;
5. a second fresh normal stream and a labelled test set (normal and defective items under the
   same condition) measure each model: false alarms on stream 2 (goal: at most half of stream 1)
   and the test set's TPR at each model's threshold (goal: down by at most 0.02).

Writes report.json and report.md under --out; frames and models are kept there, and a base
model already trained there is reused (delete the folder to start afresh). The swap itself is
the agent's (tests/test_hot_swap.py); here each bundle scores the streams directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

SCENES = {
    # image size, channels, base epochs, score, per-frame false-alarm target, brightness drift
    "tshirt": {"size": 32, "channels": 3, "epochs": 30, "score": "peak", "far": 0.02},
    "parts": {"size": 64, "channels": 1, "epochs": 30, "score": "peak", "far": 0.02},
}


DRIFT_KINDS = ("light", "colour")
DRIFT_KIND = "light"  # set by --drift-kind


def _drift(frame: np.ndarray, beta: float) -> np.ndarray:
    """The line's lighting changed. ``light``: brighter by ``beta`` grey levels, and 5 % more
    contrast; ``colour`` (colour frames): a warmer lamp, red up and blue down by ``beta``."""
    if DRIFT_KIND == "colour" and frame.ndim == 3 and beta:
        shift = np.array([-beta, 0.0, beta], np.float32)  # BGR
        return np.clip(frame.astype(np.float32) + shift, 0, 255).astype(np.uint8)
    return cv2.convertScaleAbs(frame, alpha=1.05 if beta else 1.0, beta=beta)


def tshirt_sets(n_train: int, n_stream: int, n_test: int, drift: float, seed: int) -> dict[str, list]:
    from examples import scene

    rng = np.random.default_rng(seed)
    x, y, w, h = scene.ROI

    def shot(item, beta):
        f, _ = scene.render(item, rng, tuple(int(v) for v in rng.integers(-3, 4, 2)))
        f = cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 92])[1], cv2.IMREAD_COLOR)
        return _drift(f, beta)[y:y + h, x:x + w]

    # Streams: shirts of the training split the base never saw; the test set: the test split's.
    train = [shot(it, 0) for it in scene.normal_items(n_train, "train")]
    stream = scene.normal_items(2 * n_stream, "train", offset=n_train)
    unseen = scene.normal_items(n_test, "test")
    test = scene.stream_items(2 * n_test, anomaly_every=2, seed=seed + 1)
    if len(stream) < 2 * n_stream or len(unseen) < n_test:
        raise ValueError(f"the scene has {len(stream)} unseen training-split shirts for 2 x --stream {n_stream} and "
                         f"{len(unseen)} test-split shirts for --test {n_test}: ask for fewer")
    return {"train": train, "stream1": [shot(it, drift) for it in stream[:n_stream]],
            "stream2": [shot(it, drift) for it in stream[n_stream:]],
            "test/normal": [shot(it, drift) for it in unseen],
            "test/abnormal": [shot(it, drift) for it in test if it.kind != "normal"]}


def parts_sets(n_train: int, n_stream: int, n_test: int, drift: float, seed: int, size: int = 64) -> dict[str, list]:
    from ganomaly_edge.tools import defects

    base = defects.parts(n_train, n_test, size=size, seed=seed, extents=(20, 30, 40))
    rng = np.random.default_rng(seed + 7)
    fresh = [_drift(defects.part(size, rng)[0], drift) for _ in range(2 * n_stream)]
    return {"train": base["train"], "stream1": fresh[:n_stream], "stream2": fresh[n_stream:],
            "test/normal": [_drift(i, drift) for i in base["normal"]],
            "test/abnormal": [_drift(i, drift) for i in base["abnormal"]]}


def write_sets(sets: dict[str, list], root: str) -> dict[str, str]:
    out = {}
    for name, images in sets.items():
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for i, img in enumerate(images):
            cv2.imwrite(os.path.join(d, f"{i:05d}.png"), img)
        out[name] = d
    return out


def train_base(scene: str, folders: dict[str, str], root: str, threads: int, seed: int = 0,
               epochs: int | None = None) -> tuple[str, str]:
    from ganomaly_edge.train.cli import train_main
    from ganomaly_edge.train.export import checkpoint_to_bundle

    c = SCENES[scene]
    ck, bundle = os.path.join(root, "base.pt"), os.path.join(root, "base-bundle")
    if not os.path.exists(ck):
        rc = train_main(["--data", folders["train"], "--out", ck, "--image-size", str(c["size"]), "--channels",
                         str(c["channels"]), "--epochs", str(epochs or c["epochs"]), "--score", c["score"], "--far",
                         str(c["far"]), "--width", "32", "--threads", str(threads), "--patience", "0", "--seed", str(seed), "--quiet"])
        if rc:
            raise RuntimeError("training the base model failed")
    if not os.path.exists(os.path.join(bundle, "bundle.json")):
        checkpoint_to_bundle(ck, bundle, name=f"{scene}-base")
    return ck, bundle


def scores(bundle: str, folder: str, threads: int, offset: np.ndarray | None = None) -> np.ndarray:
    """Calibrated scores of a folder's frames, as the agent computes them; ``offset``: grey levels
    added to every frame first, per channel (clipped to 0..255)."""
    from ganomaly_edge.engine import load
    from ganomaly_edge.train.recalibrate import frames_for

    with load(bundle, "onnxruntime", threads=threads) as e:
        frames, _ = frames_for(e.bundle, [folder])
        if offset is not None:
            frames = np.clip(frames.astype(np.float32) + offset, 0, 255).astype(np.uint8)
        raw = np.concatenate([e.score_frames(frames[i:i + 64], e.bundle.tiling)[0]
                              for i in range(0, len(frames), 64)])
        return e.calibrated(raw)


def export_alarms(bundle: str, folder: str, out: str, threads: int) -> int:
    """The stream's alarms, every one a false alarm, written as the export writes them."""
    s = scores(bundle, folder, threads)
    names = sorted(os.listdir(folder))
    os.makedirs(out, exist_ok=True)
    for name, score in zip(names, s):
        if score > 1.0:
            cv2.imwrite(os.path.join(out, name), cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED))
    return int((s > 1.0).sum())


def measure(bundle: str, folders: dict[str, str], threads: int, at_fpr: float | None = None,
            offset: np.ndarray | None = None) -> dict[str, float]:
    """False alarms on stream 2; TPR, FPR and ROC AUC on the test set at the bundle's threshold;
    with ``at_fpr``, also the TPR where this model's test FPR equals that (the base's): a base whose
    TPR was bought with a high FPR is then compared at the same FPR. ``offset``: see ``scores``."""
    fa2 = scores(bundle, folders["stream2"], threads, offset)
    normal, abnormal = (scores(bundle, folders[k], threads, offset) for k in ("test/normal", "test/abnormal"))
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(abnormal))], np.r_[normal, abnormal])
    out = {"false_alarms_stream2": int((fa2 > 1.0).sum()), "stream2": int(len(fa2)),
           "tpr": round(float(np.mean(abnormal > 1.0)), 4), "test_fpr": round(float(np.mean(normal > 1.0)), 4),
           "auc": round(float(auc), 4)}
    if at_fpr is not None:
        # the threshold that lets this share of the normal test frames through, as the base's did
        thr = np.sort(normal)[::-1][int(round(at_fpr * len(normal)))] if at_fpr < 1 else -np.inf
        out["tpr_at_base_fpr"] = round(float(np.mean(abnormal > thr)), 4)
    return out


def run_scene(scene: str, args) -> dict:
    root = os.path.join(args.out, scene)
    make = tshirt_sets if scene == "tshirt" else parts_sets
    if not os.path.isdir(os.path.join(root, "stream2")):
        write_sets(make(args.train, args.stream, args.test, args.drift, args.seed), root)
    folders = {k: os.path.join(root, k) for k in ("train", "stream1", "stream2", "test/normal", "test/abnormal")}
    ck, base = train_base(scene, folders, root, args.threads, args.seed, args.base_epochs)
    exported = os.path.join(root, "exported")
    fa1 = export_alarms(base, folders["stream1"], exported, args.threads)
    rep = {"scene": scene, "drift": args.drift, "drift_kind": args.drift_kind, "false_alarms_stream1": fa1, "stream1": args.stream,
           "base": measure(base, folders, args.threads)}
    args.base_fpr = rep["base"]["test_fpr"]
    rep["base"]["tpr_at_base_fpr"] = rep["base"]["tpr"]
    if fa1 == 0:
        rep["note"] = "no false alarm on stream 1: nothing to learn from (raise --drift or --stream)"
        return rep
    rep["fine_tune"] = fine_tune(ck, folders, exported, root, args)
    rep["recalibrate"] = recalibrate(base, folders, root, args)
    rep["fine_tune+recalibrate"] = recalibrate(os.path.join(root, "finetuned.pt"), folders, root, args,
                                               "finetuned-recalibrated-bundle")
    rep["fine_tune_recent"] = fine_tune(ck, folders, folders["stream1"], root, args, "finetuned-recent")
    if args.control:
        fine_tune(ck, folders, None, root, args, "control")
        rep["control"] = recalibrate(os.path.join(root, "control.pt"), folders, root, args, "control-recalibrated-bundle")
    for path in PATHS + (("control",) if args.control else ()):
        r = rep[path]
        r["goal_false_alarms"] = r["false_alarms_stream2"] <= fa1 / 2
        r["goal_tpr"] = r["tpr"] >= rep["base"]["tpr"] - 0.02
    return rep


def fine_tune(ck: str, folders: dict[str, str], exported: str | None, root: str, args,
              name: str = "finetuned") -> dict:
    """``ganomaly-train --init-from`` on the training folder and the exported frames (none: the
    control, the same schedule on the training folder alone)."""
    from ganomaly_edge.train.cli import train_main
    from ganomaly_edge.train.export import checkpoint_to_bundle

    out, bundle = os.path.join(root, f"{name}.pt"), os.path.join(root, f"{name}-bundle")
    if args.reuse and os.path.exists(os.path.join(bundle, "bundle.json")):
        return {"seconds": None, **measure(bundle, folders, args.threads, args.base_fpr)}
    data = ["--data", folders["train"]] + (["--data", exported] if exported else [])
    t0 = time.monotonic()
    rc = train_main(["--init-from", ck, *data, "--out", out, "--time-budget", str(args.budget),
                     "--threads", str(args.threads), "--seed", str(args.seed), "--quiet"])
    if rc:
        raise RuntimeError("fine-tuning failed")
    seconds = time.monotonic() - t0
    checkpoint_to_bundle(out, bundle, name=name)
    return {"seconds": round(seconds, 1), "command": f"ganomaly-train --init-from {ck} {' '.join(data)} --out {out} "
            f"--time-budget {args.budget}", **measure(bundle, folders, args.threads, args.base_fpr)}


PATHS = ("fine_tune", "recalibrate", "fine_tune+recalibrate", "fine_tune_recent")


def recalibrate(base: str, folders: dict[str, str], root: str, args, name: str = "recalibrated-bundle") -> dict:
    """``ganomaly-calibrate`` of a bundle or checkpoint on stream 1's frames."""
    import shutil

    from ganomaly_edge.train.recalibrate import main as calibrate_main

    out = os.path.join(root, name)
    if args.reuse and os.path.exists(os.path.join(out, "bundle.json")):
        return {"seconds": None, **measure(out, folders, args.threads, args.base_fpr)}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    if calibrate_main([base, "--normal", folders["stream1"], "--far", str(SCENES[args_scene(root)]["far"]),
                       "--out", out]):
        raise RuntimeError("recalibration failed")
    return {"seconds": round(time.monotonic() - t0, 1), "command": f"ganomaly-calibrate {base} --normal "
            f"{folders['stream1']} --out {out}", **measure(out, folders, args.threads, args.base_fpr)}


def args_scene(root: str) -> str:
    return os.path.basename(os.path.normpath(root))


def report_md(reps: list[dict]) -> str:
    lines = ["| scene | drift | model | false alarms, stream 1 | false alarms, stream 2 | TPR (test) | FPR (test) | "
             "ROC AUC (test) | TPR at the base's test FPR | goal FA <= half | goal TPR -0.02 | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reps:
        for path in ("base", *PATHS, "control"):
            m = r.get(path)
            if m is None:
                continue
            lines.append(f"| {r['scene']} | {r['drift']:g} {r.get('drift_kind', 'light')} | {path} | {r['false_alarms_stream1']}/{r['stream1']} | "
                         f"{m['false_alarms_stream2']}/{m['stream2']} | {m['tpr']:.3f} | {m['test_fpr']:.3f} | "
                         f"{m['auc']:.3f} | {m.get('tpr_at_base_fpr', float('nan')):.3f} | "
                         f"{m.get('goal_false_alarms', '')} | {m.get('goal_tpr', '')} | {m.get('seconds') or ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.feedback_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/feedback")
    ap.add_argument("--scene", nargs="+", choices=sorted(SCENES), default=sorted(SCENES))
    ap.add_argument("--train", type=int, default=800, help="normal frames the base model trains on")
    ap.add_argument("--stream", type=int, default=300, help="items per normal stream (two of them)")
    ap.add_argument("--test", type=int, default=200, help="normal and defective items in the test set, each")
    ap.add_argument("--drift", type=float, default=12.0, help="the line's change in grey levels (see --drift-kind)")
    ap.add_argument("--drift-kind", choices=DRIFT_KINDS, default="light",
                    help="light: brighter by --drift and 5 %% more contrast; colour (T-shirts): a warmer lamp, red "
                         "up and blue down by --drift")
    ap.add_argument("--budget", type=float, default=3.0, help="fine-tuning budget, minutes (at most 5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base-epochs", type=int, help="epochs of the base model (default: the scene's, 30)")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control (the fine-tune without the exported frames)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="measure the fine-tuned and recalibrated bundles already "
                                                         "under --out instead of making them again")
    args = ap.parse_args(argv)
    if not 0 < args.budget <= 5:
        print("error: --budget must be in (0, 5] minutes", file=sys.stderr)
        return 2
    global DRIFT_KIND
    DRIFT_KIND = args.drift_kind
    reps = [run_scene(s, args) for s in args.scene]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(reps, f, indent=2)
    md = report_md(reps)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
