"""Probe a trained tiled checkpoint's label-free score selection and its calibration, beside the
test labels: which candidate the synthetic anomalies favour at several contrasts, and what each
candidate's threshold does on the labelled test set with two calibration sets.

For every candidate of the automatic choice (scoring.AUTO_CANDIDATES), deployed as the checkpoint
would deploy it (maximum over tiles, position statistics by the run's own rule):

- ROC AUC on the test labels (``test/normal`` against ``test/abnormal``);
- mean ROC AUC over the synthetic families (train/synthetic.py) on the held-out normal frames,
  at each contrast of ``--scales`` (1 = the families as training draws them; 0.5 = half the grey
  level change of a cut, scratch, blob or drop; patches have no contrast and stay as they are);
- at the first contrast, two criteria nearer the operating point: the mean over the families of
  the standardised partial ROC AUC up to 10 % false alarms (``synthetic_pauc``), and the share of
  each family's frames above the threshold calibrated on the held-out frames
  (``synthetic_detected``, in FAMILIES order), as the deployed threshold would judge them;
- TPR and false-alarm rate on the test set at the threshold calibrated on the held-out frames,
  and, for ``knn``, at one calibrated on the held-out frames plus every training frame scored
  against the bank without its own tiles (leave one frame out: ten times the frames);
- for ``peak+knn`` and ``rpeak+knn``, the test ROC AUC of other ways to put the two components
  on one scale (``COMBINE``), summed or maxed per tile, the frame's score the maximum over tiles.

    python -m research.selection_probe runs/elpv/s0/model.pt runs/hires-data/elpv-mono --scales 1,0.5,0.25

Research, not product: it reads test labels to say whether a label-free choice was right.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def synthetic_at(frames: np.ndarray, seed: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic families of train/synthetic.py with their grey-level change times ``scale``."""
    from ganomaly_edge.train import synthetic as S

    synth, fam = S.synthetic_anomalies(frames, seed)
    if scale == 1.0:
        return synth, fam
    base = np.repeat(frames[None], len(S.FAMILIES), 0).reshape(synth.shape)
    scaled = np.clip(base + (synth.astype(np.float32) - base) * scale, 0, 255).astype(np.uint8)
    patch = fam == S.FAMILIES.index("patch")
    scaled[patch] = synth[patch]
    return scaled, fam


def main(argv: list[str] | None = None) -> int:
    import torch

    from ganomaly_edge.engine.calibration import calibrate
    from ganomaly_edge.train.checkpoint import bank_tiles, load_checkpoint, models_from_checkpoint
    from ganomaly_edge.train.data import load_folder, split
    from ganomaly_edge.train.evaluate import tiling_of
    from ganomaly_edge.train.scoring import AUTO_CANDIDATES, KNN_K_TILES, apply_spec, components, embed, encode, \
        knn_distance, make_spec
    from ganomaly_edge.train.selection import roc_auc

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("data", help="folder with train/ and test/normal, test/abnormal")
    p.add_argument("--scales", default="1,0.5,0.25")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ck = load_checkpoint(a.checkpoint)
    cfg, t = ck["config"], tiling_of(ck).geometry()
    images = load_folder(f"{a.data}/train", (t.height, t.width), cfg["channels"]).images
    tr, val = split(len(images), cfg["val_fraction"], cfg["seed"])
    g, d = models_from_checkpoint(ck)
    dev = torch.device("cpu")
    src = bank_tiles(images[tr], t, np.random.default_rng(cfg["seed"]))
    bank, fbank = encode(g, src, dev).astype(np.float32), embed(g, d, src, dev).astype(np.float32)

    def comps(frames: np.ndarray) -> dict[str, np.ndarray]:
        return components(g, d, t.split(frames), dev, bank=bank, fbank=fbank, margin=t.margin, k=KNN_K_TILES)

    val_c = comps(images[val])
    test = {lab: comps(load_folder(f"{a.data}/test/{lab}", (t.height, t.width), cfg["channels"]).images)
            for lab in ("normal", "abnormal")}
    scales = [float(s) for s in a.scales.split(",")]
    synth = {}
    for s in scales:
        frames, fam = synthetic_at(images[val], cfg["seed"], s)
        synth[s] = (comps(frames), fam)
    loo = None
    if len(src) == len(tr) * t.count:  # every training tile is in the bank, frame by frame
        bt, per = torch.from_numpy(bank), t.count
        loo = np.empty(len(bt))
        with torch.no_grad():
            for i in range(len(tr)):
                keep = torch.ones(len(bt), dtype=torch.bool)
                keep[i * per:(i + 1) * per] = False
                loo[i * per:(i + 1) * per] = knn_distance(bt[i * per:(i + 1) * per], bt[keep], KNN_K_TILES).numpy()
    for name in AUTO_CANDIDATES:
        spec = make_spec(name, val_c, t.margin, KNN_K_TILES, tiled=True)
        v = apply_spec(spec, val_c)
        tt = t.standardised(v) if t.position_share(v) >= t.MIN_POSITION_SHARE else t
        vf = tt.held_out_frame_scores(v)
        nf, af = (tt.frame_scores(apply_spec(spec, test[lab])) for lab in ("normal", "abnormal"))
        row = {"score": name, "test_roc_auc": round(roc_auc(nf, af), 3)}
        for s in scales:
            sc, fam = synth[s]
            sf = tt.frame_scores(apply_spec(spec, sc))
            row[f"synthetic_auc@{s:g}"] = round(float(np.mean([roc_auc(vf, sf[fam == i]) for i in range(fam.max() + 1)])), 3)
            if s == scales[0]:  # criteria nearer the operating point than the whole ROC curve
                thr = calibrate(vf, cfg["target_far"]).threshold_raw
                row[f"synthetic_pauc@{s:g}"] = round(float(np.mean([partial_auc(vf, sf[fam == i], 0.1)
                                                                     for i in range(fam.max() + 1)])), 3)
                row[f"synthetic_detected@{s:g}"] = [round(float(np.mean(sf[fam == i] > thr)), 2)
                                                    for i in range(fam.max() + 1)]
        sets = {"held_out": vf}
        if name == "knn" and loo is not None:
            sets["held_out+train_loo"] = np.r_[vf, tt.frame_scores(loo)]
        for label, ref in sets.items():
            thr = calibrate(ref, cfg["target_far"]).threshold_raw
            row[f"{label}: n, tpr, far"] = [len(ref), round(float(np.mean(af > thr)), 3), round(float(np.mean(nf > thr)), 3)]
        # the threshold from the held-out tiles instead of their frames' maxima: an exponential tail
        # on every held-out tile (each standardised as a new frame's would be, leave one frame out),
        # the frame's rate 1 - (1 - p)^count as if its tiles were independent
        thr = tile_tail_threshold(tt, v, cfg["target_far"])
        row["held_out_tiles: n, tpr, far"] = [int(np.size(v)), round(float(np.mean(af > thr)), 3),
                                              round(float(np.mean(nf > thr)), 3)]
        print(json.dumps(row), flush=True)
    for pair in ("peak+knn", "rpeak+knn"):
        row = {"combination": pair}
        for mode in COMBINE:
            for agg in ("sum", "max"):
                nf, af = (combined(test[lab], val_c, pair.split("+"), mode, agg, t.count)
                          for lab in ("normal", "abnormal"))
                row[f"{mode} {agg}"] = round(roc_auc(nf, af), 3)
        print(json.dumps(row), flush=True)
    return 0


