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
        log.info("OpenVINO %s on the CPU (%s, capabilities %s), %d threads", self.version, self.precision,
                 ", ".join(caps), self.threads)

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = self._request.infer({0: frames})
        return np.asarray(res[self._outs[0]]), np.asarray(res[self._outs[1]])

    def describe(self) -> dict:
        return dict(super().describe(), threads=self.threads, openvino=self.version)
