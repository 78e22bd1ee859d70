"""Training batches: random tiles of the normal frames, with augmentations that suit parts on a
line (numpy only, so it is cheap next to the networks).

- ``flip``: mirror left-right and top-bottom.
- ``rot90``: quarter turns (a part can lie any way round on a belt).
- ``shift``: move the content by up to this many pixels (tiles: the tile origin moves freely,
  which is a shift of any size; whole frames: a shift with mirrored borders).
- ``brightness``: scale the grey levels by up to this fraction (lamps age, exposure drifts).

Switch off what the line does not do: a part that always lies the same way round should not
be trained with turns, or a turned part would look normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augment:
    flip: bool = False
    rot90: bool = False
    shift: int = 0
    brightness: float = 0.0

    def describe(self) -> str:
        on = [n for n, v in (("flips", self.flip), ("90-degree turns", self.rot90)) if v]
        if self.shift:
            on.append(f"shifts up to {self.shift} px")
        if self.brightness:
            on.append(f"brightness +-{100 * self.brightness:.0f} %")
        return ", ".join(on) or "none"

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 [N, S, S, C] -> the same, each image augmented on its own."""
        if self.rot90:
            k = rng.integers(4, size=len(x))
            x = np.stack([np.rot90(im, int(kk)) for im, kk in zip(x, k)])
        if self.flip:
            lr = rng.random(len(x)) < 0.5
            x[lr] = x[lr][:, :, ::-1]
            ud = rng.random(len(x)) < 0.5
            x[ud] = x[ud][:, ::-1]
        if self.brightness:
            gain = 1.0 + rng.uniform(-self.brightness, self.brightness, (len(x), 1, 1, 1))
            x = np.clip(x * gain + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x)


def corrupt(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of the batch uint8 [N, S, S, C] in which ``share`` of the images carry one or two
    foreign patches: rectangles or ellipses of 2 to S/4 px a side, filled with a flat grey, with
    noise, or with a piece of another image of the batch (CutPaste). Trained to give back the
    clean image, the generator learns to redraw what is normal instead of copying whatever it is
    shown: with U-Net skips it would otherwise pass a defect straight through to its output.
    Deliberately generic: nothing here knows the shapes of any benchmark's defects."""
    out = x.copy()
    n, s = len(x), x.shape[1]
    for i in np.flatnonzero(rng.random(n) < share):
        for _ in range(int(rng.integers(1, 3))):
            h, w = rng.integers(2, max(s // 4, 3) + 1, 2)
            y0, x0 = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
            mask = np.zeros((h, w), bool)
            if rng.random() < 0.5:
                mask[:] = True
            else:
                yy, xx = np.ogrid[:h, :w]
                mask = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1.0
            kind = rng.integers(3)
            if kind == 0:
                fill = np.full((h, w) + x.shape[3:], rng.integers(0, 256), np.uint8)
            elif kind == 1:
                fill = rng.integers(0, 256, (h, w) + x.shape[3:], dtype=np.uint8)
            else:
                j, a, b = int(rng.integers(n)), int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
                fill = x[j, a:a + h, b:b + w]
            region = out[i, y0:y0 + h, x0:x0 + w]
            region[mask] = fill[mask]
    return out


def shifted(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Whole images moved by up to ``shift`` px each way, borders mirrored."""
    s = x.shape[1]
    pad = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * shift + 1, (2, len(x)))
    return np.stack([p[a:a + s, b:b + s] for p, a, b in zip(pad, dy, dx)])


class Sampler:
    """Random training batches from uint8 frames [N, H, W, C]: ``tile`` x ``tile`` crops at any
    origin when tiling, otherwise the whole (square) frames.

    Tiles are cut from the frames mirrored outwards by ``margin``, as scoring cuts them
    (engine/tiling.py): the tiles along a frame's edge, with the mirror seam inside, are then
    normal to the model instead of a border band it never saw."""

    def __init__(self, frames: np.ndarray, tile: int, augment: Augment, seed: int, margin: int = 0):
        self.tile, self.augment = tile, augment
        self.rng = np.random.default_rng(seed)
        self.tiled = frames.shape[1:3] != (tile, tile)
        if self.tiled and margin:
            frames = np.pad(frames, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="reflect")
        self.frames = frames

    def reseed(self, seed: int, epoch: int) -> None:
        """Draws from (seed, epoch) alone, so a resumed run cuts the same tiles as an unbroken one."""
        self.rng = np.random.default_rng((seed, epoch))

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """A batch drawing from the frames ``idx`` (one tile or image each)."""
        t = self.tile
        if self.tiled:
            h, w = self.frames.shape[1:3]
            ys = self.rng.integers(0, h - t + 1, len(idx))
            xs = self.rng.integers(0, w - t + 1, len(idx))
            x = np.stack([self.frames[i, y:y + t, x0:x0 + t] for i, y, x0 in zip(idx, ys, xs)])
        else:
            x = self.frames[idx]
            if self.augment.shift:
                x = shifted(x, min(self.augment.shift, t // 4), self.rng)
        return self.augment.apply(np.array(x), self.rng)
