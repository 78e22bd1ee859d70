"""ONNX Runtime backend: the CUDA provider when this ONNX Runtime has it (onnxruntime-gpu), else the
CPU; ``[model] providers`` sets the order (TensorRT, CUDA, CPU execution providers)."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..base import Engine
from ..bundle import ONNX, Bundle, BundleError

log = logging.getLogger(__name__)

ORT_MISSING = ("ONNX Runtime is not installed: pip install onnxruntime in the agent's venv (PyPI has x86-64 "
               "and aarch64 wheels; deploy/install.sh installs it, on a Jetson too), or onnxruntime-gpu for "
               "an NVIDIA GPU; never both, they are the same module")


# ``[model] providers`` names -> ONNX Runtime's execution providers, in the order tried.
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def provider_names(names: list[str], available: list[str]) -> list[str]:
    """The configured providers ("tensorrt", "cuda", "cpu" or ONNX Runtime's own names), in order,
    less those this ONNX Runtime lacks (a warning names them); BundleError when none is left."""
    unknown = [n for n in names if n not in PROVIDERS and n not in PROVIDERS.values()]
    if unknown:
        raise BundleError(f"unknown ONNX Runtime provider(s) {unknown}: use {', '.join(PROVIDERS)}")
    wanted = [PROVIDERS.get(n, n) for n in names]
    have = [p for p in wanted if p in available]
    if not have:
        raise BundleError(f"none of the ONNX Runtime providers {wanted} is available here (this ONNX Runtime has "
                          f"{available}): the CUDA and TensorRT providers need the onnxruntime-gpu package "
                          "instead of onnxruntime (deploy/install.sh --gpu), or add \"cpu\" to model.providers")
    skipped = [p for p in wanted if p not in available]
    if skipped:
        log.warning("ONNX Runtime providers %s are not available here (have %s): trying %s", skipped, available, have)
    return have


def require_onnxruntime():
    """The ``onnxruntime`` module, or BundleError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise BundleError(f"{ORT_MISSING} ({e})") from None
    return onnxruntime


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int = 0, providers: list[str] | None = None,
                 spinning: bool = True):
        super().__init__(bundle)
        ort = require_onnxruntime()
        self.precision = bundle.precision  # "int8" for a QDQ bundle (engine/int8.py)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or (os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if not spinning:
            # Idle intra-op threads otherwise spin-wait, taking CPU from capture and alarm threads.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]
        else:
            providers = provider_names(providers, available)
        try:
            self.session = ort.InferenceSession(bundle.file(ONNX), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BundleError(f"ONNX Runtime cannot load {bundle.file(ONNX)}: {e}") from e
        # What the session took: a provider that failed to start (the TensorRT provider without
        # TensorRT's libraries, CUDA without a GPU) is dropped by ONNX Runtime, with a warning.
        self.providers = self.session.get_providers()
        self.threads = so.intra_op_num_threads
        # InferenceSession.run is thread-safe; on the CPU, several callers each with their own
        # core beat one caller whose every operator waits at a barrier for its slowest thread.
        self.concurrent = self.providers[0] == "CPUExecutionProvider"
        self._in = bundle.input.name
        self._outs = ["score", "residual"]
        log.info("ONNX Runtime %s on %s (%s), %d threads", ort.__version__, self.device, ", ".join(self.providers),
                 self.threads)

    @property
    def device(self) -> str:
        first = self.providers[0]
        return "the CPU" if first == "CPUExecutionProvider" else f"the GPU ({first})"

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, residual = self.session.run(self._outs, {self._in: frames})
        return score, residual

    def describe(self) -> dict:
        return dict(super().describe(), providers=self.providers, threads=self.threads)
