import os
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def digits_u8(size: int = 16):
    """scikit-learn's 1,797 real 8x8 digits as uint8 [N, size, size, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    out = np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR) for i in imgs])
    return out[..., None], d.target


def write_images(folder, images, ext=".png"):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = os.path.join(str(folder), f"img_{i:05d}{ext}")
        assert cv2.imwrite(p, img)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def digits():
    return digits_u8(16)
