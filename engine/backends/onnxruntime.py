"""ONNX Runtime backend: the CUDA provider when this ONNX Runtime has it (onnxruntime-gpu), else the
CPU; ``[model] providers`` sets the order (TensorRT, CUDA, CPU execution providers)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..base import Engine
from ..bundle import ONNX, Bundle, BundleError

log = logging.getLogger(__name__)

# A call of at least this many inputs per thread is split across the threads, one single-threaded run
# per core (below: OnnxRuntimeEngine._run).
SPLIT_MIN_PER_THREAD = 2

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


def _options(ort, threads: int):
    """Session options: every graph optimisation, ``threads`` intra-op threads, operators in order."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int = 0, providers: list[str] | None = None,
                 spinning: bool = True, split: bool = True):
        super().__init__(bundle)
        ort = require_onnxruntime()
        self.precision = bundle.precision  # "int8" for a QDQ bundle (engine/int8.py)

        so = _options(ort, threads or (os.cpu_count() or 1))
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
        # Data parallelism within a call on the CPU: a batch of several inputs (a frame's tiles, a
        # micro-batch) runs as one single-threaded run per core on its share of the inputs, instead
        # of one run whose every operator is split across the cores and waits at a barrier for
        # the slowest thread. 64 px tiles on a 2-core CPU: 1.10-1.21x at 8 to 98 inputs a call
        # (`ganomaly-bench engine BUNDLE --compare` times the engine with and without the split;
        # docs/int8-openvino.md). A single input still runs on every thread (the main session).
        self.split = 0
        self._single = None
        self._pool: ThreadPoolExecutor | None = None
        if split and self.threads > 1 and self.providers[0] == "CPUExecutionProvider":
            self._start_split(ort, bundle)
        # InferenceSession.run is thread-safe; on the CPU, several callers each with their own
        # core beat one caller whose every operator waits at a barrier for its slowest thread.
        self.concurrent = self.providers[0] == "CPUExecutionProvider"
        self._in = bundle.input.name
        self._outs = ["score", "residual"]
        log.info("ONNX Runtime %s on %s (%s), %d threads%s", ort.__version__, self.device, ", ".join(self.providers),
                 self.threads, ", a call of several inputs split across them" if self.split else "")

    def _start_split(self, ort, bundle: Bundle) -> None:
        """A single-threaded session and a pool of threads - 1 helpers for split calls."""
        try:
            self._single = ort.InferenceSession(bundle.file(ONNX), _options(ort, 1), providers=["CPUExecutionProvider"])
        except Exception as e:  # the main session loaded; run every call on it
            log.warning("ONNX Runtime: no single-threaded session for split calls (%s); every call runs on %d "
                        "threads", e, self.threads)
            return
        self.split = self.threads
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="ort-split")
        # Engine.CHUNK inputs per share: two 49-tile frames make one call of two shares instead of
        # two calls of two shares each.
        self.CHUNK = Engine.CHUNK * self.split

    @property
    def device(self) -> str:
        first = self.providers[0]
        return "the CPU" if first == "CPUExecutionProvider" else f"the GPU ({first})"

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, pool, k = len(frames), self._pool, self.split
        futures = None
        if pool is not None and n >= k * SPLIT_MIN_PER_THREAD:
            bounds = np.linspace(0, n, k + 1).round().astype(int)
            parts = [np.ascontiguousarray(frames[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            try:
                futures = [pool.submit(self._single.run, self._outs, {self._in: p}) for p in parts[1:]]
            except RuntimeError:  # closed by another thread (a hot swap) between the check and the submit
                futures = None
        if futures is None:
            score, residual = self.session.run(self._outs, {self._in: frames})
            return score, residual
        first = self._single.run(self._outs, {self._in: parts[0]})
        outs = [first] + [f.result() for f in futures]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def describe(self) -> dict:
        return dict(super().describe(), providers=self.providers, threads=self.threads, split=self.split)
