"""Tiles: how a frame at working resolution becomes a batch of model inputs, and back.

A frame of ``height`` x ``width`` is covered by ``tile`` x ``tile`` squares every ``stride``
pixels; the last row and column are moved in to end at the frame's edge, so every pixel is
covered. A frame's raw score is the maximum over its tiles, and its residual map is the tiles'
maps put back in place, overlaps blended with a tapered weight.

A part on a line sits in the same place in every frame, so one tile position (a grainy table, a
bore's edge) can be far noisier on normal frames than the rest, and a defect elsewhere would have
to beat that position's normal peaks. A tiling may therefore carry each position's mean and
scale on held-out normal frames (``standardised``): a tile's score is then standardised by its
position's before the maximum is taken, so each position competes against its own normal range.
Those statistics belong to one frame size: ``resized`` drops them.

A tile's border reconstructs worse than its centre (the decoder sees no context beyond it), so
the score reads only a tile's interior, ``margin`` pixels in from each side. For the interiors
to cover the whole frame, the frame is first mirrored outwards by ``margin`` pixels, and the
stride is at most ``tile - 2 * margin``; the stitched map gives the border band almost no weight.

An untiled model is the case ``tile == height == width``: one tile per frame. Training, export
and every runtime use this module, so they cut frames the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import EngineError


class TilingError(EngineError, ValueError):
    """A frame size and a tiling do not fit together; the message says how to fix it."""


def margin_for(tile: int) -> int:
    """The border band a tile's score leaves out: 1/8 of its side."""
    return tile // 8


def default_stride(tile: int) -> int:
    """The default stride: the scored interior, so the interiors abut without overlap.

    Overlapping interiors (half a tile: 81 tiles for 300 x 300 at 64 px) cost 1.65x the engine
    time of abutting ones (49 tiles) and, on the benchmark's networks, gave no higher frame ROC
    AUC: every pixel is still scored, by one tile's interior with its own margin of context.
    """
    return max(tile - 2 * margin_for(tile), 1)


