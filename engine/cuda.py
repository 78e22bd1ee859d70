"""Every CUDA call the project makes, through pycuda, in one place.

A cuda-python (``cuda.bindings``) variant could replace this module without touching the rest.
Contexts are per thread: ``pycuda.autoinit`` would make one current only in the importing
thread, and inference in a worker thread would then fail with "invalid device context". So the
device's primary context is retained once and pushed/popped around every piece of work
(``activate``), which works from any thread, and is detached on close.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np


class CudaUnavailable(RuntimeError):
    pass


class CudaDevice:
    def __init__(self, index: int = 0):
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise CudaUnavailable("pycuda is not installed (pip install 'ganomaly-edge[tensorrt]'; on a "
                                  "Jetson see deploy/JETSON.md)") from e
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

    def name(self) -> str:
        return self.device.name()

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

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def alloc(self, nbytes: int):
        return self.cuda.mem_alloc(max(int(nbytes), 1))

    def stream(self):
        return self.cuda.Stream()

    def to_device(self, dest, src: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(dest, src, stream)

    def to_host(self, dest: np.ndarray, src, stream) -> None:
        self.cuda.memcpy_dtoh_async(dest, src, stream)

    def close(self) -> None:
        try:
            self.context.detach()
        except self.cuda.Error:
            pass


def device_info(index: int = 0) -> dict[str, str]:
    """Name and compute capability of a GPU, for keying plans."""
    dev = CudaDevice(index)
    try:
        return {"gpu_name": dev.name(), "compute_capability": dev.compute_capability()}
    finally:
        dev.close()
