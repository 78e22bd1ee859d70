"""Probe: re-estimate the generator's BatchNorm statistics on the line's recent frames (AdaBN),
then recalibrate on them: a third path beside fine-tune and recalibrate, in seconds, no training.

Runs on a scene folder that ``research.feedback_bench`` wrote (``base.pt``, ``stream1/``,
``stream2/``, ``test/normal``, ``test/abnormal``):

    python -m research.adapt_norm_probe runs/fb-p12/parts --far 0.02
    python -m research.adapt_norm_probe runs/fb2-tc40/tshirt --far 0.02

1. the checkpoint's generator runs over stream 1 (all normal, under the drifted condition) in
   training mode with cumulative BatchNorm averages reset: its running means and variances become
   those of the recent frames; the weights are untouched;
2. ``ganomaly-calibrate adapted.pt --normal stream1/`` sets the threshold on the same frames;
3. ``research.feedback_bench.measure`` scores stream 2 and the test set as for the other paths;
   ``--base-fpr`` (the base's test FPR from report.json, read when not given) adds "TPR at the
   base's FPR".

With the base checkpoint it also prints "drift undone at the input": the base bundle and its own
threshold on frames shifted back by the per-channel mean offset between the training frames and
stream 1, i.e. about what the base model does without the drift.

Untiled checkpoints only (the feedback scenes): a tiled one's kNN bank and position statistics
would have to be made again with the adapted encoder. Research, not product: it reads the test
labels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def adapt(ck_path: str, frames_dir: str, out: str) -> str:
    """A copy of the checkpoint whose generator BatchNorm statistics are those of ``frames_dir``."""
    import torch

    from ganomaly_edge.train.checkpoint import atomic_save, load_checkpoint, models_from_checkpoint
    from ganomaly_edge.train.data import load_folder
    from ganomaly_edge.train.scoring import to_model_input

    ck = load_checkpoint(ck_path)
    cfg = ck["config"]
    if cfg.get("tile"):
        raise SystemExit("a tiled checkpoint: its kNN bank and position statistics would need remaking; not probed")
    g, _ = models_from_checkpoint(ck)
    images = load_folder(frames_dir, (cfg["image_size"], cfg["image_size"]), cfg["channels"]).images
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over every batch
    g.train()
    with torch.no_grad():
        for i in range(0, len(images), 64):
            g(to_model_input(torch.from_numpy(images[i:i + 64])))
    ck["generator"] = g.state_dict()
    atomic_save(ck, out)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from research.feedback_bench import measure

    from ganomaly_edge.train.recalibrate import main as calibrate_main

    ap = argparse.ArgumentParser(prog="python -m research.adapt_norm_probe", description=__doc__.split("\n")[0])
    ap.add_argument("scene_dir", help="a scene folder of research.feedback_bench (e.g. runs/fb-p12/parts)")
    ap.add_argument("--checkpoint", default="base.pt", help="the checkpoint in scene_dir to adapt (default base.pt)")
    ap.add_argument("--far", type=float, default=0.02, help="the recalibration's target (the scenes use 0.02)")
    ap.add_argument("--base-fpr", type=float, help="the base's test FPR (default: from the run's report.json)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = a.scene_dir
    base_fpr = a.base_fpr
    report = os.path.join(os.path.dirname(os.path.abspath(root)), "report.json")
    if base_fpr is None and os.path.exists(report):
        with open(report) as f:
            reps = json.load(f)
        base_fpr = next((r["base"]["test_fpr"] for r in reps if r["scene"] == os.path.basename(root.rstrip("/"))), None)
    stem = os.path.splitext(a.checkpoint)[0]
    ck = adapt(os.path.join(root, a.checkpoint), os.path.join(root, "stream1"), os.path.join(root, f"{stem}-adapted.pt"))
    bundle = os.path.join(root, f"{stem}-adapted-recalibrated-bundle")
    shutil.rmtree(bundle, ignore_errors=True)
    if calibrate_main([ck, "--normal", os.path.join(root, "stream1"), "--far", str(a.far), "--out", bundle]):
        return 1
    folders = {k: os.path.join(root, k) for k in ("train", "stream1", "stream2", "test/normal", "test/abnormal")}
    print(json.dumps({"checkpoint": a.checkpoint, "path": "adapt_norm+recalibrate",
                      **measure(bundle, folders, a.threads, base_fpr)}))
    if a.checkpoint == "base.pt" and os.path.isdir(os.path.join(root, "base-bundle")):
        print(json.dumps({"checkpoint": a.checkpoint, "path": "drift undone at the input",
                          **undo_drift(os.path.join(root, "base-bundle"), folders, a.threads)}))
    return 0


def undo_drift(bundle: str, folders: dict[str, str], threads: int) -> dict:
    """The base bundle, its own threshold, on frames shifted back by the per-channel mean offset
    between the training frames and stream 1: what the model does when the drift is undone (as
    far as an offset and the clipping at 0 and 255 allow), i.e. its figures without the drift."""
    from research.feedback_bench import measure

    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.train.recalibrate import frames_for

    b = open_bundle(bundle)
    train, recent = (frames_for(b, [folders[k]])[0] for k in ("train", "stream1"))
    ch = train.shape[-1]
    offset = train.reshape(-1, ch).mean(0) - recent.reshape(-1, ch).mean(0)
    return {"offset": [round(float(o), 1) for o in offset], **measure(bundle, folders, threads, offset=offset)}

if __name__ == "__main__":
    sys.exit(main())
