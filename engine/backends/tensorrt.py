"""TensorRT backend (TensorRT 8.6, 10.x and 11.x Python API; pycuda for memory and streams).

Pinned host buffers and device buffers are sized once from the optimisation profile's maximum
batch; each ``infer`` copies in, runs ``execute_async_v3`` on one stream and copies out. All
CUDA work happens inside ``CudaDevice.activate()``, so any thread may call ``infer``; ``close``
releases buffers, stream and TensorRT objects while the context is current.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..base import Engine, InferenceError
from ..bundle import Bundle, BundleError
from ..meta import PlanMeta
from ..trt_compat import UnsupportedTensorRT, series_of

log = logging.getLogger(__name__)


def rebuild_hint(bundle: Bundle, precision: str = "fp32") -> str:
    return (f"rebuild on this device with: ganomaly-build-engine {bundle.path} --out {bundle.path} "
            f"--precision {precision}")


def plan_mismatch(plan: PlanMeta, trt_version: str, gpu_name: str,
                  compute_capability: str | None = None, multiprocessors: int | None = None) -> str | None:
    """Why ``plan`` cannot run here, or None. A plan is valid only for the TensorRT version, the
    GPU model and the compute capability that built it; a plan that recorded no compute
    capability (older bundles) cannot prove its match and is refused too."""
    if plan.tensorrt_version != trt_version:
        return (f"plan {plan.file} was built with TensorRT {plan.tensorrt_version}, "
                f"this device has TensorRT {trt_version}")
    if plan.gpu_name != gpu_name:
        return f"plan {plan.file} was built for {plan.gpu_name}, this device is {gpu_name}"
    if compute_capability is not None and plan.compute_capability != compute_capability:
        built = f"sm {plan.compute_capability}" if plan.compute_capability else "an unrecorded compute capability"
        return (f"plan {plan.file} was built for {plan.gpu_name} with {built}, this device's "
                f"{gpu_name} is sm {compute_capability}")
    # Jetson Orin modules share name and compute capability; TensorRT only warns when a plan
    # moves between them. Plans that recorded no count (older bundles) are not judged on it.
    if multiprocessors is not None and plan.multiprocessors is not None and plan.multiprocessors != multiprocessors:
        return (f"plan {plan.file} was built on a {plan.gpu_name} with {plan.multiprocessors} multiprocessors "
                f"(another module), this one has {multiprocessors}")
    return None


class _Log:
    """TensorRT messages to Python logging. TensorRT keeps one logger per process (the first one
    it is given), so one instance serves every Builder and Runtime (``trt_logger``)."""

    def __init__(self):
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def mark(self) -> int:
        with self.lock:
            return len(self.errors)

    def errors_since(self, mark: int) -> list[str]:
        with self.lock:
            return self.errors[mark:]

    def record(self, severity: str, msg: str) -> None:
        if severity == "error":
            with self.lock:
                self.errors.append(msg)
                del self.errors[:-200]  # keep the recent ones only
            log.error("TensorRT: %s", msg)
        elif severity == "warning":
            log.warning("TensorRT: %s", msg)
        else:
            log.debug("TensorRT: %s", msg)


_loggers: dict[int, Any] = {}


def trt_logger(trt):
    """The process-wide ILogger for this ``tensorrt`` module."""
    key = id(trt)
    if key not in _loggers:
        sink = _Log()

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.sink = sink

            def log(self, severity, msg):
                level = ("error" if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR)
                         else "warning" if severity == trt.Logger.WARNING else "info")
                sink.record(level, str(msg))

        _loggers[key] = _Logger()
    return _loggers[key]


def check_version(trt) -> str:
    """The TensorRT API series, or BundleError naming the version and what to do."""
    try:
        return series_of(trt.__version__)
    except UnsupportedTensorRT as e:
        raise BundleError(str(e)) from None


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, bundle: Bundle, plan: PlanMeta, device_index: int = 0):
        super().__init__(bundle)
        import tensorrt as trt

        from ..cuda import Buffers, device

        from ..cuda import CudaUnavailable
        from ..loader import GpuUnavailable

        check_version(trt)
        self.precision = plan.precision
        self.plan_info = plan
        self.buffers: Buffers | None = None
        try:
            self.dev = device(device_index)
        except CudaUnavailable as e:
            raise (GpuUnavailable if e.fault else BundleError)(str(e)) from None
        why = plan_mismatch(plan, trt.__version__, self.dev.name(), self.dev.compute_capability(),
                            self.dev.multiprocessors())
        if why:
            raise BundleError(f"{why}: {rebuild_hint(bundle, self.precision)}")
        bundle.verify_file(plan.file, plan.sha256)
        with open(bundle.file(plan.file), "rb") as f:
            data = f.read()
        try:
            with self.dev.activate():
                self._deserialise(trt, data)
                self.buffers = Buffers(self.dev)
                self._setup(trt)
        except self.dev.cuda.Error as e:  # out of device memory, a driver fault: retry later
            self.close()
            raise GpuUnavailable(f"CUDA failed while loading {plan.file} on {self.dev.name()}: {e}") from e
        except BaseException:
            self.close()
            raise

    def _deserialise(self, trt, data: bytes) -> None:
        logger = trt_logger(trt)
        mark = logger.sink.mark()
        self.runtime = trt.Runtime(logger)
        if self.plan_info.dla_core is not None:  # a DLA plan runs on the core it was built for
            self.runtime.DLA_core = self.plan_info.dla_core
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            detail = "; ".join(logger.sink.errors_since(mark)[-3:]) or "no detail from TensorRT"
            raise BundleError(f"TensorRT could not deserialise {self.plan_info.file} ({detail}): "
                              f"{rebuild_hint(self.bundle, self.precision)}")
        self.context = self.engine.create_execution_context()

    def _setup(self, trt) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [self.spec.name] or set(outputs) != {"score", "residual"}:
            raise BundleError(f"plan tensors {inputs} -> {outputs} do not match the bundle's model; "
                              f"{rebuild_hint(self.bundle, self.precision)}")
        self.input_name = inputs[0]
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        h, w, c = self.spec.shape
        shapes = {self.input_name: (self.max_batch, h, w, c), "score": (self.max_batch,),
                  "residual": (self.max_batch, h, w)}
        for name in [self.input_name] + outputs:
            self.buffers.add(name, shapes[name], np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
            if not self.context.set_tensor_address(name, int(self.buffers.device[name])):
                raise BundleError(f"TensorRT refused the address of tensor {name}")
        log.info("TensorRT %s %s plan %s on %s (%s), max batch %d", trt.__version__, self.precision,
                 self.plan_info.file, self.dev.name(), self.dev.compute_capability(), self.max_batch)

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = frames.shape[0]
        b = self.buffers
        with self.dev.activate():
            inp = b.host[self.input_name]
            inp[:n] = frames
            if not self.context.set_input_shape(self.input_name, frames.shape):
                raise BundleError(f"TensorRT rejected input shape {frames.shape}")
            self.dev.to_device(b.device[self.input_name], inp[:n], b.stream)
            if not self.context.execute_async_v3(b.stream.handle):
                raise InferenceError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            self.dev.to_host(b.host["score"][:n], b.device["score"], b.stream)
            self.dev.to_host(b.host["residual"][:n], b.device["residual"], b.stream)
            b.stream.synchronize()
            return b.host["score"][:n].copy(), b.host["residual"][:n].copy()

    @property
    def device(self) -> str:
        dla = f", DLA core {self.plan_info.dla_core}" if self.plan_info.dla_core is not None else ""
        return f"the GPU ({self.plan_info.gpu_name}{dla})"

    def describe(self) -> dict:
        return dict(super().describe(), gpu=self.plan_info.gpu_name, plan=self.plan_info.file,
                    tensorrt=self.plan_info.tensorrt_version, dla_core=self.plan_info.dla_core)

    def close(self) -> None:
        dev = getattr(self, "dev", None)
        if dev is None:
            return
        with dev.activate():  # everything goes while the context is current: nothing leaks
            if self.buffers is not None:
                self.buffers.release()
                self.buffers = None
            for attr in ("context", "engine", "runtime"):  # TensorRT objects, context first
                if hasattr(self, attr):
                    delattr(self, attr)
        self.dev = None
