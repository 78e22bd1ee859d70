"""Choosing a run's score without labels: held-out normal frames against synthetic anomalies.

Which score reads a line's defects best depends on the line (the edge-tolerant residual on
cast parts, the tile encodings' nearest neighbour on solar cells), and a one-class run has no
defect to tell. Each candidate is therefore tried on the held-out normal frames, which training
never saw, against copies of them carrying synthetic anomalies of several unrelated families
(``synthetic.py``), scored exactly as the deployed score would be: frame scores are the maximum
over tiles, standardised per position where the checkpoint's rule says so. The candidate with
the highest mean ROC AUC over the families wins; each family counts the same, so no one kind of
synthetic defect decides alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ganomaly_edge.engine.tiling import Tiling

from .scoring import ScoreError, apply_spec, make_spec
from .synthetic import FAMILIES, synthetic_anomalies

log = logging.getLogger(__name__)


def roc_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC of positives scored above negatives (scikit-learn's, as ganomaly-eval reports it)."""
    from sklearn.metrics import roc_auc_score

    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def frame_scorer(tiling: Tiling, spec: dict[str, Any], val_comps: dict[str, np.ndarray],
                 position_rule) -> tuple[Tiling, np.ndarray]:
    """(the tiling the spec would deploy with, the held-out frames' scores as new frames would
    score): ``position_rule(tiling, val_tile_scores)`` is the checkpoint's own decision."""
    val_tiles = apply_spec(spec, val_comps)
    tiling = position_rule(tiling, val_tiles)
    return tiling, tiling.held_out_frame_scores(val_tiles)


def select_score(candidates: tuple[str, ...], tiling: Tiling, margin: int, k: int,
                 val_frames: np.ndarray, val_comps: dict[str, np.ndarray], components_of, position_rule,
                 seed: int) -> dict[str, Any]:
    """The candidate whose frame scores best separate the held-out normal frames from synthetic
    anomalies drawn on them; ``components_of(frames)`` gives every component of the frames'
    tiles. Returns {"chosen", "candidates": {name: {"mean_auc", family: auc, ...}},
    "families", "synthetic_frames"}."""
    synth, family = synthetic_anomalies(val_frames, seed)
    synth_comps = components_of(synth)
    table: dict[str, dict[str, float]] = {}
    for name in candidates:
        spec = make_spec(name, val_comps, margin, k)
        if any(t["component"] not in synth_comps for t in spec["terms"]):
            continue
        deployed, normal = frame_scorer(tiling, spec, val_comps, position_rule)
        anomalous = deployed.frame_scores(apply_spec(spec, synth_comps))
        aucs = {f: roc_auc(normal, anomalous[family == i]) for i, f in enumerate(FAMILIES)}
        table[name] = {"mean_auc": float(np.mean(list(aucs.values()))), **aucs}
    if not table:
        raise ScoreError(f"none of the candidate scores {candidates} can be computed by this model")
    chosen = max(table, key=lambda n: table[n]["mean_auc"])
    for name, row in sorted(table.items(), key=lambda kv: -kv[1]["mean_auc"]):
        log.info("score %-10s ROC AUC against synthetic anomalies %.3f (%s)%s", name, row["mean_auc"],
                 ", ".join(f"{f} {row[f]:.2f}" for f in FAMILIES), "  <- chosen" if name == chosen else "")
    return {"chosen": chosen, "candidates": table, "families": list(FAMILIES),
            "synthetic_frames": int(len(synth)), "held_out_frames": int(len(val_frames))}
