"""The intensity window: how a 16-bit image (an X-ray scanner's TIFF/PNG, a Mono12/Mono16 camera)
becomes the model's 8-bit input, shared by training and the agent and recorded in the checkpoint
and the bundle.

A window maps [lo, hi] linearly onto 0..255 and clips outside it: fixed (``lo``, ``hi`` in raw
pixel units) or per image from percentiles (``p_lo``, ``p_hi`` of its pixels). Without a window a
16-bit image keeps its top 8 bits (``>> 8``), where a low-contrast wire 300 units above its
background disappears. Text form (``ganomaly-train --window``, the agent's config): ``LO:HI``
(e.g. ``20000:24000``) or ``pLO:pHI`` (e.g. ``p0.5:p99.5``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from .errors import EngineError


class WindowError(EngineError, ValueError):
    """A window that cannot be used; the message says why and what to write instead."""


@dataclass(frozen=True)
class Window:
    lo: Optional[float] = None  # fixed window, raw pixel units
    hi: Optional[float] = None
    p_lo: Optional[float] = None  # percentile window, 0..100
    p_hi: Optional[float] = None

    def __post_init__(self):
        fixed = self.lo is not None or self.hi is not None
        pct = self.p_lo is not None or self.p_hi is not None
        if fixed == pct:
            raise WindowError("a window is either fixed (lo and hi) or percentiles (p_lo and p_hi), not "
                              f"{'both' if fixed else 'neither'}")
        if fixed and (self.lo is None or self.hi is None or not 0 <= self.lo < self.hi <= 65535):
            raise WindowError(f"window lo={self.lo} hi={self.hi}: need 0 <= lo < hi <= 65535 (raw 16-bit units)")
        if pct and (self.p_lo is None or self.p_hi is None or not 0 <= self.p_lo < self.p_hi <= 100):
            raise WindowError(f"window percentiles {self.p_lo}..{self.p_hi}: need 0 <= p_lo < p_hi <= 100")

    @classmethod
    def parse(cls, text: str) -> "Window":
        """``LO:HI`` or ``pLO:pHI``."""
        parts = text.strip().lower().split(":")
        pct = len(parts) == 2 and all(p.startswith("p") for p in parts)
        try:
            a, b = (float(p[1:] if pct else p) for p in parts)
        except ValueError:  # not two numbers (WindowError is one too: raised outside this try)
            a = b = None
        if a is not None:
            return cls(p_lo=a, p_hi=b) if pct else cls(lo=a, hi=b)
        raise WindowError(f"window {text!r}: write LO:HI in raw pixel units (e.g. 20000:24000) or "
                          "pLO:pHI as percentiles (e.g. p0.5:p99.5)")

    @classmethod
    def from_meta(cls, meta: Optional[dict]) -> Optional["Window"]:
        return cls(**{k: v for k, v in meta.items() if v is not None}) if meta else None

    def as_meta(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def text(self) -> str:
        return f"p{self.p_lo:g}:p{self.p_hi:g}" if self.p_lo is not None else f"{self.lo:g}:{self.hi:g}"

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        if self.lo is not None:
            return float(self.lo), float(self.hi)
        lo, hi = np.percentile(image, [self.p_lo, self.p_hi])
        return float(lo), float(max(hi, lo + 1.0))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 of the same shape: [lo, hi] onto 0..255, clipped. 8-bit input passes unchanged (a
        window is for deeper images; a camera may switch formats)."""
        if image.dtype == np.uint8:
            return image
        lo, hi = self.bounds(image)
        out = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def to_8bit(image: np.ndarray, window: Optional[Window]) -> np.ndarray:
    """The 8-bit image the model (and the crops) see: through the window, else the top 8 bits."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ValueError(f"unsupported pixel type {image.dtype}: expected 8- or 16-bit images")
    if window is not None:
        return window.apply(image)
    return (image >> 8).astype(np.uint8)
