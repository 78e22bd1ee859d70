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
        H, W = r.shape[:2]
        w, h = min(3, W), min(3, H)  # 3 x 3, inside the map also at its edge
        out.append(((min(max(int(x) - 1, 0), W - w), min(max(int(y) - 1, 0), H - h), w, h), float(r.max())))
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


def crop_region(b: Box, W: int, H: int, cfg: LocalisationConfig) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of box ``b``'s crop in a W x H frame: the box with a margin of ``pad`` of
    its size, grown to at least ``min_crop_px`` a side around the box's centre (a 7 px box alone
    says nothing: the crop shows where it is on the part), kept inside the frame."""
    px, py = int(b.w * cfg.pad) + 2, int(b.h * cfg.pad) + 2
    w = min(max(b.w + 2 * px, cfg.min_crop_px), W)
    h = min(max(b.h + 2 * py, cfg.min_crop_px), H)
    x0 = min(max(int(round(b.x + b.w / 2 - w / 2)), 0), W - w)
    y0 = min(max(int(round(b.y + b.h / 2 - h / 2)), 0), H - h)
    return x0, y0, x0 + w, y0 + h


def crops(frame: np.ndarray, boxes: list[Box], cfg: LocalisationConfig) -> list[bytes]:
    """One JPEG per box: the original pixels around it (crop_region); a region smaller than
    ``min_crop_px`` (a small frame) is enlarged, pixel by pixel, to that size."""
    H, W = frame.shape[:2]
    out = []
    for b in boxes:
        x0, y0, x1, y1 = crop_region(b, W, H, cfg)
        img = frame[y0:y1, x0:x1]
        if max(img.shape[:2]) < cfg.min_crop_px:
            f = -(-cfg.min_crop_px // max(img.shape[:2]))
            img = cv2.resize(img, (img.shape[1] * f, img.shape[0] * f), interpolation=cv2.INTER_NEAREST)
        out.append(jpeg(_fit(img, cfg.max_crop_px), cfg.jpeg_quality))
    return out


BOX_COLOUR = (0, 0, 255)  # BGR red, with a black edge: visible on light and dark parts alike


def overlay(frame: np.ndarray, residual: np.ndarray, view: View, boxes: list[Box], cfg: LocalisationConfig) -> bytes:
    """The whole frame as the camera saw it, each box outlined in red (on black) and numbered as
    its crop, the residual's heat map inside the boxes only."""
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
    tinted = img.copy()
    roi = img[view.y0:view.y0 + view.h, view.x0:view.x0 + view.w]
    tinted[view.y0:view.y0 + view.h, view.x0:view.x0 + view.w] = cv2.addWeighted(roi, 0.6, _JET[heat], 0.4, 0)
    for b in boxes:
        img[b.y:b.y + b.h, b.x:b.x + b.w] = tinted[b.y:b.y + b.h, b.x:b.x + b.w]
    _draw_boxes(img, boxes)
    return jpeg(_fit(img, cfg.max_overlay_px), cfg.jpeg_quality)


def _draw_boxes(img: np.ndarray, boxes: list[Box]) -> None:
    thick = max(1, max(img.shape[:2]) // 250)
    scale = max(0.35, max(img.shape[:2]) / 1000)
    least = max(img.shape[:2]) // 40  # a tiny box is outlined at least this large, around its centre
    for k, b in enumerate(boxes):
        gx, gy = max(least - b.w, 0) // 2, max(least - b.h, 0) // 2
        p0 = (b.x - gx - thick, b.y - gy - thick)
        p1 = (b.x + b.w - 1 + gx + thick, b.y + b.h - 1 + gy + thick)
        cv2.rectangle(img, p0, p1, (0, 0, 0), 3 * thick)
        cv2.rectangle(img, p0, p1, BOX_COLOUR, thick)
        org = (max(p0[0], 0), max(p0[1] - 2 * thick, int(12 * scale)))
        cv2.putText(img, str(k), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2 * thick + 1, cv2.LINE_AA)
        cv2.putText(img, str(k), org, cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_COLOUR, thick, cv2.LINE_AA)
