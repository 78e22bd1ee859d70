"""Score calibration from held-out normal images, so a single frame can be scored live.

The official GANomaly min-max scales scores over the whole test set, which no live system can
do. Here the raw scores of normal images that training never saw fix a location (their
median) and a threshold (their (1 - far) quantile for a target false-alarm rate ``far``); the
calibrated score is ``(raw - median) / (threshold - median)``, so 0 is a typical normal image
and 1.0 is the alarm threshold whatever the model or score.
"""

from __future__ import annotations

import math

import numpy as np

MIN_VALIDATION_IMAGES = 10


def calibrate(val_scores: np.ndarray, far: float = 0.01) -> dict:
    """Calibration record from raw scores of held-out normal images."""
    s = np.asarray(val_scores, dtype=np.float64)
    if s.ndim != 1 or s.size < MIN_VALIDATION_IMAGES:
        raise ValueError(
            f"calibration needs at least {MIN_VALIDATION_IMAGES} held-out normal images, got {s.size}: "
            "add normal images or raise the validation share")
    if not np.all(np.isfinite(s)):
        raise ValueError("calibration scores contain NaN or infinity: the model diverged; retrain")
    if not 0.0 < far < 0.5:
        raise ValueError(f"target false-alarm rate must be in (0, 0.5), got {far}")
    median = float(np.median(s))
    threshold = float(np.quantile(s, 1.0 - far, method="higher"))
    scale = threshold - median
    if scale <= 0:
        scale = float(max(np.std(s), 1e-12))
        threshold = median + scale
    return {
        "n": int(s.size),
        "target_far": float(far),
        "median": median,
        "mean": float(np.mean(s)),
        "std": float(np.std(s)),
        "threshold_raw": threshold,
        "scale": scale,
        "val_far": float(np.mean(s > threshold)),
        # A quantile from n samples cannot resolve rates much below 1/n.
        "far_resolution": 1.0 / s.size,
        "threshold": 1.0,
    }


def normalise(raw, calib: dict):
    """Calibrated score: 0 = typical normal image, 1 = the alarm threshold."""
    return (np.asarray(raw, dtype=np.float64) - calib["median"]) / calib["scale"]


def check(calib: dict) -> None:
    for key in ("median", "scale", "threshold"):
        v = calib.get(key)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"calibration field {key!r} is missing or not a finite number")
    if calib["scale"] <= 0:
        raise ValueError("calibration scale must be positive")
