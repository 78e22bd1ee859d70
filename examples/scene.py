"""A demo production line made of real images: Fashion-MNIST T-shirts on a conveyor.

Normal items are T-shirts (class 0). Anomalous items are T-shirts with a stain (bright blob) or
a hole (dark blob) — whose ground-truth boxes are recorded — or a foreign object (a bag or a
trouser from the data set). Frames are 96x96 BGR; the region of interest is the central 64x64.
Used by ``make demo``, the agent's tests and ``ganomaly-bench agent``. numpy and OpenCV only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cv2
import numpy as np

FRAME = 96
ROI = (16, 16, 64, 64)  # x, y, w, h
ITEM = 56
BELT = (52, 46, 40)  # BGR


@dataclass
class Item:
    image: np.ndarray  # 28x28 grey
    kind: str  # normal | stain | hole | foreign
    defect: tuple[int, int, int] | None = None  # centre x, y and radius in item pixels (56x56)


def load_fmnist():
    from .datasets import fashion_mnist  # numpy only: no torch

    return fashion_mnist("train"), fashion_mnist("test")


def _belt(rng: np.random.Generator) -> np.ndarray:
    base = np.empty((FRAME, FRAME, 3), np.float32)
    base[:] = BELT
    base += rng.normal(0, 3, (FRAME, FRAME, 1))
    return base


def render(item: Item, rng: np.random.Generator, shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, list[int] | None]:
    """One BGR frame with the item near the centre, and the defect's box in frame pixels."""
    frame = _belt(rng)
    a = cv2.resize(item.image, (ITEM, ITEM), interpolation=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0
    tint = np.array([235, 225, 215], np.float32)  # slightly warm fabric
    m = np.zeros((ITEM, ITEM, 1), np.float32)
    box = None
    if item.defect is not None:
        cx, cy, r = item.defect
        cv2.circle(m, (cx, cy), r, 1.0, -1)
        m = cv2.GaussianBlur(m, (5, 5), 0)[..., None]
        if item.kind == "hole":
            a = a * (1 - m)  # the belt shows through
    x0 = (FRAME - ITEM) // 2 + shift[0]
    y0 = (FRAME - ITEM) // 2 + shift[1]
    region = frame[y0:y0 + ITEM, x0:x0 + ITEM]
    region = region * (1 - a) + tint * a
    if item.kind == "stain":
        region = region * (1 - m) + np.array([20, 60, 110], np.float32) * m  # a brown stain
    frame[y0:y0 + ITEM, x0:x0 + ITEM] = region
    if item.defect is not None:
        cx, cy, r = item.defect
        box = [x0 + cx - r, y0 + cy - r, 2 * r, 2 * r]
    return np.clip(frame, 0, 255).astype(np.uint8), box


def _defect(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    big = cv2.resize(img, (ITEM, ITEM))
    ys, xs = np.nonzero(big > 60)
    r = int(rng.integers(7, 11))
    for _ in range(50):
        i = int(rng.integers(len(xs)))
        cx, cy = int(xs[i]), int(ys[i])
        if r <= cx < ITEM - r and r <= cy < ITEM - r and big[cy, cx] > 60:
            return cx, cy, r
    return ITEM // 2, ITEM // 2, r


def plain_shirts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The line makes one product: plain T-shirts (the 40 % with the least texture in the garment)."""
    shirts = x[y == 0]
    tex = np.array([s[s > 30].std() if (s > 30).any() else 0 for s in shirts])
    return shirts[tex <= np.quantile(tex, 0.4)]


def normal_items(n: int, split: str = "train", offset: int = 0) -> list[Item]:
    (xtr, ytr), (xte, yte) = load_fmnist()
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    shirts = plain_shirts(x, y)[offset:offset + n]
    return [Item(s, "normal") for s in shirts]


def stream_items(n_items: int, anomaly_every: int = 4, seed: int = 0) -> list[Item]:
    """Unseen T-shirts (test split) with an anomaly every ``anomaly_every`` items, never adjacent."""
    rng = np.random.default_rng(seed)
    (_, _), (xte, yte) = load_fmnist()
    shirts = plain_shirts(xte, yte)
    foreign = xte[np.isin(yte, [1, 8])]
    items = []
    kinds = ["stain", "hole", "foreign"]
    for i in range(n_items):
        img = shirts[i % len(shirts)]
        if i % anomaly_every == anomaly_every - 1:
            kind = kinds[(i // anomaly_every) % 3]
            if kind == "foreign":
                items.append(Item(foreign[int(rng.integers(len(foreign)))], "foreign"))
            else:
                items.append(Item(img, kind, _defect(img, rng)))
        else:
            items.append(Item(img, "normal"))
    return items


def write_training_folder(out_dir: str, n: int = 1500, seed: int = 1) -> int:
    """Normal items as the camera sees them (JPEG round trip, ROI crop), one PNG each."""
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    x, y, w, h = ROI
    for i, it in enumerate(normal_items(n, "train")):
        frame, _ = render(it, rng, tuple(int(v) for v in rng.integers(-3, 4, 2)))
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])[1], cv2.IMREAD_COLOR)
        cv2.imwrite(os.path.join(out_dir, f"shirt_{i:05d}.png"), frame[y:y + h, x:x + w])
    return n


def write_video(path: str, items: list[Item], frames_per_item: int = 3, fps: float = 10.0, seed: int = 2) -> list[dict]:
    """An MJPG video of items passing the camera; returns per-item ground truth."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME, FRAME))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path}")
    truth, idx = [], 0
    for i, it in enumerate(items):
        boxes = []
        for f in range(frames_per_item):
            frame, box = render(it, rng, (2 * f - frames_per_item + 1, 0))
            writer.write(frame)
            boxes.append(box)
        truth.append({"item": i, "kind": it.kind, "frames": list(range(idx, idx + frames_per_item)), "boxes": boxes})
        idx += frames_per_item
    writer.release()
    return truth


def write_folder(out_dir: str, items: list[Item], seed: int = 3, corrupt: int = 0) -> list[dict]:
    """The scanner case: one JPEG per item, named in order; ``corrupt`` broken files among them."""
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    truth = []
    for i, it in enumerate(items):
        frame, box = render(it, rng)
        name = f"item_{i:05d}.jpg"
        cv2.imwrite(os.path.join(out_dir, name), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth.append({"item": i, "name": name, "kind": it.kind, "box": box})
    for j in range(corrupt):
        with open(os.path.join(out_dir, f"item_{len(items) + j:05d}_broken.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    with open(os.path.join(out_dir, "..", os.path.basename(out_dir) + "_truth.json"), "w") as f:
        json.dump(truth, f)
    return truth


def write_eval_folders(out_dir: str, n: int = 300, seed: int = 21) -> None:
    """Unseen normal and anomalous items as the camera's ROI sees them, for ganomaly-eval."""
    rng = np.random.default_rng(seed)
    x, y, w, h = ROI
    items = stream_items(2 * n, anomaly_every=2, seed=seed)
    for sub in ("normal", "abnormal"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    for i, it in enumerate(items):
        frame, _ = render(it, rng)
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])[1], cv2.IMREAD_COLOR)
        sub = "normal" if it.kind == "normal" else "abnormal"
        cv2.imwrite(os.path.join(out_dir, sub, f"{it.kind}_{i:05d}.png"), frame[y:y + h, x:x + w])


if __name__ == "__main__":
    import sys

    write_eval_folders(sys.argv[1] if len(sys.argv) > 1 else "demo/eval")
    print("wrote normal/ and abnormal/ under", sys.argv[1] if len(sys.argv) > 1 else "demo/eval")
