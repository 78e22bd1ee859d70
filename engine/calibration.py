"""Score calibration from held-out normal images, so a single frame can be scored live.

With fewer than 10 expected exceedances (n * far < 10) the quantile is one of the few largest
values, i.e. set by an outlier. Then the tail is extrapolated instead (peaks over threshold):
above u, the empirical quantile that leaves the top 20 % of the images, the excesses are modelled
as exponential, with a scale from their median (one odd image cannot move it), and the threshold
is u + beta * ln(p_u / far). Anomaly scores are distances, skewed to the right: a normal tail
(median + z * MAD, used before) put the threshold far too low on them; on FMNIST-LOO it gave a
4.2 % false-alarm rate for a 1 % target where this gives 0.85 %. ``method`` records which was
used; ``val_far`` is the rate the threshold gives on the held-out images.

The official GANomaly min-max scales scores over the whole test set, which no live system can
do. Here the raw scores of normal images that training never saw fix a location (their
median) and a threshold (their (1 - far) quantile for a target false-alarm rate ``far``); the
calibrated score is ``(raw - median) / (threshold - median)``, so 0 is a typical normal image
and 1.0 is the alarm threshold whatever the model or score.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import ValidationError

from .errors import EngineError
from .meta import Calibration, describe_errors

MIN_VALIDATION_IMAGES = 10
TAIL_SHARE = 0.2  # share of the held-out images whose excesses fit the tail
TAIL_MIN = 5


class CalibrationError(EngineError, ValueError):
    """Scores or settings that cannot give a calibration; the message says what to change."""


def calibrate(val_scores: np.ndarray, far: float = 0.01) -> Calibration:
    """The calibration of raw scores of held-out normal images (``model_dump()`` for its record)."""
    s = np.asarray(val_scores, dtype=np.float64)
    if s.ndim != 1 or s.size < MIN_VALIDATION_IMAGES:
        raise CalibrationError(
            f"calibration needs at least {MIN_VALIDATION_IMAGES} held-out normal images, got {s.size}: "
            "add normal images or raise the validation share")
    if not np.all(np.isfinite(s)):
        raise CalibrationError("calibration scores contain NaN or infinity: the model diverged; retrain")
    if not 0.0 < far < 0.5:
        raise CalibrationError(f"target false-alarm rate must be in (0, 0.5), got {far}")
    median = float(np.median(s))
    if s.size * far >= 10:
        method = "quantile"
        threshold = float(np.quantile(s, 1.0 - far, method="higher"))
    else:
        method, threshold = _exponential_tail(s, far)
    # A spread below 1 % of the score's own level is float noise (an untrained or collapsed
    # model): calibrating on it would make rounding look like anomalies.
    floor = max(0.01 * abs(median), 1e-12)
    scale = threshold - median
    if scale < floor:
        scale = max(float(np.std(s)), floor)
        threshold = median + scale
    return Calibration(
        n=int(s.size),
        method=method,
        target_far=float(far),
        median=median,
        mean=float(np.mean(s)),
        std=float(np.std(s)),
        threshold_raw=threshold,
        scale=scale,
        val_far=float(np.mean(s > threshold)),
        # A quantile from n samples cannot resolve rates much below 1/n.
        far_resolution=1.0 / s.size,
        threshold=1.0,
    )


def _exponential_tail(s: np.ndarray, far: float) -> tuple[str, float]:
    """Threshold for a rate ``far`` below what ``s`` resolves: an exponential fit to the top 20 %
    (at least TAIL_MIN images), its scale from the median excess (median = beta * ln 2)."""
    v = np.sort(s)
    k = min(max(int(round(TAIL_SHARE * v.size)), TAIL_MIN), v.size - 1)
    p_u = k / v.size
    if far >= p_u:  # the rate lies inside the sample after all
        return "quantile", float(np.quantile(v, 1.0 - far, method="higher"))
    u = float(v[v.size - k - 1])
    beta = float(np.median(v[v.size - k:] - u)) / math.log(2.0)
    return "exponential-tail", u + max(beta, 0.0) * math.log(p_u / far)


def as_calibration(calib) -> Calibration:
    """A checked ``Calibration`` from a record (dict) or one already typed; ValueError if invalid."""
    if isinstance(calib, Calibration):
        return calib
    try:
        return Calibration.model_validate(calib)
    except ValidationError as e:
        raise CalibrationError(f"invalid calibration: {describe_errors(e)}") from None


def normalise(raw, calib) -> np.ndarray:
    """Calibrated score: 0 = typical normal image, 1 = the alarm threshold (``Calibration.normalise``)."""
    return as_calibration(calib).normalise(raw)


def check(calib) -> None:
    as_calibration(calib)
