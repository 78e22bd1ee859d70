"""Residual map -> boxes in frame coordinates -> JPEG crops and a heat-map overlay."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import LocalisationConfig
from .errors import AgentError
from .geometry import View


# OpenCV's JET colour map as a lookup table: cv2.applyColorMap rebuilds it on every call
# (about 0.2 ms, most of an overlay's cost at 64x64); indexing the table gives the same pixels.
_JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET).reshape(256, 3)


class EncodeError(AgentError, RuntimeError):
    """OpenCV could not encode an image (crop or overlay) as JPEG."""


@dataclass
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float

    def as_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h, "residual": round(self.score, 4)}


def regions(residual: np.ndarray, cfg: LocalisationConfig) -> list[tuple[tuple[int, int, int, int], float]]:
    """Connected regions of a residual map (model-input pixels), most anomalous first."""
    r = residual.astype(np.float32)
    if cfg.blur:
        r = cv2.GaussianBlur(r, (cfg.blur, cfg.blur), 0)
    thr = max(float(r.mean() + cfg.sigma * r.std()), cfg.min_fraction * float(r.max()))
    mask = (r > thr).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < cfg.min_area:
            continue
        out.append(((int(x), int(y), int(w), int(h)), float(r[labels == i].mean())))
    if not out:  # the alarm still gets a box: around the strongest response
        y, x = np.unravel_index(int(np.argmax(r)), r.shape)
        out.append(((max(int(x) - 1, 0), max(int(y) - 1, 0), 3, 3), float(r.max())))
    out.sort(key=lambda t: -t[1])
    return out[: cfg.max_boxes]


def boxes_in_frame(residual: np.ndarray, view: View, cfg: LocalisationConfig) -> list[Box]:
    return [Box(*view.to_frame(b), score=s) for b, s in regions(residual, cfg)]


def _fit(img: np.ndarray, max_px: int) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= max_px:
        return img
    s = max_px / max(h, w)
    return cv2.resize(img, (max(int(w * s), 1), max(int(h * s), 1)), interpolation=cv2.INTER_AREA)


def jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EncodeError("JPEG encoding failed")
    return buf.tobytes()


def crops(frame: np.ndarray, boxes: list[Box], cfg: LocalisationConfig) -> list[bytes]:
    H, W = frame.shape[:2]
    out = []
    for b in boxes:
        px, py = int(b.w * cfg.pad) + 2, int(b.h * cfg.pad) + 2
        x0, y0 = max(b.x - px, 0), max(b.y - py, 0)
        x1, y1 = min(b.x + b.w + px, W), min(b.y + b.h + py, H)
        out.append(jpeg(_fit(frame[y0:y1, x0:x1], cfg.max_crop_px), cfg.jpeg_quality))
    return out


def overlay(frame: np.ndarray, residual: np.ndarray, view: View, boxes: list[Box], cfg: LocalisationConfig) -> bytes:
    """The whole frame with the residual as a heat map over the ROI and the boxes drawn."""
    img = frame if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    img = img.copy()
    r = residual.astype(np.float32)
    r = np.clip(r / max(float(r.max()), 1e-6), 0, 1)
    heat = (r * 255).astype(np.uint8)
    inverse = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
    if view.rotate:
        heat = cv2.rotate(heat, inverse[view.rotate])
    if heat.shape != (view.h, view.w):
        heat = cv2.resize(heat, (view.w, view.h), interpolation=cv2.INTER_LINEAR)
    heat = _JET[heat]
    roi = img[view.y0:view.y0 + view.h, view.x0:view.x0 + view.w]
    img[view.y0:view.y0 + view.h, view.x0:view.x0 + view.w] = cv2.addWeighted(roi, 0.6, heat, 0.4, 0)
    thick = max(1, max(img.shape[:2]) // 300)
    for b in boxes:
        cv2.rectangle(img, (b.x, b.y), (b.x + b.w - 1, b.y + b.h - 1), (255, 255, 255), thick)
    return jpeg(_fit(img, cfg.max_overlay_px), cfg.jpeg_quality)
