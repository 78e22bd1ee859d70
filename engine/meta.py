"""Typed bundle metadata: what ``bundle.json`` holds, checked when a bundle is opened.

Each model rejects unknown keys, so a misspelt or foreign field is an error rather than a
silently ignored one; the format version (``bundle.FORMAT_VERSION``) changes whenever a field
does.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Meta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def __getitem__(self, key: str) -> Any:  # old dict-style readers (plugins, notebooks)
        return getattr(self, key)


class InputMeta(_Meta):
    name: str
    dtype: Literal["uint8"] = "uint8"
    layout: Literal["NHWC"] = "NHWC"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3]
    color_order: str = "BGR"
    normalisation: str = "x/127.5-1"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


class Calibration(_Meta):
    """Where normal scores sit: the calibrated score is (raw - median) / scale, and alarms above
    ``threshold`` (1.0: the raw threshold, set for ``target_far`` on held-out normal images)."""

    median: float
    scale: float
    threshold: float = 1.0
    threshold_raw: Optional[float] = None
    target_far: Optional[float] = None
    n: Optional[int] = None
    method: Optional[str] = None
    mean: Optional[float] = None
    std: Optional[float] = None
    val_far: Optional[float] = None
    far_resolution: Optional[float] = None

    @field_validator("median", "scale", "threshold", "threshold_raw", "mean", "std")
    @classmethod
    def _finite(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Calibration":
        if self.scale <= 0:
            raise ValueError("calibration scale must be positive")
        if self.threshold_raw is not None and self.threshold_raw < self.median:
            raise ValueError(f"calibration inverts: raw threshold {self.threshold_raw:g} lies below the "
                             f"median of normal scores {self.median:g}")
        return self

    def normalise(self, raw) -> np.ndarray:
        """Calibrated score: 0 = typical normal image, 1 = the alarm threshold."""
        return (np.asarray(raw, dtype=np.float64) - self.median) / self.scale


# The score components, the one list: train/scoring.py computes each, a bundle's score is a weighted
# sum of some of them (ScoreMeta.terms), and the self-check ships one bundle per component.
COMPONENTS = ("latent", "recon", "features", "knn", "fknn", "peak", "rpeak")


class ScoreMeta(_Meta):
    name: str
    terms: list[dict[str, Any]]
    k: Optional[int] = None
    margin: Optional[int] = None  # peak: the tile border band left out
    # the residual output: |x - G(x)| (default) or edge-tolerant; "-knn": times the tile's nearest-neighbour distance
    residual: Optional[Literal["abs", "range", "abs-knn", "range-knn"]] = None


class PlanMeta(_Meta):
    """One TensorRT plan: valid only on the TensorRT version, GPU model and compute capability that built it."""

    file: str
    sha256: str
    size: int = 0
    built: str = ""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str = ""
    multiprocessors: Optional[int] = None  # SM count: tells an AGX Orin plan from an Orin Nano one
    precision: Literal["fp32", "fp16", "int8"] = "fp32"  # int8: built from the bundle's QDQ graph
    max_batch: int = Field(gt=0)
    opt_batch: int = 1
    fp16_mode: Optional[str] = None
    dla_core: Optional[int] = None  # built for this DLA core (GPU fallback for what the DLA cannot run)
    parity: Optional[dict[str, float]] = None


class TilingMeta(_Meta):
    """How a frame at working resolution is cut into model inputs (engine/tiling.py). The
    calibration is per frame of this size: the maximum over its tiles."""

    tile: int = Field(gt=0)
    stride: int = Field(gt=0)
    height: int = Field(gt=0, description="working resolution the ROI is resized to, rows")
    width: int = Field(gt=0, description="working resolution, columns")
    margin: int = Field(0, ge=0, description="tile border band left out of the score; the frame is mirrored "
                                             "outwards by as much")
    # Format 4: each tile position's mean and scale on held-out normal frames, row by row; the
    # frame score is then the maximum of the standardised tile scores (engine/tiling.py).
    position_mean: Optional[list[float]] = None
    position_scale: Optional[list[float]] = None


class QuantizationMeta(_Meta):
    """An INT8 bundle's record (engine/int8.py): its graph is a static QDQ one, quantised from the
    fp32 export on ``calibration_n`` held-out normal tiles whose hash is ``calibration_sha256``."""

    precision: Literal["int8"] = "int8"
    method: str  # "static QDQ, per-channel symmetric int8 weights, symmetric int8 activations (min-max)"
    ops: str  # engine/int8.OP_SETS key: which operators are quantised
    quantized_nodes: int = Field(ge=0)
    calibration_file: str
    calibration_sha256: str
    calibration_n: int = Field(gt=0)
    calibration_source: str = ""
    fp32_model_sha256: str  # the graph it was quantised from
    heldout_frames: int = 0  # frames the tolerance and the calibration shift were measured on
    measured: dict[str, float] = Field(default_factory=dict)  # fp32-vs-int8 differences, rank agreement


class WindowMeta(_Meta):
    """The 16-bit intensity window the model was trained with (engine/window.py): fixed lo..hi or
    percentiles p_lo..p_hi. Absent: 16-bit images keep their top 8 bits."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    p_lo: Optional[float] = None
    p_hi: Optional[float] = None


class BundleMeta(_Meta):
    format: Literal["ganomaly-edge-bundle"]
    format_version: int
    name: str = ""
    created: str = ""
    input: InputMeta
    outputs: dict[str, Any]
    opset: Optional[int] = None
    tiling: Optional[TilingMeta] = None  # absent: one model input per frame
    window: Optional[WindowMeta] = None  # absent (and in bundles from before windows): top 8 bits of 16
    score: ScoreMeta
    calibration: Calibration
    checkpoint: dict[str, Any] = Field(default_factory=dict)
    export_parity: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str]
    tolerance: dict[str, dict[str, float]] = Field(default_factory=dict)
    plans: list[PlanMeta] = Field(default_factory=list)
    quantization: Optional[QuantizationMeta] = None  # format 6: an INT8 bundle (engine/int8.py)
    versions: dict[str, str] = Field(default_factory=dict)
    integrity: str = ""  # sha256 of the rest of bundle.json (bundle.meta_hash), checked on open


def describe_errors(e) -> str:
    """A pydantic ValidationError as 'field.path: message' lines."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                     for err in e.errors())
