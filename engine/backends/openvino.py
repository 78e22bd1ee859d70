"""OpenVINO backend (CPU): the bundle's ONNX graph compiled by OpenVINO's CPU plugin.

Optional: ``pip install 'ganomaly-edge[openvino]'``. Precision: an INT8 bundle's QDQ graph runs in
int8 as it is (OpenVINO's low-precision transformations); an fp32 bundle runs in ``bf16`` when
asked for and the CPU offers it (AVX512-BF16 / AMX), else fp32 (``[model] openvino_precision``).
OpenVINO's own default on a BF16 CPU is bf16; here it is fp32 unless asked, because bf16 changes
scores more than the fp32 self-test tolerance (a bf16 engine is tested against the fp16 tolerance).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..base import Engine
from ..bundle import ONNX, Bundle, BundleError

log = logging.getLogger(__name__)

OV_MISSING = ("OpenVINO is not installed: pip install 'ganomaly-edge[openvino]' in the agent's venv (x86-64 and "
              "aarch64 wheels on PyPI), or set model.backend = \"onnxruntime\"")
PRECISIONS = ("auto", "fp32", "bf16")


def require_openvino():
    """The ``openvino`` module, or BundleError saying how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise BundleError(f"{OV_MISSING} ({e})") from None
    return openvino


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_capabilities(core) -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU ("FP32", "INT8", "BF16", ...)."""
    try:
        return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # an old plugin without the property
        return ["FP32"]


def choose_precision(asked: str, capabilities: list[str], int8_graph: bool) -> str:
    """What the engine runs: "int8" for a QDQ graph; "bf16" only when asked and the CPU has it."""
    if asked not in PRECISIONS:
        raise BundleError(f"openvino precision must be one of {PRECISIONS}, not {asked!r}")
    if int8_graph:
        return "int8"
    if asked == "bf16":
        if "BF16" not in capabilities:
            raise BundleError(f"model.openvino_precision = \"bf16\" but this CPU has no bf16 support (OpenVINO "
                              f"reports {capabilities}): use \"fp32\" or \"auto\"")
        return "bf16"
    return "fp32"


class OpenVinoEngine(Engine):
    backend = "openvino"

    def __init__(self, bundle: Bundle, threads: int = 0, precision: str = "auto"):
        super().__init__(bundle)
        ov = require_openvino()
        core = ov.Core()
        caps = cpu_capabilities(core)
        self.precision = choose_precision(precision, caps, bundle.precision == "int8")
        self.threads = threads or (os.cpu_count() or 1)
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32"}
        try:
            self.compiled = core.compile_model(bundle.file(ONNX), "CPU", config)
        except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
            raise BundleError(f"OpenVINO cannot compile {bundle.file(ONNX)}: {e}") from e
        self.concurrent = False  # one infer request; the agent runs one worker
        self._request = self.compiled.create_infer_request()
        self._outs = [self.compiled.output("score"), self.compiled.output("residual")]
        self.version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        self.fixed_batch: int | None = None
        self._fixed = None
        if self.tiling.tiled and self.precision != "int8":
            self._compile_fixed(core, config, self.tiling.count)
        log.info("OpenVINO %s on the CPU (%s, capabilities %s), %d threads%s", self.version, self.precision,
                 ", ".join(caps), self.threads,
                 f", a frame's {self.fixed_batch} tiles through a fixed-batch compile" if self.fixed_batch else "")

    def _compile_fixed(self, core, config: dict, n: int) -> None:
        """A second compile of the graph with its batch fixed at one frame's tiles, the call every
        frame makes. OpenVINO's CPU plugin picks faster kernels for a static shape: on a 2-core
        AVX2 CPU a 49-tile fp32 call took 52.3 ms against 57.5 ms with the batch dynamic (an INT8
        graph compiled so took 99 ms against 55, hence fp32 and bf16 only). Optional: where it
        cannot be made, every call runs the dynamic compile, and self_test proves it before use."""
        try:
            model = core.read_model(self.bundle.file(ONNX))
            shape = [n, *self.spec.shape]
            model.reshape({model.inputs[0]: shape})
            compiled = core.compile_model(model, "CPU", config)
            self._fixed = (compiled.create_infer_request(), compiled.output("score"), compiled.output("residual"))
            self.fixed_batch = n
        except Exception as e:  # OpenVINO raises its own RuntimeError subclasses
            log.warning("OpenVINO: no fixed-batch compile for %d tiles (%s); every call runs the dynamic one", n, e)

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._fixed is not None and len(frames) == self.fixed_batch:
            request, score, residual = self._fixed
            res = request.infer({0: frames})
            return np.asarray(res[score]), np.asarray(res[residual])
        res = self._request.infer({0: frames})
        return np.asarray(res[self._outs[0]]), np.asarray(res[self._outs[1]])

    def self_test(self, enforce: bool = True) -> dict:
        """The reference inputs through the dynamic compile (Engine.self_test), then, with a
        fixed-batch compile, a full batch of them (cycled to its size) through that one against
        the same references and tolerance. A fixed compile that fails is dropped with a warning:
        the dynamic one, which passed, serves every call."""
        rep = super().self_test(enforce)
        if self._fixed is None:
            return rep
        ref = self.bundle.reference()
        idx = np.resize(np.arange(len(ref["inputs"])), self.fixed_batch)
        got_s, got_r = self._run(np.ascontiguousarray(ref["inputs"][idx]))
        d_score = float(np.abs(got_s - ref["score"][idx].astype(np.float64)).max()) / self.bundle.calibration.scale
        d_res = float(np.abs(got_r - ref["residual"][idx]).max())
        tol = rep["tolerance"]
        ok = d_score <= tol["score"] and d_res <= tol["residual"]
        rep["fixed_batch"] = {"n": self.fixed_batch, "max_score_diff_calibrated": d_score,
                              "max_residual_diff": d_res, "passed": bool(ok)}
        if not ok:
            log.warning("OpenVINO: the fixed-batch compile differs from the reference by %.3g calibrated units "
                        "(residual %.3g; tolerance %s): dropped, every call runs the dynamic compile",
                        d_score, d_res, tol)
            self._fixed, self.fixed_batch = None, None
        return rep

    def describe(self) -> dict:
        return dict(super().describe(), threads=self.threads, openvino=self.version, fixed_batch=self.fixed_batch)