def positions(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one side: 0, stride, 2*stride, ..., and one ending at the edge."""
    if tile > length:
        raise TilingError(f"a {tile} px tile does not fit a side of {length} px: use a larger working "
                          "resolution or a smaller tile")
    out = list(range(0, length - tile + 1, stride))
    if out[-1] != length - tile:
        out.append(length - tile)
    return out


@dataclass(frozen=True)
class Tiling:
    tile: int
    stride: int
    height: int
    width: int
    margin: int = 0
    # Per tile position, row by row: the mean and scale of its scores on held-out normal frames.
    position_mean: tuple[float, ...] | None = None
    position_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.tile < 1 or not 1 <= self.stride <= self.tile:
            raise TilingError(f"stride must be between 1 and the tile size ({self.tile}), got {self.stride}")
        if self.margin < 0 or 2 * self.margin >= self.tile:
            raise TilingError(f"margin {self.margin} leaves no interior in a {self.tile} px tile")
        if self.stride > self.tile - 2 * self.margin:
            raise TilingError(f"stride {self.stride} leaves gaps between the {self.tile - 2 * self.margin} px tile "
                              f"interiors that are scored: use a stride of at most {self.tile - 2 * self.margin}")
        positions(self.height + 2 * self.margin, self.tile, self.stride)
        positions(self.width + 2 * self.margin, self.tile, self.stride)
        if (self.position_mean is None) != (self.position_scale is None):
            raise TilingError("a tiling's position statistics need both the mean and the scale")
        if self.position_mean is not None:
            for name in ("position_mean", "position_scale"):
                v = getattr(self, name)
                object.__setattr__(self, name, tuple(float(x) for x in v))
                if len(getattr(self, name)) != self.count:
                    raise TilingError(f"{name} has {len(v)} values for the {self.count} tile positions of "
                                      f"{self.describe_geometry()}")
            if not all(np.isfinite(self.position_mean)) or not all(np.isfinite(s) and s > 0
                                                                   for s in self.position_scale):
                raise TilingError("position statistics must be finite, with positive scales")

    @classmethod
    def single(cls, size: int) -> "Tiling":
        return cls(size, size, size, size)

    @property
    def tiled(self) -> bool:
        return self.count > 1 or (self.height, self.width) != (self.tile, self.tile)

    @cached_property
    def origins(self) -> list[tuple[int, int]]:
        """(y, x) of every tile on the mirrored canvas, row by row."""
        m2 = 2 * self.margin
        return [(y, x) for y in positions(self.height + m2, self.tile, self.stride)
                for x in positions(self.width + m2, self.tile, self.stride)]

    @property
    def count(self) -> int:
        return len(self.origins)

    @property
    def position_standardised(self) -> bool:
        return self.position_mean is not None

    def resized(self, height: int, width: int) -> "Tiling":
        """The same tiles over another frame size (without position statistics: they belong to this one)."""
        return Tiling(self.tile, self.stride, height, width, self.margin)

    # A position's variance is pooled half-and-half with that of all held-out tile scores: a
    # hundred held-out frames estimate one position's spread too roughly to divide by it alone.
    POOLING = 0.5
    # Position statistics are worth their risk only where the frames have a fixed layout: where
    # the tile positions explain at least this share of the normal tile scores' variance
    # (``position_share``). On a texture (brick: 0.05-0.08) every position sees the same thing,
    # and dividing by per-position spreads estimated on a few dozen frames made a lighting shift
    # raise 25-37 % false alarms where the raw maximum raised none; on the cast parts (0.22-0.81)
    # they lifted the frame ROC AUC by up to 0.05.
    MIN_POSITION_SHARE = 0.15

    def position_share(self, val_tile_scores: np.ndarray) -> float:
        """The share of the held-out tile scores' variance that lies between tile positions (the
        intraclass correlation: between-position variance net of what the positions' sample
        means scatter by chance, over that plus the mean within-position variance). About 0
        for a texture or objects anywhere in the frame, near 1 for a fixed layout."""
        if self.count == 1:
            return 0.0
        v = np.asarray(val_tile_scores, np.float64).reshape(-1, self.count)
        if len(v) < 2:
            return 0.0
        within = float(v.var(0, ddof=1).mean())
        between = max(float(v.mean(0).var(ddof=1)) - within / len(v), 0.0)
        total = between + within
        return between / total if total > 0 else 0.0

    def standardised(self, val_tile_scores: np.ndarray) -> "Tiling":
        """This tiling with each position's statistics from raw tile scores of held-out normal
        frames ([n_frames * count], frame by frame); unchanged when there is one tile."""
        if self.count == 1:
            return self
        v = np.asarray(val_tile_scores, np.float64).reshape(-1, self.count)
        scale = np.sqrt((1 - self.POOLING) * v.var(0) + self.POOLING * v.var())
        scale = np.maximum(scale, 1e-6 * max(float(np.abs(v).max()), 1e-12))
        return Tiling(self.tile, self.stride, self.height, self.width, self.margin,
                      tuple(v.mean(0)), tuple(scale))

    def held_out_frame_scores(self, val_tile_scores: np.ndarray) -> np.ndarray:
        """Frame scores of the held-out frames whose tile scores set this tiling's position
        statistics, each as a new frame would score: standardised by the statistics of the
        other held-out frames (leave one out). Standardised by statistics that include its own
        tiles, every held-out frame looks quieter than a new one, and a threshold set on those
        scores alarms more often than its target. Without position statistics, the plain scores."""
        v = np.asarray(val_tile_scores, np.float64).reshape(-1, self.count)
        if not self.position_standardised or len(v) < 3:
            return self.frame_scores(v.ravel())
        geo, out = self.geometry(), np.empty(len(v))
        for i in range(len(v)):
            out[i] = geo.standardised(np.delete(v, i, axis=0)).frame_scores(v[i])[0]
        return out

    def geometry(self) -> "Tiling":
        """This tiling without position statistics: frame scores are the maximum of raw tile scores."""
        return self.resized(self.height, self.width)

    def split(self, frames: np.ndarray) -> np.ndarray:
        """[N, H, W, C] -> [N * count, tile, tile, C], frame by frame, tiles row by row."""
        n, h, w = frames.shape[:3]
        if (h, w) != (self.height, self.width):
            raise TilingError(f"frames are {w}x{h}, the tiling expects {self.width}x{self.height}")
        if not self.tiled:
            return frames
        t, m = self.tile, self.margin
        if m:
            pad = ((0, 0), (m, m), (m, m)) + ((0, 0),) * (frames.ndim - 3)
            frames = np.pad(frames, pad, mode="reflect")
        out = np.empty((n, self.count, t, t) + frames.shape[3:], frames.dtype)
        for k, (y, x) in enumerate(self.origins):
            out[:, k] = frames[:, y:y + t, x:x + t]
        return out.reshape((n * self.count, t, t) + frames.shape[3:])

    def frame_scores(self, tile_scores: np.ndarray) -> np.ndarray:
        """Each frame's score: the maximum over its tiles, each standardised by its position's
        statistics when the tiling has them."""
        s = np.asarray(tile_scores).reshape(-1, self.count)
        if self.position_mean is not None:
            mean, scale = self._position_arrays
            s = (s.astype(np.float64) - mean) / scale
        return s.max(axis=1)

    @cached_property
    def _position_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.position_mean), np.asarray(self.position_scale)

    @cached_property
    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The tile weight (tapered towards the border, never zero) and 1 / its sum per pixel."""
        t, m = self.tile, self.margin
        ramp = np.minimum(np.arange(t) + 0.5, t - 0.5 - np.arange(t)).astype(np.float32)
        if m:  # the unscored border band: almost no weight
            ramp = np.clip((ramp - m + 1) / max(t / 8, 1.0), 0.01, 1.0)
        else:
            ramp = np.minimum(ramp / max(t / 4, 1.0), 1.0)
        w = np.outer(ramp, ramp)
        total = np.zeros((self.height + 2 * m, self.width + 2 * m), np.float32)
        for y, x in self.origins:
            total[y:y + t, x:x + t] += w
        return w, 1.0 / total

    def stitch(self, tile_maps: np.ndarray) -> np.ndarray:
        """[N * count, tile, tile] residual maps -> [N, H, W], overlaps blended."""
        if not self.tiled:
            return tile_maps
        t, m = self.tile, self.margin
        maps = np.asarray(tile_maps, np.float32).reshape(-1, self.count, t, t)
        w, inv = self._weights
        out = np.zeros((maps.shape[0], self.height + 2 * m, self.width + 2 * m), np.float32)
        for k, (y, x) in enumerate(self.origins):
            out[:, y:y + t, x:x + t] += maps[:, k] * w
        out *= inv
        return out[:, m:m + self.height, m:m + self.width] if m else out

    def describe_geometry(self) -> str:
        if not self.tiled:
            return f"{self.width}x{self.height}, untiled"
        return (f"{self.width}x{self.height} in {self.count} tiles of {self.tile} px "
                f"(stride {self.stride}, interior from {self.margin} px in)")

    def describe(self) -> str:
        return self.describe_geometry() + (", each position standardised" if self.position_standardised else "")
