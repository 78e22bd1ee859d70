"""Score calibration from held-out normal images, so a single frame can be scored live.

With fewer than 10 expected exceedances (n * far < 10) the quantile is one of the few largest
values, i.e. set by an outlier; then a robust normal tail is used instead (median + z * 1.4826 *
MAD), and ``method`` records which. ``val_far`` is the rate the threshold gives on those images.

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
    if s.size * far >= 10:
        method = "quantile"
        threshold = float(np.quantile(s, 1.0 - far, method="higher"))
    else:
        # Too few images to resolve the (1 - far) quantile: it would be one of the few largest
        # values, i.e. set by an outlier. Use a robust normal tail (median + z * 1.4826 MAD).
        method = "robust-normal"
        mad = 1.4826 * float(np.median(np.abs(s - median)))
        threshold = median + _z(1.0 - far) * max(mad, 1e-12)
    # A spread below 1 % of the score's own level is float noise (an untrained or collapsed
    # model): calibrating on it would make rounding look like anomalies.
    floor = max(0.01 * abs(median), 1e-12)
    scale = threshold - median
    if scale < floor:
        scale = max(float(np.std(s)), floor)
        threshold = median + scale
    return {
        "n": int(s.size),
        "method": method,
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


def _z(p: float) -> float:
    """Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00]
    b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
    if p > 0.97575:
        q = math.sqrt(-2 * math.log(1 - p))
        return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


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
