"""Evaluation of a checkpoint on labelled folders: report.json and plots."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from ganomaly_edge.engine.calibration import normalise

from sklearn.metrics import average_precision_score as average_precision
from sklearn.metrics import roc_auc_score as roc_auc
from sklearn.metrics import roc_curve
from .scoring import CANDIDATES, apply_spec, components, make_spec

log = logging.getLogger(__name__)


def evaluate(ck: dict[str, Any], normal: np.ndarray, abnormal: np.ndarray, out_dir: str,
             device: str = "cpu", plots: bool = True) -> dict[str, Any]:
    import torch

    from .checkpoint import models_from_checkpoint

    g, d = models_from_checkpoint(ck, device)
    images = np.concatenate([normal, abnormal])
    labels = np.r_[np.zeros(len(normal), np.int64), np.ones(len(abnormal), np.int64)]
    with torch.no_grad():
        comps = components(g, d, images, torch.device(device), bank=ck["bank"], with_images=plots,
                           fbank=ck.get("fbank"))
    val = {k: np.asarray(v, np.float64) for k, v in ck["val_components"].items()}
    scores: dict[str, Any] = {}
    # A checkpoint from before a component existed cannot score with it.
    available = [n for n, terms in CANDIDATES.items() if all(c in comps and c in val for c, _ in terms)]
    for name in available:
        s = apply_spec(make_spec(name, val), comps)
        scores[name] = {"roc_auc": roc_auc(labels, s), "average_precision": average_precision(labels, s)}
    default = ck["score"]
    calib = ck["calibration"]
    cal = normalise(apply_spec(default, comps), calib)
    alarm = cal > calib["threshold"]
    report = {
        "checkpoint": {"score": default["name"], "image_size": ck["config"]["image_size"],
                       "channels": ck["config"]["channels"], "epochs": ck["epoch"]},
        "counts": {"normal": int(len(normal)), "abnormal": int(len(abnormal))},
        "default_score": default["name"],
        "scores": scores,
        "at_threshold": {
            "threshold": calib["threshold"],
            "target_far": calib["target_far"],
            "true_positive_rate": float(alarm[labels == 1].mean()),
            "false_alarm_rate": float(alarm[labels == 0].mean()),
            "true_positives": int(alarm[labels == 1].sum()),
            "false_alarms": int(alarm[labels == 0].sum()),
        },
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    if plots:
        _plots(out_dir, labels, comps, val, cal, calib["threshold"], default["name"], images)
    return report


def _plots(out_dir: str, labels: np.ndarray, comps: dict, val: dict, cal: np.ndarray, thr: float,
           default: str, images: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in [n for n, terms in CANDIDATES.items() if all(c in comps and c in val for c, _ in terms)]:
        s = apply_spec(make_spec(name, val), comps)
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, lw=2.5 if name == default else 1, label=f"{name} (AUC {roc_auc(labels, s):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-alarm rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC by score")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "roc.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    lo, hi = np.percentile(cal, [0.5, 99.5])
    bins = np.linspace(min(lo, 0), max(hi, thr * 1.2), 60)
    ax.hist(np.clip(cal[labels == 0], bins[0], bins[-1]), bins, alpha=0.6, label="normal")
    ax.hist(np.clip(cal[labels == 1], bins[0], bins[-1]), bins, alpha=0.6, label="abnormal")
    ax.axvline(thr, color="k", ls="--", label=f"threshold {thr:g}")
    ax.set_xlabel(f"calibrated score ({default})")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "histogram.png"), dpi=120)
    plt.close(fig)

    rng = np.random.default_rng(0)
    pick = [i for c in (0, 1) for i in rng.permutation(np.flatnonzero(labels == c))[:4]]
    fig, axes = plt.subplots(3, len(pick), figsize=(1.6 * len(pick), 5.2))
    for j, i in enumerate(pick):
        img, rec = images[i], comps["reconstruction"][i]
        cmap = "gray" if img.shape[2] == 1 else None
        show = (lambda a: a[:, :, 0]) if img.shape[2] == 1 else (lambda a: a[:, :, ::-1])
        axes[0, j].imshow(show(img), cmap=cmap, vmin=0, vmax=255)
        axes[1, j].imshow(show(rec), cmap=cmap, vmin=0, vmax=255)
        axes[2, j].imshow(comps["residual"][i], cmap="inferno", vmin=0, vmax=1)
        axes[0, j].set_title(("normal" if labels[i] == 0 else "abnormal") + f"\n{cal[i]:.2f}", fontsize=8)
        for r in range(3):
            axes[r, j].axis("off")
    axes[0, 0].text(-0.3, 0.5, "input", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.3, 0.5, "reconstruction", transform=axes[1, 0].transAxes, rotation=90, va="center")
    axes[2, 0].text(-0.3, 0.5, "residual", transform=axes[2, 0].transAxes, rotation=90, va="center")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "reconstructions.png"), dpi=120)
    plt.close(fig)
