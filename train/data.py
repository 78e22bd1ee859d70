"""Normal images for training: a folder searched recursively, or arrays; the validation split."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ganomaly_edge.engine.preprocess import prepare, read_image

from .errors import TrainError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(TrainError, ValueError):
    """The training data cannot be used; the message says why and what to do."""


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 [N, S, S, C]
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def find_images(root: str) -> list[str]:
    if not os.path.exists(root):
        raise DataError(f"image folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise DataError(f"{root!r} is not a folder: pass a folder of normal images")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, f))
    return found


def load_folder(root: str, size: int | tuple[int, int] | None, channels: int, window=None) -> ImageSet:
    """Every readable image under ``root``, resized to ``size`` (a side, or (height, width));
    ``size=None`` keeps the native size, and images of another size than the most common one are
    resized to it (with a warning). Unreadable files are skipped and counted. 16-bit images go
    through ``window`` (engine/window.py), as the agent reads them."""
    paths = find_images(root)
    if not paths:
        raise DataError(
            f"no images under {root!r} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively): "
            "point --data at a folder of normal images")
    images, kept, skipped = [], [], []
    for p in paths:
        try:
            img = read_image(p, channels, window)
        except (OSError, ValueError) as e:  # unreadable file or odd pixel format
            log.debug("cannot read %s: %s", p, e)
            img = None
        if img is None:
            skipped.append(p)
            continue
        images.append(prepare(img, size, channels) if size is not None else img)
        kept.append(p)
    if skipped:
        log.warning("skipped %d unreadable or corrupt image(s) of %d under %s (first: %s)",
                    len(skipped), len(paths), root, skipped[0])
    if not images:
        raise DataError(f"none of the {len(paths)} image files under {root!r} could be read: "
                        "they are all corrupt or in an unsupported format")
    if size is None:
        images = _common_size(images, root)
    return ImageSet(np.stack(images), kept, skipped)


def _common_size(images: list[np.ndarray], root: str) -> list[np.ndarray]:
    shapes = Counter(im.shape[:2] for im in images)
    (h, w), n = shapes.most_common(1)[0]
    if n < len(images):
        log.warning("%d of %d images under %s are not %dx%d (the most common size): resized to it; "
                    "pass --image-size to choose the working resolution", len(images) - n, len(images), root, w, h)
        images = [prepare(im, (h, w), im.shape[2]) for im in images]
    return images


def parse_size(text: str) -> int | tuple[int, int]:
    """'256' -> 256 (a square side); '640x360' -> (360, 640) as (height, width)."""
    t = text.lower().strip()
    try:
        if "x" in t:
            w, h = (int(v) for v in t.split("x"))
            return (h, w)
        return int(t)
    except ValueError:
        raise DataError(f"--image-size must be a side (e.g. 256) or WIDTHxHEIGHT (e.g. 640x360), "
                        f"not {text!r}") from None


def split(n: int, val_fraction: float, seed: int, min_val: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices: a seeded shuffle, ``val_fraction`` held out (at least ``min_val``)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation share must be between 0 and 1, got {val_fraction}")
    n_val = max(int(round(n * val_fraction)), min_val)
    if n - n_val < min_val:
        raise DataError(
            f"{n} images are too few: at least {2 * min_val} are needed "
            f"({min_val} to train on and {min_val} held out to calibrate the threshold)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
