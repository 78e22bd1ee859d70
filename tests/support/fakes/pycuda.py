"""A fake ``pycuda`` (2026.1): one GPU, its memory kept in host bytes, contexts per thread.

CUDA calls check that a context is current in the calling thread, as the driver does ("invalid
device context"); what pycuda would skip without a word once a context is gone is recorded in
``leaks``.
"""

from __future__ import annotations

import enum
import itertools
import threading
import types

import numpy as np


class CudaState:
    TOTAL = 8 << 30

    def __init__(self, gpu_name: str, cc: tuple[int, int], dla_cores: int = 0, sms: int = 16):
        self.gpu_name, self.cc, self.dla_cores, self.sms = gpu_name, cc, dla_cores, sms
        self.memory: dict[int, bytearray] = {}
        self.next_ptr = itertools.count(0x7F0000000000, 0x100000)
        self.tls = threading.local()
        self.initialised = False
        self.retained = 0  # references to the primary context (retain_primary_context - release)
        self.freed = 0
        self.pinned_live = 0  # bytes of pinned host memory not yet freed
        self.streams_live = 0
        self.leaks: list[str] = []  # what pycuda would have skipped silently (a real leak)

    def stack(self) -> list:
        if not hasattr(self.tls, "stack"):
            self.tls.stack = []
        return self.tls.stack

    def context_alive(self) -> bool:
        return self.retained > 0

    def device_used(self) -> int:
        return sum(len(b) for b in self.memory.values())


