"""ONNX Runtime backend: CPU by default, the CUDA provider when present and asked for."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..base import Engine
from ..bundle import ONNX, Bundle, BundleError

log = logging.getLogger(__name__)


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int = 0, providers: list[str] | None = None,
                 spinning: bool = True):
        super().__init__(bundle)
        import onnxruntime as ort

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
        missing = [p for p in providers if p not in available]
        if missing:
            raise BundleError(f"ONNX Runtime providers {missing} are not available here (have {available})")
        try:
            self.session = ort.InferenceSession(bundle.file(ONNX), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BundleError(f"ONNX Runtime cannot load {bundle.file(ONNX)}: {e}") from e
        self.providers = self.session.get_providers()
        self.threads = so.intra_op_num_threads
        # InferenceSession.run is thread-safe; on the CPU, several callers each with their own
        # core beat one caller whose every operator waits at a barrier for its slowest thread.
        self.concurrent = self.providers[0] == "CPUExecutionProvider"
        self._in = bundle.input.name
        self._outs = ["score", "residual"]
        log.info("ONNX Runtime %s on %s, %d threads", ort.__version__, self.providers[0], self.threads)

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, residual = self.session.run(self._outs, {self._in: frames})
        return score, residual

    def describe(self) -> dict:
        return dict(super().describe(), providers=self.providers, threads=self.threads)