def partial_auc(negatives: np.ndarray, positives: np.ndarray, max_fpr: float) -> float:
    """scikit-learn's standardised partial ROC AUC up to ``max_fpr`` (0.5: chance, 1: perfect)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    return float(roc_auc_score(y, np.r_[negatives, positives], max_fpr=max_fpr))


def tile_tail_threshold(tt, val_tile_scores: np.ndarray, far: float, top: float = 0.05) -> float:
    """A frame threshold from held-out tile scores: each frame's tiles standardised without it
    (as held_out_frame_scores does), an exponential tail above the (1 - top) quantile of all of
    them, and the tile rate p with 1 - (1 - p)^count = far."""
    v = np.asarray(val_tile_scores, np.float64).reshape(-1, tt.count)
    if tt.position_standardised and len(v) >= 3:
        geo = tt.geometry()
        z = np.concatenate([(row - np.asarray(g.position_mean)) / np.asarray(g.position_scale)
                            for row, g in ((v[i], geo.standardised(np.delete(v, i, axis=0))) for i in range(len(v)))])
    else:
        z = v.ravel()
    z = np.sort(z)
    u = z[int((1 - top) * len(z))]
    beta = max(float(np.median(z[z > u] - u)) / np.log(2), 1e-12)  # the median of an exponential is beta ln 2
    p = 1.0 - (1.0 - far) ** (1.0 / tt.count)
    return float(u + beta * np.log(top / p))


# Ways to put two components on one scale before they are added (or their maximum taken) per
# tile, each from the held-out tiles: z (what the product does: mean and standard deviation),
# robust (median and 99th percentile), position (z per tile position), tail (-log of the
# probability of a value that high: empirical, exponential beyond the 95th percentile).
COMBINE = ("z", "robust", "position", "tail")


def _tail(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    r = np.sort(ref.ravel())
    u = r[int(0.95 * len(r))]
    beta = max(float(np.mean(r[r > u] - u)), 1e-12)
    p = 1.0 - np.searchsorted(r, x, side="right") / (len(r) + 1)
    p = np.where(x > u, np.minimum(p, 0.05 * np.exp(-(x - u) / beta)), p)
    return -np.log(np.maximum(p, 1e-300))


def combined(comps: dict[str, np.ndarray], val: dict[str, np.ndarray], names: list[str], mode: str, agg: str,
             count: int = 49) -> np.ndarray:
    """Frame scores (maximum over tiles) of ``names`` put on one scale by ``mode``, summed or maxed."""
    parts = []
    for c in names:
        v, ref = comps[c].reshape(-1, count), val[c].reshape(-1, count)
        if mode == "z":
            parts.append((v - ref.mean()) / ref.std())
        elif mode == "robust":
            parts.append((v - np.median(ref)) / (np.quantile(ref, 0.99) - np.median(ref)))
        elif mode == "position":
            parts.append((v - ref.mean(0)) / (ref.std(0) + 1e-12))
        else:
            parts.append(_tail(ref, v))
    tile = sum(parts) if agg == "sum" else np.maximum.reduce(parts)
    return tile.max(1)


if __name__ == "__main__":
    raise SystemExit(main())
