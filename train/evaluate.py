"""Evaluation of a checkpoint on labelled folders: report.json and plots."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from ganomaly_edge.engine.calibration import calibrate, normalise
from ganomaly_edge.engine.tiling import Tiling

from sklearn.metrics import average_precision_score as average_precision
from sklearn.metrics import roc_auc_score as roc_auc
from sklearn.metrics import roc_curve
from .scoring import CANDIDATES, KNN_K, apply_spec, components, make_spec

log = logging.getLogger(__name__)


def tiling_of(ck: dict[str, Any]) -> Tiling:
    t = ck.get("tiling")
    return Tiling(**t) if t else Tiling.single(ck["config"]["image_size"])


def evaluate(ck: dict[str, Any], normal: np.ndarray, abnormal: np.ndarray, out_dir: str,
             device: str = "cpu", plots: bool = True, masks: np.ndarray | None = None,
             names: list[str] | None = None) -> dict[str, Any]:
    """Score labelled frames (at the checkpoint's working resolution) with every candidate score:
    report.json, scores.csv and plots. ``masks`` (uint8 [N_abnormal, H, W], non-zero = defect)
    adds pixel-level localisation: ROC AUC of the stitched residual map over all pixels."""
    import torch

    from .checkpoint import models_from_checkpoint

    tiling = tiling_of(ck)
    g, d = models_from_checkpoint(ck, device)
    images = np.concatenate([normal, abnormal])
    labels = np.r_[np.zeros(len(normal), np.int64), np.ones(len(abnormal), np.int64)]
    with torch.no_grad():
        comps = components(g, d, tiling.split(images), torch.device(device), bank=ck["bank"],
                           with_images=plots or masks is not None, fbank=ck.get("fbank"), margin=tiling.margin,
                           residual_map=ck["score"].get("residual") or "abs", k=int(ck["score"].get("k", KNN_K)))
    val = {k: np.asarray(v, np.float64) for k, v in ck["val_components"].items()}
    scores: dict[str, Any] = {}
    # A checkpoint from before a component existed cannot score with it.
    available = [n for n, terms in CANDIDATES.items() if all(c in comps and c in val for c, _ in terms)]
    k = int(ck["score"].get("k", KNN_K))
    frame = {n: _frame_scores(tiling, make_spec(n, val, tiling.margin, k), val, comps) for n in available}
    for name in available:
        scores[name] = {"roc_auc": roc_auc(labels, frame[name]),
                        "average_precision": average_precision(labels, frame[name])}
    default, calib = ck["score"], ck["calibration"]
    tile_scores = apply_spec(default, comps)
    cal = normalise(tiling.frame_scores(tile_scores), calib)
    report = _report(ck, tiling, normal, abnormal, default["name"], scores, cal, labels, calib)
    if tiling.count > 1 and all(t["component"] in val for t in default["terms"]):
        # The other way to make frame scores of tiles, for comparison.
        val_scores, geo = apply_spec(default, val), tiling.geometry()
        other = geo if tiling.position_standardised else geo.standardised(val_scores)
        report["position_share"] = geo.position_share(val_scores)
        report["position_stats" if other.position_standardised else "raw_tile_max"] = _alternative_report(
            other.held_out_frame_scores(val_scores), other.frame_scores(tile_scores), labels, calib["target_far"],
            other.describe())
    if ck.get("score_selection"):
        report["score_selection"] = selection_report(ck["score_selection"], scores)
    residual = tiling.stitch(comps["residual"]) if "residual" in comps else None
    if masks is not None:
        kind = ck["score"].get("residual") or "abs"
        report["localisation"] = {**pixel_auroc(residual, labels, masks), "map": kind}
        for other in {"abs", "range"} - {kind}:  # the other map, for comparison
            report["localisation"][f"pixel_roc_auc_{other}"] = pixel_auroc(
                tiling.stitch(comps[f"residual_{other}"]), labels, masks)["pixel_roc_auc"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    _scores_csv(os.path.join(out_dir, "scores.csv"), names, labels, cal, frame)
    if plots:
        recon = stitch_images(tiling, comps["reconstruction"])
        _plots(out_dir, labels, frame, cal, calib["threshold"], default["name"], images, recon, residual)
    return report


def selection_report(selection: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    """The run's label-free choice of score beside what these labels say: each candidate's ROC
    AUC against synthetic anomalies and on the labelled frames, and whether the choice was the
    candidate the labels rank first."""
    cands = [n for n in selection["candidates"] if n in scores]
    by_labels = max(cands, key=lambda n: scores[n]["roc_auc"]) if cands else None
    return {"chosen": selection["chosen"], "best_by_labels": by_labels,
            "agrees": selection["chosen"] == by_labels,
            "candidates": {n: {"synthetic_roc_auc": selection["candidates"][n]["mean_auc"],
                               "roc_auc": scores[n]["roc_auc"]} for n in cands}}


def _frame_scores(tiling: Tiling, spec: dict[str, Any], val: dict[str, np.ndarray],
                  comps: dict[str, np.ndarray]) -> np.ndarray:
    """Frame scores of ``spec`` made the way the checkpoint makes them: the maximum of raw tile
    scores, or of tile scores standardised per position on the held-out frames (with this
    score's own position statistics)."""
    if tiling.position_standardised:
        tiling = tiling.geometry().standardised(apply_spec(spec, val))
    return tiling.frame_scores(apply_spec(spec, comps))


def _alternative_report(val_frames: np.ndarray, frames: np.ndarray, labels: np.ndarray, far: float,
                        how: str) -> dict[str, Any]:
    thr = calibrate(val_frames, far).threshold_raw
    alarm = frames > thr
    return {"frame_scores": how, "roc_auc": roc_auc(labels, frames),
            "average_precision": average_precision(labels, frames),
            "true_positive_rate": float(alarm[labels == 1].mean()),
            "false_alarm_rate": float(alarm[labels == 0].mean())}


def _report(ck, tiling, normal, abnormal, default, scores, cal, labels, calib) -> dict[str, Any]:
    alarm = cal > calib["threshold"]
    return {
        "checkpoint": {"score": default, "image_size": ck["config"]["image_size"],
                       "channels": ck["config"]["channels"], "epochs": ck["epoch"],
                       "arch": ck["config"].get("arch", "paper"), "tiling": tiling.describe()},
        "counts": {"normal": int(len(normal)), "abnormal": int(len(abnormal))},
        "default_score": default,
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


def pixel_auroc(residual: np.ndarray, labels: np.ndarray, masks: np.ndarray, most: int = 4_000_000) -> dict:
    """ROC AUC of residual pixels against the defect masks, over normal and defective frames
    (a seeded sample of at most ``most`` pixels)."""
    truth = np.zeros(residual.shape, bool)
    truth[labels == 1] = masks > 0
    r, t = residual.reshape(-1), truth.reshape(-1)
    if r.size > most:
        pick = np.random.default_rng(0).choice(r.size, most, replace=False)
        r, t = r[pick], t[pick]
    return {"pixel_roc_auc": float(roc_auc(t, r)) if t.any() else None, "pixels": int(r.size)}


def stitch_images(tiling: Tiling, tiles: np.ndarray) -> np.ndarray:
    """uint8 tiles [N * count, t, t, C] -> frames [N, H, W, C], overlaps blended."""
    chans = [tiling.stitch(tiles[..., c].astype(np.float32)) for c in range(tiles.shape[-1])]
    return np.clip(np.stack(chans, -1) + 0.5, 0, 255).astype(np.uint8)


def _scores_csv(path: str, names: list[str] | None, labels: np.ndarray, cal: np.ndarray,
                frame: dict[str, np.ndarray]) -> None:
    cols = sorted(frame)
    with open(path, "w") as f:
        f.write(",".join(["file", "label", "calibrated"] + cols) + "\n")
        for i in range(len(labels)):
            name = names[i] if names else str(i)
            f.write(",".join([name, str(int(labels[i])), f"{cal[i]:.6g}"] + [f"{frame[c][i]:.6g}" for c in cols]) + "\n")


def _plots(out_dir: str, labels: np.ndarray, frame: dict[str, np.ndarray], cal: np.ndarray, thr: float,
           default: str, images: np.ndarray, recon: np.ndarray, residual: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in frame.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, lw=2.5 if name == default else 1, label=f"{name} (AUC {roc_auc(labels, s):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-alarm rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC by score (per frame)")
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
    _grid(out_dir, labels, cal, images, recon, residual)


def _grid(out_dir: str, labels: np.ndarray, cal: np.ndarray, images: np.ndarray, recon: np.ndarray,
          residual: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    pick = [i for c in (0, 1) for i in rng.permutation(np.flatnonzero(labels == c))[:4]]
    fig, axes = plt.subplots(3, len(pick), figsize=(1.6 * len(pick), 5.2), squeeze=False)
    # One colour scale for the row, set by what is shown: an edge-tolerant map is mostly zero,
    # and on the fixed 0..1 scale of the plain residual its defects would be invisible.
    top = max(float(np.percentile(residual[pick], 99.9)), 1e-3)
    for j, i in enumerate(pick):
        img, rec = images[i], recon[i]
        cmap = "gray" if img.shape[2] == 1 else None
        show = (lambda a: a[:, :, 0]) if img.shape[2] == 1 else (lambda a: a[:, :, ::-1])
        axes[0, j].imshow(show(img), cmap=cmap, vmin=0, vmax=255)
        axes[1, j].imshow(show(rec), cmap=cmap, vmin=0, vmax=255)
        axes[2, j].imshow(residual[i], cmap="inferno", vmin=0, vmax=top)
        axes[0, j].set_title(("normal" if labels[i] == 0 else "abnormal") + f"\n{cal[i]:.2f}", fontsize=8)
        for r in range(3):
            axes[r, j].axis("off")
    axes[0, 0].text(-0.3, 0.5, "input", transform=axes[0, 0].transAxes, rotation=90, va="center")
    axes[1, 0].text(-0.3, 0.5, "reconstruction", transform=axes[1, 0].transAxes, rotation=90, va="center")
    axes[2, 0].text(-0.3, 0.5, "residual", transform=axes[2, 0].transAxes, rotation=90, va="center")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "reconstructions.png"), dpi=120)
    plt.close(fig)
