"""How a frame becomes a model input, shared by training and every runtime.

The contract (recorded in every bundle): the model takes uint8 ``[N, S, S, C]`` with C = 1
(greyscale) or 3 (BGR, OpenCV's order); the graph itself casts, normalises to [-1, 1] with
``x / 127.5 - 1`` and moves channels first. Host code only crops, rotates and resizes, with
this module, so training and inference resize the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import EngineError

COLOR_ORDER = "BGR"
NORMALISATION = "x/127.5-1"


class ImageError(EngineError, ValueError):
    """An image the model input cannot be made from (pixel type, shape, channels)."""


def to_channels(image: np.ndarray, channels: int, keep_depth: bool = False) -> np.ndarray:
    """Greyscale or BGR ``[H, W, C]`` uint8 from any 8/16-bit, 1/3/4-channel image (16-bit stays
    16-bit with ``keep_depth``)."""
    if image.dtype == np.uint16 and not keep_depth:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"unsupported pixel type {image.dtype}: expected 8- or 16-bit images")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"unsupported image shape {image.shape}: expected H x W x 1, 3 or 4")
    c = image.shape[2]
    if channels == 1:
        if c == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
        elif c == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)[:, :, None]
    elif channels == 3:
        if c == 1:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif c == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    else:
        raise ImageError(f"channels must be 1 or 3, not {channels}")
    return np.ascontiguousarray(image)


def resize_to(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize ``[H, W, C]`` to ``[size, size, C]`` (or ``[h, w, C]`` for ``size = (h, w)``): area
    filter when shrinking, bilinear when growing."""
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = image.shape[:2]
    if (h, w) != (th, tw):
        interp = cv2.INTER_AREA if (h > th or w > tw) else cv2.INTER_LINEAR
        out = cv2.resize(image, (tw, th), interpolation=interp)
        if out.ndim == 2:
            out = out[:, :, None]
        return out
    return image


def prepare(image: np.ndarray, size: int | tuple[int, int], channels: int) -> np.ndarray:
    """One image, any size and channel count -> uint8 ``[size, size, channels]`` (or ``[h, w, channels]``)."""
    return resize_to(to_channels(image, channels), size)


def read_image(path: str, channels: int, window=None) -> np.ndarray | None:
    """Read an image file as uint8 with ``channels`` channels; None if unreadable or corrupt. A
    16-bit image goes through ``window`` (engine/window.py; None: its top 8 bits)."""
    from .window import to_8bit

    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return None
    flag = (cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_ANYDEPTH
    img = cv2.imdecode(data, flag)
    if img is None:
        return None
    return to_channels(to_8bit(img, window), channels)
