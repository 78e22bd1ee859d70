"""Every CUDA call the project makes, through pycuda, in one place.

A cuda-python (``cuda.bindings``) variant could replace this module without touching the rest.

Contexts are per thread: ``pycuda.autoinit`` makes one current only in the importing thread, and
inference in a worker thread then fails with "invalid device context". So each device's primary
context is retained once per process (``device()``) and pushed/popped around every piece of work
(``activate``), which works from any thread.

It is never detached, as ``pycuda.autoprimaryctx`` never detaches it: pycuda's ``detach()`` of a
primary context that is not current pushes it without a pop (context.detach in pycuda's
cuda.hpp), and a retain/release per engine would churn the context on every reload. Everything
an engine allocates (pinned host buffers, device buffers, streams) is released inside
``activate()``: pycuda frees pinned memory and destroys streams only while their context lives,
and skips both silently, leaking them, once it is gone.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .errors import EngineError


class CudaUnavailable(EngineError, RuntimeError):
    """No usable CUDA GPU. ``fault`` is True when pycuda is there but the GPU or its driver failed
    (no device, initialisation error): worth retrying later, unlike a missing package."""

    def __init__(self, msg: str, fault: bool = True):
        super().__init__(msg)
        self.fault = fault


_devices: dict[int, "CudaDevice"] = {}
_devices_lock = threading.Lock()


def device(index: int = 0) -> "CudaDevice":
    """The process-wide handle of GPU ``index`` (its primary context retained once)."""
    with _devices_lock:
        dev = _devices.get(index)
        if dev is None or dev.cuda is not _driver():  # a new driver module (tests swap fakes)
            dev = _devices[index] = CudaDevice(index)
        return dev


def _driver():
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise CudaUnavailable("pycuda is not installed (pip install 'ganomaly-edge[tensorrt]' with CUDA on "
                              "PATH; on a Jetson see deploy/JETSON.md)", fault=False) from e
    return cuda


class CudaDevice:
    def __init__(self, index: int = 0):
        cuda = _driver()
        try:
            cuda.init()
            if cuda.Device.count() <= index:
                raise CudaUnavailable(f"no CUDA device {index} (found {cuda.Device.count()})")
            self.device = cuda.Device(index)
            self.context = self.device.retain_primary_context()
        except cuda.Error as e:
            raise CudaUnavailable(f"CUDA initialisation failed: {e}") from e
        self.cuda = cuda
        self.index = index
        self.lock = threading.RLock()
        self.pinned_bytes = 0  # live pinned host memory allocated through this module

    def name(self) -> str:
        return self.device.name()

    def multiprocessors(self) -> int:
        """Streaming multiprocessors: what tells Jetson Orin modules apart (AGX 16, NX/Nano 8 or 4),
        which all report the name "Orin" and compute capability 8.7."""
        return int(self.device.get_attribute(self.cuda.device_attribute.MULTIPROCESSOR_COUNT))

    def compute_capability(self) -> str:
        major, minor = self.device.compute_capability()
        return f"{major}.{minor}"

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Make the primary context current in this thread for the block; one user at a time."""
        with self.lock:
            self.context.push()
            try:
                yield
            finally:
                self.cuda.Context.pop()

    def memory(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""
        with self.activate():
            return self.cuda.mem_get_info()

    def versions(self) -> dict[str, str]:
        def v(n: int) -> str:
            return f"{n // 1000}.{n % 1000 // 10}"

        return {"cuda_driver": v(self.cuda.get_driver_version()), "cuda_pycuda_built_for": ".".join(
            str(x) for x in self.cuda.get_version())}

    # -- resources: create and release inside activate() --------------------------------------
    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        arr = self.cuda.pagelocked_empty(shape, dtype)
        self.pinned_bytes += arr.nbytes
        return arr

    def free_pinned(self, arr: np.ndarray) -> None:
        arr.base.free()  # pycuda's PagelockedHostAllocation
        self.pinned_bytes -= arr.nbytes

    def alloc(self, nbytes: int):
        return self.cuda.mem_alloc(max(int(nbytes), 1))

    def stream(self):
        return self.cuda.Stream()

    def to_device(self, dest, src: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(dest, src, stream)

    def to_host(self, dest: np.ndarray, src, stream) -> None:
        self.cuda.memcpy_dtoh_async(dest, src, stream)


class Buffers:
    """Pinned host and device buffers and one stream, all released together by ``release`` (call it
    inside ``activate()``)."""

    def __init__(self, dev: CudaDevice):
        self.dev = dev
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        self.stream = dev.stream()

    def add(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.host[name] = self.dev.pinned(shape, dtype)
        self.device[name] = self.dev.alloc(self.host[name].nbytes)

    def release(self) -> None:
        for mem in self.device.values():
            mem.free()
        for arr in self.host.values():
            self.dev.free_pinned(arr)
        self.device, self.host = {}, {}
        self.stream = None  # pycuda destroys the stream now, while the context is current


def device_info(index: int = 0) -> dict[str, str]:
    """Name, compute capability and multiprocessor count of a GPU: with the TensorRT version, the
    key of a plan."""
    dev = device(index)
    return {"gpu_name": dev.name(), "compute_capability": dev.compute_capability(),
            "multiprocessors": dev.multiprocessors()}
