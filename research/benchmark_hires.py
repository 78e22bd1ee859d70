"""The high-resolution benchmark: small defects at native resolution, 64 px resize against tiles,
the paper's generator against Skip-GANomaly's, every score.

Data (``tools/defects.py``, written once under ``--data``):

- ``parts``: 1,000 rendered cast parts (300 x 300 grey) to train on, 200 normal and 200 defective
  test parts (blowholes, cracks, rim chips, burrs of 5 to 60 px);
- ``brick``, ``grass``, ``gravel``: scikit-image's photographs, 256 px crops, 300 to train on
  (left half of the photograph), 80 normal and 80 defective test crops (right half; scratches,
  cracks, spots and missing patches of 6 to 48 px).
- ``elpv-mono``: real defects, electroluminescence photographs of monocrystalline solar cells
  (``research/elpv.py``; the ``elpv-dataset`` package): 470 normal cells to train on, 118 normal and
  313 defective cells to test (cracks, broken fingers, inactive areas). No masks: image-level
  figures only.

Each configuration is trained with ``ganomaly-train`` (the CLI, in this process) and evaluated
with the evaluation code ``ganomaly-eval`` runs, which also gives the pixel-level ROC AUC against
the defect masks. Nothing looks at a test label before the final figures: training, model
selection, early stopping and the threshold use normal training images only.

    python -m research.benchmark_hires --set parts --config resize64 --config tile64 \\
        --config tile64-paper --config resize64-skip --budget 8 --out runs/hires
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time

import numpy as np

log = logging.getLogger("benchmark")

SETS = ("parts", "brick", "grass", "gravel", "elpv-mono")
CONFIGS = {
    "resize64": ["--image-size", "64"],  # the paper's generator; --arch paper is the untiled default
    "resize64-skip": ["--image-size", "64", "--arch", "skip"],
    "tile64": ["--tile", "64"],  # the tile defaults: skip generator, score chosen on synthetic anomalies, patches
    "tile64-paper": ["--tile", "64", "--arch", "paper"],
    "tile64-plain": ["--tile", "64", "--corrupt", "0"],  # no foreign patches: plain reconstruction
}
SMALL = 0.05  # "small": a defect under 5 % of the image side


def write_set(name: str, root: str) -> str:
    from ganomaly_edge.tools.defects import parts, textures, write

    folder = os.path.join(root, name)
    if name == "elpv-mono":
        from .elpv import write_mono

        return write_mono(folder)
    if not os.path.exists(os.path.join(folder, "test", "defects.csv")):
        sets = parts(1000, 200) if name == "parts" else textures(name, 256, 300, 80)
        write(sets, folder)
        log.info("wrote %s", folder)
    return folder


def subset_auc(labels: np.ndarray, scores: np.ndarray, keep: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    sel = (labels == 0) | keep
    if not keep.any():
        return None
    return float(roc_auc_score(labels[sel], scores[sel]))


def by_size(report_dir: str, data: str) -> dict[str, dict[str, float | None]]:
    """ROC AUC of every score on the small (< 5 % of the side) and the larger defects, each
    against all normal test images, from ganomaly-eval's scores.csv and the set's defects.csv."""
    sizes_csv = os.path.join(data, "test", "defects.csv")
    if not os.path.exists(sizes_csv):  # a real set without defect sizes (elpv-mono)
        return {}
    share = {r["file"]: float(r["share_of_side"]) for r in csv.DictReader(open(sizes_csv))}
    rows = list(csv.DictReader(open(os.path.join(report_dir, "scores.csv"))))
    labels = np.array([int(r["label"]) for r in rows])
    sizes = np.array([share.get(os.path.basename(r["file"]), 0.0) if int(r["label"]) else 0.0 for r in rows])
    out = {}
    for col in [c for c in rows[0] if c not in ("file", "label")]:
        s = np.array([float(r[col]) for r in rows])
        out[col] = {"small": subset_auc(labels, s, (labels == 1) & (sizes < SMALL)),
                    "large": subset_auc(labels, s, (labels == 1) & (sizes >= SMALL))}
    return out


def rescore(ck_path: str, train_dir: str, score: str | None, stride: int | None, out_path: str) -> str:
    """The checkpoint's networks with bank, calibration and score made anew by the current code
    (train/checkpoint.finalise on the same split of the same images), optionally with another
    score or tile stride: a new score is compared on the same networks without retraining."""
    import torch

    from ganomaly_edge.engine.tiling import Tiling
    from ganomaly_edge.train.checkpoint import atomic_save, finalise, load_checkpoint, models_from_checkpoint
    from ganomaly_edge.train.data import load_folder, split
    from ganomaly_edge.train.evaluate import tiling_of

    ck = load_checkpoint(ck_path)
    cfg, t = ck["config"], tiling_of(ck).geometry()
    if stride:
        t = Tiling(t.tile, stride, t.height, t.width, t.margin)
    images = load_folder(train_dir, (t.height, t.width), cfg["channels"]).images
    tr, val = split(len(images), cfg["val_fraction"], cfg["seed"])
    g, d = models_from_checkpoint(ck)
    ck.update(finalise(g, d, images[tr], images[val], score or cfg["score"], cfg["target_far"],
                       torch.device("cpu"), cfg["seed"], t, position_stats=cfg.get("position_stats", True)))
    if not t.tiled:
        ck["tiling"] = None
    ck["config"] = {**cfg, "score": ck["score"]["name"], "stride": t.stride if t.tiled else 0}
    atomic_save(ck, out_path)
    return out_path


def run_config(set_name: str, data: str, config: str, args: argparse.Namespace) -> dict:
    from ganomaly_edge.train.checkpoint import load_checkpoint
    from ganomaly_edge.train.cli import eval_main, train_main

    work = os.path.join(args.out, set_name, config)
    os.makedirs(work, exist_ok=True)
    ck = os.path.join(work, "model.pt")
    argv = ["--data", os.path.join(data, "train"), "--out", ck, "--channels", "1", "--quiet",
            "--seed", str(args.seed), *CONFIGS[config]]
    if args.budget:
        argv += ["--time-budget", str(args.budget)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if not (args.reuse and os.path.exists(ck)):
        t0 = time.monotonic()
        if train_main(argv) != 0:
            raise SystemExit(f"training {config} on {set_name} failed")
        train_s = time.monotonic() - t0
    else:
        train_s = float("nan")
    if args.score or args.stride:  # the same networks, scored anew
        ck = rescore(ck, os.path.join(data, "train"), args.score, args.stride,
                     os.path.join(work, f"model-{args.score or 'default'}-s{args.stride or 0}.pt"))
        work = ck[:-3]
    rep_dir = os.path.join(work, "report")
    test = os.path.join(data, "test")
    t0 = time.monotonic()
    masks = os.path.join(test, "masks")
    if eval_main([ck, "--normal", os.path.join(test, "normal"), "--abnormal", os.path.join(test, "abnormal"),
                  *(["--masks", masks] if os.path.isdir(masks) else []), "--out", rep_dir]) != 0:
        raise SystemExit(f"evaluating {config} on {set_name} failed")
    eval_s = time.monotonic() - t0
    rep = json.load(open(os.path.join(rep_dir, "report.json")))
    c = load_checkpoint(ck)
    return {"set": set_name, "config": config + (f" (stride {args.stride})" if args.stride else ""),
            "train_args": " ".join(CONFIGS[config]),
            "train_minutes": round(train_s / 60, 2), "eval_seconds": round(eval_s, 1), "epochs": c["epoch"],
            "tiling": rep["checkpoint"]["tiling"], "default_score": rep["default_score"],
            "roc_auc": {k: round(v["roc_auc"], 4) for k, v in rep["scores"].items()},
            "at_threshold": rep["at_threshold"],
            "other_frame_scores": rep.get("raw_tile_max") or rep.get("position_stats"),
            "pixel_roc_auc": (rep.get("localisation") or {}).get("pixel_roc_auc"),
            "pixel_roc_auc_abs": (rep.get("localisation") or {}).get("pixel_roc_auc_abs"),
            "residual_map": (rep.get("localisation") or {}).get("map"),
            "score_selection": rep.get("score_selection"),
            "by_size": by_size(rep_dir, data)}


def table(results: list[dict]) -> str:
    lines = ["| set | config | epochs | train min | default score | ROC AUC | AUC small / large defects | "
             "TPR at threshold | false alarms | pixel AUROC (map; abs map) |", "|---" * 10 + "|"]
    for r in results:
        d = r["default_score"]
        bs = r["by_size"].get(d, {})
        f = (lambda v: "-" if v is None else f"{v:.3f}")
        t = r["at_threshold"]
        lines.append(f"| {r['set']} | {r['config']} | {r['epochs']} | {r['train_minutes']:.1f} | {d} | "
                     f"{r['roc_auc'][d]:.3f} | {f(bs.get('small'))} / {f(bs.get('large'))} | "
                     f"{t['true_positive_rate']:.3f} | {t['false_alarm_rate']:.3f} | {f(r['pixel_roc_auc'])} ({r['residual_map']}"
                     + ("" if r.get("pixel_roc_auc_abs") is None else f"; {r['pixel_roc_auc_abs']:.3f}") + ") |")
    chosen = [r for r in results if r.get("score_selection")]
    if chosen:
        lines += ["", "The score chosen without labels (synthetic anomalies on held-out normal frames) against "
                      "the labels' ranking of the same candidates:", "",
                  "| set | config | chosen | best by the labels | candidates: synthetic ROC AUC / ROC AUC here |",
                  "|---|---|---|---|---|"]
        for r in chosen:
            sel = r["score_selection"]
            cells = ", ".join(f"{n} {c['synthetic_roc_auc']:.3f} / {c['roc_auc']:.3f}" for n, c in sel["candidates"].items())
            lines.append(f"| {r['set']} | {r['config']} | {sel['chosen']} | {sel['best_by_labels']} | {cells} |")
    scores = sorted({s for r in results for s in r["roc_auc"]})
    lines += ["", "ROC AUC of every score (small-defect AUC in brackets):", "",
              "| set | config | " + " | ".join(scores) + " |", "|---" * (len(scores) + 2) + "|"]
    for r in results:
        cells = []
        for s in scores:
            a, sm = r["roc_auc"].get(s), r["by_size"].get(s, {}).get("small")
            cells.append("-" if a is None else f"{a:.3f}" + ("" if sm is None else f" ({sm:.3f})"))
        lines.append(f"| {r['set']} | {r['config']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.benchmark_hires", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", choices=SETS, help="data set (repeatable; default parts)")
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS),
                    help="configuration (repeatable; default resize64 and tile64)")
    ap.add_argument("--budget", type=float, default=0.0, help="--time-budget of each training, minutes")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="runs/hires-data", help="where the data sets are written")
    ap.add_argument("--out", default="runs/hires")
    ap.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints again, no training")
    ap.add_argument("--score", help="rescore the trained networks with this deployed score (bank and "
                                    "calibration made anew; no retraining)")
    ap.add_argument("--stride", type=int, help="rescore with this tile stride")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = []
    for s in args.set or ["parts"]:
        data = write_set(s, args.data)
        for c in args.config or ["resize64", "tile64"]:
            results.append(run_config(s, data, c, args))
            log.info("%s / %s: %s", s, c, json.dumps({k: results[-1][k] for k in ("train_minutes", "epochs")}))
    os.makedirs(args.out, exist_ok=True)
    name = "results-" + "-".join(args.set or ["parts"]) + ".json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