def make_pycuda(gpu_name: str = "NVIDIA Orin", cc: tuple[int, int] = (8, 7), dla_cores: int = 0, sms: int = 16):
    """pycuda 2026.1 (src/cpp/cuda.hpp, src/wrapper/wrap_cudadrv.cpp). Freeing pinned memory or
    destroying a stream once the context is gone is skipped without a word, as pycuda does
    (CUDAPP_CATCH_CLEANUP_ON_DEAD_CONTEXT): the fake records it in ``leaks``."""
    st = CudaState(gpu_name, cc, dla_cores, sms)
    drv = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class MemoryError_(Error):
        pass

    drv.Error, drv.LogicError, drv.MemoryError, drv.LaunchError, drv.RuntimeError = (
        Error, LogicError, MemoryError_, type("LaunchError", (Error,), {}), type("RuntimeError", (Error,), {}))

    def need_context(what: str) -> None:
        if not st.initialised:
            raise LogicError(f"{what} failed: initialization error (cuda.init() not called)")
        if not st.stack():
            raise LogicError(f"{what} failed: invalid device context")

    def init(flags=0):
        st.initialised = True

    class Context:
        def __init__(self):
            self.valid = True
            self.thread = threading.get_ident()

        def push(self):
            if not self.valid:
                raise LogicError("cannot activate dead context")
            st.stack().append(self)

        @staticmethod
        def pop():
            if not st.stack():
                raise LogicError("context::pop failed: cannot pop non-current context")
            st.stack().pop()

        @staticmethod
        def synchronize():
            need_context("cuCtxSynchronize")

        def detach(self):
            if not self.valid:
                raise LogicError("context::detach: cannot detach from invalid context")
            active = bool(st.stack()) and st.stack()[-1] is self
            if not active:
                if self.thread != threading.get_ident():
                    st.leaks.append("context detached from another thread: never released")
                    self.valid = False
                    return
                st.stack().append(self)  # cuCtxPushCurrent, then release: no pop (cuda.hpp)
            st.retained -= 1
            self.valid = False

    class Device:
        def __init__(self, n):
            if not st.initialised:
                raise LogicError("cuDeviceGet failed: initialization error")
            if n != 0:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count():
            if not st.initialised:
                raise LogicError("cuDeviceGetCount failed: initialization error")
            return 1

        def name(self):
            return st.gpu_name

        def compute_capability(self):
            return st.cc

        def get_attribute(self, attr):
            if not isinstance(attr, device_attribute):
                raise TypeError("get_attribute(): argument must be a pycuda.driver.device_attribute")
            return {device_attribute.MULTIPROCESSOR_COUNT: st.sms, device_attribute.COMPUTE_CAPABILITY_MAJOR: st.cc[0],
                    device_attribute.COMPUTE_CAPABILITY_MINOR: st.cc[1]}[attr]

        def total_memory(self):
            return st.TOTAL

        def retain_primary_context(self):
            st.retained += 1
            return Context()

    device_attribute = enum.IntEnum("device_attribute", {"MULTIPROCESSOR_COUNT": 16, "COMPUTE_CAPABILITY_MAJOR": 75,
                                                         "COMPUTE_CAPABILITY_MINOR": 76})

    class DeviceAllocation:
        def __init__(self, ptr, nbytes):
            self.ptr, self.nbytes = ptr, nbytes

        def __int__(self):
            return self.ptr

        def __index__(self):
            return self.ptr

        def free(self):
            need_context("cuMemFree")
            st.memory.pop(self.ptr, None)
            st.freed += 1

    def mem_alloc(nbytes):
        need_context("cuMemAlloc")
        ptr = next(st.next_ptr)
        st.memory[ptr] = bytearray(int(nbytes))
        return DeviceAllocation(ptr, int(nbytes))

    class PagelockedHostAllocation(bytearray):
        """The ``.base`` of a pinned array; ``free()`` needs the context that allocated it alive."""

        valid = True

        def free(self):
            if not self.valid:
                raise LogicError("pagelocked_host_allocation::free: invalid handle")
            self.valid = False
            if not st.context_alive():
                st.leaks.append(f"pinned host buffer of {len(self)} bytes freed after its context was "
                                "detached: cuMemFreeHost skipped")
                return
            st.pinned_live -= len(self)

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        need_context("cuMemHostAlloc")
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        alloc = PagelockedHostAllocation(max(nbytes, 1))
        st.pinned_live += len(alloc)
        return np.ndarray(shape, dtype, buffer=alloc)

    class Stream:
        def __init__(self, flags=0):
            need_context("cuStreamCreate")
            self.handle = next(st.next_ptr)
            st.streams_live += 1

        def synchronize(self):
            need_context("cuStreamSynchronize")

        def __del__(self):
            if st.context_alive():
                st.streams_live -= 1
            else:
                st.leaks.append("stream destroyed after its context was detached: cuStreamDestroy skipped")

    def _check_stream(stream):
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError("stream must be a pycuda Stream or None")  # Boost.Python ArgumentError

    def memcpy_htod_async(dest, src, stream=None):
        need_context("cuMemcpyHtoDAsync")
        _check_stream(stream)
        buf = st.memory[int(dest)]
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        if data.size > len(buf):
            raise LogicError("cuMemcpyHtoDAsync failed: invalid argument (copy larger than allocation)")
        buf[: data.size] = data.tobytes()

    def memcpy_dtoh_async(dest, src, stream=None):
        need_context("cuMemcpyDtoHAsync")
        _check_stream(stream)
        buf = st.memory[int(src)]
        view = dest.view(np.uint8).reshape(-1)
        view[:] = np.frombuffer(bytes(buf[: view.size]), np.uint8)

    def mem_get_info():
        need_context("cuMemGetInfo")
        return (st.TOTAL - (1 << 30) - st.device_used(), st.TOTAL)

    for name, obj in dict(init=init, Context=Context, Device=Device, mem_alloc=mem_alloc,
                          pagelocked_empty=pagelocked_empty, device_attribute=device_attribute, Stream=Stream, memcpy_htod_async=memcpy_htod_async,
                          memcpy_dtoh_async=memcpy_dtoh_async, mem_get_info=mem_get_info,
                          DeviceAllocation=DeviceAllocation, get_driver_version=lambda: 12060,
                          get_version=lambda: (12, 6, 0)).items():
        setattr(drv, name, obj)
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    pkg.VERSION = (2026, 1)
    pkg._state = st
    return pkg, drv
