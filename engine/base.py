"""The engine interface every backend implements, and the self-test each runs on load."""

from __future__ import annotations

import abc
import logging
from typing import Any

import numpy as np

from .bundle import Bundle, BundleError, InputSpec
from .errors import EngineError
from .tiling import Tiling, TilingError

log = logging.getLogger(__name__)


class SelfTestError(BundleError):
    """A backend's outputs on the bundle's reference inputs differ from the expected ones."""


class FrameError(EngineError, ValueError):
    """A batch handed to ``infer`` does not match the model input."""


class InferenceError(EngineError, RuntimeError):
    """A backend failed to run a batch it accepted (the backend's log says why)."""


class Engine(abc.ABC):
    """A loaded model: ``infer(uint8 [N, H, W, C]) -> (raw scores [N], residual maps [N, H, W])``."""

    backend = "none"
    precision = "fp32"
    # True when infer() may be called from several threads at once (the agent then runs one
    # inference worker per core); a TensorRT execution context is not, so it stays False there.
    concurrent = False
    # Why this engine runs instead of the TensorRT one that was expected (``load`` with "auto" on a
    # machine whose TensorRT or GPU failed); None when nothing fell back.
    fallback: str | None = None

    @property
    def device(self) -> str:
        """Where inference runs, in words ("the CPU", "the GPU (NVIDIA Orin)")."""
        return "the CPU"

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.spec: InputSpec = bundle.input
        self.tiling: Tiling = bundle.tiling
        self.max_batch: int | None = None  # model inputs (tiles) per call
        self.selftest_report: dict[str, Any] = {}

    @abc.abstractmethod
    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The backend's inference on a validated, contiguous uint8 batch."""

    def check_frames(self, frames: np.ndarray) -> np.ndarray:
        if not isinstance(frames, np.ndarray):
            raise FrameError(f"frames must be a numpy array, got {type(frames).__name__}")
        if frames.ndim == 3:
            frames = frames[None]
        h, w, c = self.spec.shape
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, c):
            raise FrameError(
                f"frames must be uint8 [N, {h}, {w}, {c}] ({self.spec.color_order if c == 3 else 'grey'}), "
                f"got {frames.dtype} {list(frames.shape)}: resize with engine.preprocess.prepare")
        if self.max_batch and frames.shape[0] > self.max_batch:
            raise FrameError(f"batch of {frames.shape[0]} exceeds this engine's maximum {self.max_batch}")
        return np.ascontiguousarray(frames)

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs (tiles, or whole frames when untiled) -> raw scores, residual maps."""
        return self._run(self.check_frames(frames))

    # Model inputs per call when the engine sets no limit (ONNX Runtime on a CPU), rounded to
    # whole frames: a tiled micro-batch (8 frames of 49 tiles) would otherwise be one 392-tile
    # call, hundreds of MB of activations for no speed gained (one tile fills a core at 64 px).
    CHUNK = 64

    def max_frames(self, tiling: Tiling | None = None) -> int | None:
        """Frames of ``tiling`` (default the bundle's) per call that fit the engine's batch limit
        in one piece, at least one; without a limit, those that fit CHUNK tiles when tiled (a
        bigger micro-batch only adds latency), else None."""
        t = tiling or self.tiling
        if not self.max_batch:
            return max(1, self.CHUNK // t.count) if t.tiled else None
        return max(1, self.max_batch // t.count)

    def score_frames(self, frames: np.ndarray, tiling: Tiling | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames at working resolution, uint8 [N, H, W, C] -> (raw frame scores [N], residual
        maps [N, H, W]): a frame's tiles in one call, as many frames per call as ``max_frames``
        allows, a frame's score the maximum over its tiles, the maps stitched."""
        t = tiling or self.tiling
        if frames.ndim == 3:
            frames = frames[None]
        c = self.spec.channels
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (t.height, t.width, c):
            raise FrameError(f"frames must be uint8 [N, {t.height}, {t.width}, {c}] (the working resolution), "
                             f"got {frames.dtype} {list(frames.shape)}")
        try:
            tiles = t.split(frames)
        except TilingError as e:
            raise FrameError(str(e)) from None
        # Whole frames per call (max_frames); only a plan whose profile is smaller than one
        # frame's tiles splits a frame.
        step = (self.max_frames(t) or len(frames)) * t.count
        if self.max_batch:
            step = min(step, self.max_batch)
        parts = [self.infer(tiles[i:i + step]) for i in range(0, len(tiles), step)]
        raw = np.concatenate([p[0] for p in parts])
        maps = np.concatenate([p[1] for p in parts])
        return t.frame_scores(raw), t.stitch(maps)

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        return self.bundle.calibration.normalise(raw)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "model": self.bundle.name,
                "hash": self.bundle.model_hash, "input": list(self.spec.shape),
                "tiling": self.tiling.describe(), "device": self.device, "fallback": self.fallback,
                "signed_by": self.bundle.signed_by}  # the trusted key that signed it (None: not checked)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- self-test ---------------------------------------------------------------------------
    def self_test(self, enforce: bool = True) -> dict[str, Any]:
        """Run the reference inputs (as one batch and one at a time) and compare with the
        outputs recorded when the bundle was made."""
        ref = self.bundle.reference()
        x, want_s, want_r = ref["inputs"], ref["score"].astype(np.float64), ref["residual"]
        n = len(x) if not self.max_batch else min(len(x), self.max_batch)
        got_s, got_r = self.infer(x[:n])
        single = np.array([self.infer(x[i:i + 1])[0][0] for i in range(n)], np.float64)
        scale = self.bundle.calibration.scale
        d_score = max(np.abs(got_s - want_s[:n]).max(), np.abs(single - want_s[:n]).max()) / scale
        d_res = float(np.abs(got_r - want_r[:n]).max())
        tol = self.bundle.tolerance(self.precision)
        rep = {"n": int(n), "max_score_diff_calibrated": float(d_score), "max_residual_diff": d_res,
               "tolerance": tol, "passed": bool(d_score <= tol["score"] and d_res <= tol["residual"])}
        self.selftest_report = rep
        if not rep["passed"]:
            msg = (f"{self.backend} ({self.precision}) self-test failed on bundle {self.bundle.path}: "
                   f"score differs from the reference by {d_score:.3g} calibrated units (tolerance "
                   f"{tol['score']}), residual by {d_res:.3g} (tolerance {tol['residual']}). The backend "
                   "would not score like the trained model; rebuild the engine on this device, or pass "
                   "allow_mismatch / --allow-mismatch to load it anyway")
            if enforce:
                raise SelfTestError(msg)
            log.warning("%s", msg)
        else:
            log.info("%s self-test passed: max score diff %.2g (calibrated), residual %.2g",
                     self.backend, d_score, d_res)
        return rep
