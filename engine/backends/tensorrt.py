"""TensorRT backend (TensorRT 10.x and 11.x Python API, pycuda for memory and streams).

Pinned host buffers and device buffers are sized once from the optimisation profile's maximum
batch; each ``infer`` copies in, runs ``execute_async_v3`` on one stream and copies out. All
CUDA work happens inside ``CudaDevice.activate()``, so any thread may call ``infer``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..base import Engine
from ..bundle import Bundle, BundleError
from ..meta import PlanMeta

log = logging.getLogger(__name__)


def rebuild_hint(bundle: Bundle, precision: str = "fp32") -> str:
    return (f"rebuild on this device with: ganomaly-build-engine {bundle.path} --out {bundle.path} "
            f"--precision {precision}")


def plan_mismatch(plan: PlanMeta, trt_version: str, gpu_name: str) -> str | None:
    """Why ``plan`` cannot run here, or None. A plan is valid only for the GPU model and the
    TensorRT version that built it."""
    if plan.tensorrt_version != trt_version:
        return (f"plan {plan.file} was built with TensorRT {plan.tensorrt_version}, "
                f"this device has TensorRT {trt_version}")
    if plan.gpu_name != gpu_name:
        return f"plan {plan.file} was built for {plan.gpu_name}, this device is {gpu_name}"
    return None


class TrtLogger:
    """Routes TensorRT's messages to Python logging."""

    @staticmethod
    def make(trt):
        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR):
                    self.errors.append(str(msg))
                    log.error("TensorRT: %s", msg)
                elif severity == trt.Logger.WARNING:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        return _Logger()


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, bundle: Bundle, plan: PlanMeta, device_index: int = 0):
        super().__init__(bundle)
        import tensorrt as trt

        from ..cuda import CudaDevice

        self.precision = plan.precision
        self.plan_info = plan
        self.dev = CudaDevice(device_index)
        self._buffers: list[Any] = []
        try:
            why = plan_mismatch(plan, trt.__version__, self.dev.name())
            if why:
                raise BundleError(f"{why}: {rebuild_hint(bundle, self.precision)}")
            bundle.verify_file(plan.file, plan.sha256)
            with open(bundle.file(plan.file), "rb") as f:
                data = f.read()
            self.logger = TrtLogger.make(trt)
            with self.dev.activate():
                self.runtime = trt.Runtime(self.logger)
                self.engine = self.runtime.deserialize_cuda_engine(data)
                if self.engine is None:
                    detail = "; ".join(self.logger.errors[-3:]) or "no detail from TensorRT"
                    raise BundleError(f"TensorRT could not deserialise {plan.file} ({detail}): "
                                      f"{rebuild_hint(bundle, self.precision)}")
                self.context = self.engine.create_execution_context()
                self._setup(trt)
        except BaseException:
            self.close()
            raise

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
        self.stream = self.dev.stream()
        self.host: dict[str, np.ndarray] = {}
        self.device_mem: dict[str, Any] = {}
        for name in [self.input_name] + outputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = {self.input_name: (self.max_batch, h, w, c), "score": (self.max_batch,),
                     "residual": (self.max_batch, h, w)}[name]
            self.host[name] = self.dev.pinned(shape, dtype)
            self.device_mem[name] = self.dev.alloc(self.host[name].nbytes)
            self._buffers.append(self.device_mem[name])
            if not self.context.set_tensor_address(name, int(self.device_mem[name])):
                raise BundleError(f"TensorRT refused the address of tensor {name}")
        log.info("TensorRT %s plan %s on %s (%s), max batch %d", self.precision, self.plan_info.file,
                 self.dev.name(), self.dev.compute_capability(), self.max_batch)

    def _run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = frames.shape[0]
        with self.dev.activate():
            inp = self.host[self.input_name]
            inp[:n] = frames
            if not self.context.set_input_shape(self.input_name, frames.shape):
                raise BundleError(f"TensorRT rejected input shape {frames.shape}")
            self.dev.to_device(self.device_mem[self.input_name], inp[:n], self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            self.dev.to_host(self.host["score"][:n], self.device_mem["score"], self.stream)
            self.dev.to_host(self.host["residual"][:n], self.device_mem["residual"], self.stream)
            self.stream.synchronize()
            return self.host["score"][:n].copy(), self.host["residual"][:n].copy()

    def describe(self) -> dict:
        return dict(super().describe(), gpu=self.dev.name(), plan=self.plan_info.file,
                    tensorrt=self.plan_info.tensorrt_version)

    def close(self) -> None:
        dev = getattr(self, "dev", None)
        if dev is None:
            return
        try:
            with dev.activate():
                for b in self._buffers:
                    b.free()
                self._buffers = []
                # Drop TensorRT objects while the context is current, context first.
                for attr in ("context", "engine", "runtime"):
                    if hasattr(self, attr):
                        delattr(self, attr)
        finally:
            dev.close()
            self.dev = None
