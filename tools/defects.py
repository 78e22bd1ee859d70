"""Images with small defects at native resolution, for the high-resolution benchmark.

Two sets, written as folders that ``ganomaly-train`` / ``ganomaly-eval`` read directly:

- ``textures``: scikit-image's bundled photographs of brick, grass and gravel (512 x 512, grey).
  Training crops come from the left half of each photograph, test crops from the right half,
  so no test pixel was seen in training. Defects are painted into test crops: thin scratches,
  cracks, dark or bright spots and missing patches, each in several sizes, with a pixel mask.
- ``parts``: rendered cast parts (a bladed disc on a dark table, 300 x 300 grey, random turn,
  shift, exposure and surface grain), a stand-in for a line of castings, with blowholes,
  cracks, rim chips and burrs painted in the same way.

Every anomalous image has a mask (255 = defect) in ``masks/`` with the same file name, and
``defects.csv`` lists kind, extent in pixels and extent as a share of the side.

    python -m ganomaly_edge.tools.defects textures --out data/textures
    python -m ganomaly_edge.tools.defects parts --out data/parts
"""

from __future__ import annotations

import argparse
import csv
import math
import os

import cv2
import numpy as np

KINDS = ("scratch", "crack", "spot", "missing")
PART_KINDS = ("blowhole", "crack", "chip", "burr")


# -- painting ----------------------------------------------------------------------------------
def _contrast(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> int:
    """A grey level that stands out from the local surroundings by 35-70 levels, darker or lighter."""
    local = float(np.median(img[mask > 0])) if mask.any() else float(img.mean())
    delta = rng.uniform(35, 70) * rng.choice([-1, 1])
    if local + delta < 0 or local + delta > 255:
        delta = -delta
    return int(np.clip(local + delta, 0, 255))


def _polyline(rng: np.random.Generator, centre: np.ndarray, length: float, wiggle: float) -> np.ndarray:
    """A random-walk line of about ``length`` pixels through ``centre``."""
    steps = max(int(length / 4), 2)
    angle = rng.uniform(0, math.pi)
    pts = [np.zeros(2)]
    for _ in range(steps):
        angle += rng.normal(0, wiggle)
        pts.append(pts[-1] + 4 * np.array([math.cos(angle), math.sin(angle)]))
    p = np.array(pts)
    return (p - p.mean(0) + centre).astype(np.int32)


def paint(img: np.ndarray, kind: str, extent: int, rng: np.random.Generator,
          region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``img`` (grey uint8 [H, W]) with one defect of about ``extent`` pixels painted in, and its mask.
    ``region`` (a mask) says where the defect may sit (e.g. on the part, not the table)."""
    h, w = img.shape
    out = img.copy()
    mask = np.zeros((h, w), np.uint8)
    m = max(extent, 4)
    if region is not None:
        ys, xs = np.nonzero(region[m:h - m, m:w - m])
        k = rng.integers(len(ys))
        centre = np.array([xs[k] + m, ys[k] + m], np.float64)
    else:
        centre = rng.uniform([m, m], [w - m, h - m])
    cx, cy = int(centre[0]), int(centre[1])
    if kind in ("scratch", "crack"):
        line = _polyline(rng, centre, extent, 0.05 if kind == "scratch" else 0.5)
        cv2.polylines(mask, [line], False, 255, 1 if kind == "scratch" else int(rng.integers(1, 3)))
    elif kind in ("spot", "blowhole", "burr"):
        r = max(extent // 2, 1)
        axes = (r, max(int(r * rng.uniform(0.6, 1.0)), 1))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif kind == "missing":
        s = extent // 2
        cv2.rectangle(mask, (cx - s, cy - s), (cx + s, cy + s), 255, -1)
    else:
        raise ValueError(f"unknown defect kind {kind!r}")
    value = _contrast(img, cv2.dilate(mask, np.ones((9, 9), np.uint8)) - mask, rng)
    if kind == "missing":  # a flat patch: the texture is gone
        out[mask > 0] = int(np.clip(float(img[mask > 0].mean()) + rng.uniform(-20, 20), 0, 255))
    elif kind == "blowhole":  # a dark pit with a lit rim
        out[mask > 0] = np.clip(img[mask > 0].astype(int) // 4, 0, 255)
        rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - mask
        out[rim > 0] = np.clip(img[rim > 0].astype(int) + 40, 0, 255)
        mask = np.maximum(mask, rim)
    else:
        soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (3, 3), 0.6)
        out = np.clip(out * (1 - soft) + value * soft, 0, 255).astype(np.uint8)
    return out, mask


# -- textures ----------------------------------------------------------------------------------
def _texture(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def textures(name: str, size: int, n_train: int, n_test: int, seed: int = 0,
             extents: tuple[int, ...] = (6, 12, 24, 48)) -> dict[str, list]:
    """Crops of a scikit-image texture: normal training crops (left half), normal and defective
    test crops (right half). Returns lists of images, masks and defect rows."""
    img = _texture(name)
    h, w = img.shape
    half = w // 2
    rng = np.random.default_rng(seed)

    def crop(x0: int, x1: int) -> np.ndarray:
        """A size x size crop within columns [x0, x1): shrunk from a wider window when the half
        is narrower than the crop, turned and flipped at random."""
        win = min(size, x1 - x0, h)
        y = int(rng.integers(0, h - win + 1))
        x = int(rng.integers(x0, x1 - win + 1))
        c = img[y:y + win, x:x + win]
        c = np.rot90(c, int(rng.integers(4)))
        if rng.random() < 0.5:
            c = c[:, ::-1]
        c = np.ascontiguousarray(c)
        return c if win == size else cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR)

    out = {"train": [crop(0, half) for _ in range(n_train)],
           "normal": [crop(half, w) for _ in range(n_test)], "abnormal": [], "masks": [], "rows": []}
    for i in range(n_test):
        kind = KINDS[i % len(KINDS)]
        extent = int(extents[(i // len(KINDS)) % len(extents)] * size / 256)
        a, m = paint(crop(half, w), kind, extent, rng)
        out["abnormal"].append(a)
        out["masks"].append(m)
        out["rows"].append({"kind": kind, "extent_px": extent, "share_of_side": round(extent / size, 4)})
    return out


# -- rendered cast parts -------------------------------------------------------------------
def part(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One rendered cast part (grey uint8 [size, size]) and the mask of its surface."""
    s = size / 300.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, 4 * s), size / 2 + rng.normal(0, 4 * s)
    table = 45 + 10 * (xx / size) + rng.normal(0, 3, (size, size))
    r = np.hypot(xx - cx, yy - cy)
    theta = np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 2 * math.pi)
    outer, hub, bore = 125 * s, 42 * s, 17 * s
    blades = 9
    # Curved grooves between the blades: dark bands that follow a spiral.
    phase = (theta * blades / (2 * math.pi) + 0.9 * r / outer) % 1.0
    groove = np.exp(-((phase - 0.5) ** 2) / 0.004) * ((r > hub + 6 * s) & (r < outer - 12 * s))
    grain = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.2)
    light = 1.0 + 0.15 * np.cos(np.arctan2(yy - cy, xx - cx) - rng.uniform(0, 2 * math.pi))
    metal = (150 + 14 * grain) * light * rng.uniform(0.9, 1.1) - 70 * groove
    rim = np.exp(-((r - (outer - 5 * s)) ** 2) / (8 * s * s)) * 35
    hubring = np.exp(-((r - hub) ** 2) / (6 * s * s)) * 30
    img = np.where(r < outer, metal + rim + hubring, table)
    img = np.where(r < bore, 25 + rng.normal(0, 3, (size, size)), img)
    surface = ((r < outer - 3 * s) & (r > bore + 3 * s)).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8), surface


