"""Synthetic anomalies on held-out normal frames, for choices that would otherwise need labels.

A one-class model is trained without a single defect, yet some choices depend on the data:
which score reads a line's defects best differs between a textured surface, a cast part and a
solar cell. Test labels must not make that choice (they are what the figures are measured on),
so it is made on the held-out normal frames against copies of them carrying synthetic defects
of several unrelated families. No family imitates any benchmark's defects, and none is what
training's foreign patches look like (``augment.corrupt``: flat, noisy or copied rectangles and
ellipses): a score is rewarded for seeing *something that is not normal*, not for undoing the
corruption it was trained on.

Families (each drawn on a frame at a random place, with a contrast set from that frame's own
spread of grey levels, so it is visible but not glaring):

- ``cut``: a thin straight line (1-3 px) at any angle, darker or brighter than around it.
- ``scratch``: a thin curved line, a random walk.
- ``blob``: a soft-edged spot (a blurred ellipse), darker or brighter.
- ``patch``: a piece of another normal frame pasted elsewhere (right texture, wrong place).
- ``drop``: a large region whose grey levels are scaled down (an inactive or shaded area).
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import TrainConfigError

FAMILIES = ("cut", "scratch", "blob", "patch", "drop")


def _spread(img: np.ndarray) -> float:
    """A robust standard deviation of the frame's grey levels (at least 8 levels)."""
    v = img.astype(np.float32).ravel()
    mad = float(np.median(np.abs(v - np.median(v))))
    return max(1.4826 * mad, 8.0)


def _signed_delta(img: np.ndarray, rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.choice([-1.0, 1.0])) * float(rng.uniform(low, high)) * _spread(img)


def _apply_delta(img: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    out = img.astype(np.float32)
    m = mask.astype(np.float32)
    if out.ndim == 3:
        m = m[..., None]
    return np.clip(out + delta * m, 0, 255).astype(np.uint8)


def _cut(img, rng, other):
    h, w = img.shape[:2]
    side = min(h, w)
    length = rng.uniform(0.15, 0.6) * side
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
    mask = np.zeros((h, w), np.uint8)
    cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, int(rng.integers(1, 4)))
    return _apply_delta(img, mask, _signed_delta(img, rng, 1.5, 3.0))


def _scratch(img, rng, other):
    h, w = img.shape[:2]
    side = min(h, w)
    n = int(rng.integers(4, 9))
    step = rng.uniform(0.03, 0.08) * side
    heading = rng.uniform(0, 2 * np.pi)
    p = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    pts = [p.copy()]
    for _ in range(n):
        heading += rng.normal(0, 0.5)
        p = p + step * np.array([np.cos(heading), np.sin(heading)])
        pts.append(p.copy())
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(1, 3)))
    return _apply_delta(img, mask, _signed_delta(img, rng, 1.5, 3.0))


def _blob(img, rng, other):
    h, w = img.shape[:2]
    side = min(h, w)
    ry, rx = rng.uniform(0.015, 0.08, 2) * side
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int(cx), int(cy)), (max(int(rx), 1), max(int(ry), 1)), float(rng.uniform(0, 180)), 0, 360,
                1.0, -1)
    k = 2 * max(int(min(rx, ry) / 2), 1) + 1
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    return _apply_delta(img, mask, _signed_delta(img, rng, 1.5, 3.0))


def _patch(img, rng, other):
    h, w = img.shape[:2]
    side = min(h, w)
    ph, pw = (rng.uniform(0.06, 0.2, 2) * side).astype(int) + 2
    ph, pw = min(ph, h - 1), min(pw, w - 1)
    y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    # The source lies elsewhere: at least half the patch away from the destination.
    for _ in range(20):
        a, b = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        if abs(a - y0) > ph / 2 or abs(b - x0) > pw / 2:
            break
    out = img.copy()
    src = other[a:a + ph, b:b + pw].astype(np.float32)
    # The piece keeps its texture but takes the destination's mean grey level: another frame's
    # exposure alone would make it trivially visible.
    src += img[y0:y0 + ph, x0:x0 + pw].astype(np.float32).mean() - src.mean()
    out[y0:y0 + ph, x0:x0 + pw] = np.clip(src, 0, 255).astype(np.uint8)
    return out


def _drop(img, rng, other):
    h, w = img.shape[:2]
    side = min(h, w)
    ry, rx = rng.uniform(0.06, 0.2, 2) * side
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    pts = []
    for t in np.sort(rng.uniform(0, 2 * np.pi, 7)):
        r = rng.uniform(0.6, 1.0)
        pts.append((cx + r * rx * np.cos(t), cy + r * ry * np.sin(t)))
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (5, 5), 0)
    factor = float(rng.uniform(0.55, 0.8))
    out = img.astype(np.float32)
    m = mask[..., None] if out.ndim == 3 else mask
    return np.clip(out * (1.0 - (1.0 - factor) * m), 0, 255).astype(np.uint8)


_DRAW = {"cut": _cut, "scratch": _scratch, "blob": _blob, "patch": _patch, "drop": _drop}


def synthetic_anomalies(frames: np.ndarray, seed: int, per_family: int = 1,
                        families: tuple[str, ...] = FAMILIES) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [N, H, W, C] -> (anomalous copies [N * per_family * len(families), H, W, C],
    the family index of each). Seeded, so a run's choice can be repeated."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise TrainConfigError(f"unknown synthetic anomaly families {sorted(unknown)}; known: {FAMILIES}")
    if len(frames) < 2:
        raise TrainConfigError("synthetic anomalies need at least 2 normal frames (one lends its texture to another)")
    rng = np.random.default_rng(seed)
    out, fam = [], []
    for f, name in enumerate(families):
        for _ in range(per_family):
            for i, img in enumerate(frames):
                j = (i + 1 + int(rng.integers(len(frames) - 1))) % len(frames)
                out.append(_DRAW[name](img, rng, frames[j]))
                fam.append(f)
    return np.stack(out), np.asarray(fam)
