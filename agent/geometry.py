"""Frame -> working-resolution input (ROI, rotation, resize) and boxes on it -> frame coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ganomaly_edge.engine.preprocess import prepare

from .config import RoiConfig
from .errors import AgentError

_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class FrameSizeError(AgentError, ValueError):
    pass


@dataclass(frozen=True)
class View:
    """Where the model input sits in the original frame."""

    x0: int
    y0: int
    w: int  # ROI size in the original frame, before rotation
    h: int
    rotate: int
    height: int  # working resolution (the model input when untiled)
    width: int

    def to_frame(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """(x, y, w, h) in model-input pixels -> (x, y, w, h) in original-frame pixels."""
        x, y, w, h = box
        rw, rh = (self.h, self.w) if self.rotate in (90, 270) else (self.w, self.h)  # rotated ROI size
        sx, sy = rw / self.width, rh / self.height
        corners = np.array([[x, y], [x + w, y + h]], np.float64) * [sx, sy]
        pts = []
        for cx, cy in corners:
            # Undo the clockwise rotation: rotated (cx, cy) -> ROI (u, v).
            if self.rotate == 90:
                u, v = cy, self.h - cx
            elif self.rotate == 180:
                u, v = self.w - cx, self.h - cy
            elif self.rotate == 270:
                u, v = self.w - cy, cx
            else:
                u, v = cx, cy
            pts.append((u, v))
        (u0, v0), (u1, v1) = pts
        left, right = sorted((u0, u1))
        top, bottom = sorted((v0, v1))
        # inside the ROI: a box at the map's edge must not reach outside the frame
        left, right = min(max(left, 0.0), self.w - 1), min(max(right, 1.0), self.w)
        top, bottom = min(max(top, 0.0), self.h - 1), min(max(bottom, 1.0), self.h)
        X0, Y0 = int(np.floor(left)) + self.x0, int(np.floor(top)) + self.y0
        X1, Y1 = int(np.ceil(right)) + self.x0, int(np.ceil(bottom)) + self.y0
        return X0, Y0, max(X1 - X0, 1), max(Y1 - Y0, 1)


def model_input(image: np.ndarray, roi: RoiConfig | None, rotate: int, size: int | tuple[int, int],
                channels: int) -> tuple[np.ndarray, View]:
    """The ROI, turned and resized to the working resolution ``size`` = (height, width), or a side."""
    size = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    if roi is not None:
        if roi.x + roi.w > w or roi.y + roi.h > h:
            raise FrameSizeError(f"ROI {roi.x},{roi.y} {roi.w}x{roi.h} does not fit a {w}x{h} frame: "
                                 "fix [cameras.roi] for this camera")
        crop = image[roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
        view = View(roi.x, roi.y, roi.w, roi.h, rotate, *size)
    else:
        crop = image
        view = View(0, 0, w, h, rotate, *size)
    if rotate:
        crop = cv2.rotate(crop, _ROTATE[rotate])
    return prepare(crop, size, channels), view


def roi_view(image: np.ndarray, roi: RoiConfig | None, rotate: int) -> np.ndarray:
    """The frame as the model sees it before the resize: its ROI, turned (for the alarm history)."""
    crop = image if roi is None else image[roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
    return cv2.rotate(crop, _ROTATE[rotate]) if rotate else crop