def parts(n_train: int, n_test: int, size: int = 300, seed: int = 0,
          extents: tuple[int, ...] = (5, 8, 12, 20)) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    out = {"train": [part(size, rng)[0] for _ in range(n_train)],
           "normal": [part(size, rng)[0] for _ in range(n_test)], "abnormal": [], "masks": [], "rows": []}
    for i in range(n_test):
        img, surface = part(size, rng)
        kind = PART_KINDS[i % len(PART_KINDS)]
        extent = int(extents[(i // len(PART_KINDS)) % len(extents)] * size / 300)
        if kind == "chip":  # a bite out of the rim: the table shows through
            edge = cv2.dilate(surface, np.ones((5, 5), np.uint8)) - cv2.erode(surface, np.ones((5, 5), np.uint8))
            ys, xs = np.nonzero(edge)
            k = rng.integers(len(ys))
            mask = np.zeros_like(img)
            cv2.circle(mask, (int(xs[k]), int(ys[k])), max(extent // 2, 2), 255, -1)
            mask &= cv2.dilate(surface, np.ones((3, 3), np.uint8)) * 255
            a = img.copy()
            a[mask > 0] = (45 + rng.normal(0, 3, int((mask > 0).sum()))).clip(0, 255).astype(np.uint8)
        else:
            a, mask = paint(img, {"crack": "crack", "blowhole": "blowhole", "burr": "spot"}[kind],
                            extent * (3 if kind == "crack" else 1), rng, region=surface)
            extent = extent * (3 if kind == "crack" else 1)
        out["abnormal"].append(a)
        out["masks"].append(mask)
        out["rows"].append({"kind": kind, "extent_px": extent, "share_of_side": round(extent / size, 4)})
    return out


def write(sets: dict[str, list], out: str) -> None:
    """train/, test/normal/, test/abnormal/, test/masks/ as PNG, and test/defects.csv."""
    for sub, key in (("train", "train"), ("test/normal", "normal"), ("test/abnormal", "abnormal"),
                     ("test/masks", "masks")):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        for i, img in enumerate(sets[key]):
            cv2.imwrite(os.path.join(out, sub, f"{i:04d}.png"), img)
    with open(os.path.join(out, "test", "defects.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, ["file", "kind", "extent_px", "share_of_side"])
        wr.writeheader()
        for i, row in enumerate(sets["rows"]):
            wr.writerow({"file": f"{i:04d}.png", **row})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ganomaly_edge.tools.defects", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", choices=["textures", "parts"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--texture", choices=["brick", "grass", "gravel"], default="brick")
    ap.add_argument("--size", type=int, default=0, help="image side (textures 256, parts 300)")
    ap.add_argument("--train", type=int, default=0, help="normal training images (textures 300, parts 1000)")
    ap.add_argument("--test", type=int, default=0, help="normal and defective test images, each (default 80 / 200)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.set == "textures":
        sets = textures(a.texture, a.size or 256, a.train or 300, a.test or 80, a.seed)
    else:
        sets = parts(a.train or 1000, a.test or 200, a.size or 300, a.seed)
    write(sets, a.out)
    print(f"wrote {len(sets['train'])} training, {len(sets['normal'])} normal and "
          f"{len(sets['abnormal'])} defective test images to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
