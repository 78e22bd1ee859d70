"""Faithful fakes of the ``tensorrt`` (10.3, 10.13+, 11.x) and ``pycuda`` Python APIs.

Built from shared/TENSORRT_API.md: a member the real API of a version lacks is absent here
(AttributeError), signatures take the same arguments, and failures return None where the real
bindings do. The fake builder serialises the parsed ONNX graph with the build's settings; the
fake runtime executes it with ONNX Runtime on the bytes in fake device memory, so parity checks
compare real numbers. CUDA calls check that a context is current in the calling thread, as the
driver does ("invalid device context").
"""

from __future__ import annotations

import enum
import itertools
import json
import threading
import types

import numpy as np

# --------------------------------------------------------------------------------------------
# pycuda
# --------------------------------------------------------------------------------------------


class _CudaState:
    def __init__(self, gpu_name: str, cc: tuple[int, int]):
        self.gpu_name, self.cc = gpu_name, cc
        self.memory: dict[int, bytearray] = {}
        self.next_ptr = itertools.count(0x7F0000000000, 0x100000)
        self.tls = threading.local()
        self.initialised = False
        self.retained = 0
        self.freed = 0

    def stack(self) -> list:
        if not hasattr(self.tls, "stack"):
            self.tls.stack = []
        return self.tls.stack


def make_pycuda(gpu_name: str = "NVIDIA Orin", cc: tuple[int, int] = (8, 7)):
    st = _CudaState(gpu_name, cc)
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
            self.detached = False

        def push(self):
            if self.detached:
                raise LogicError("context was detached")
            st.stack().append(self)

        @staticmethod
        def pop():
            if not st.stack():
                raise LogicError("cuCtxPopCurrent failed: invalid device context")
            st.stack().pop()

        @staticmethod
        def synchronize():
            need_context("cuCtxSynchronize")

        def detach(self):
            self.detached = True
            st.retained -= 1

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

        def total_memory(self):
            return 8 << 30

        def retain_primary_context(self):
            st.retained += 1
            return Context()

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

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        need_context("cuMemHostAlloc")
        return np.empty(shape, dtype)

    class Stream:
        def __init__(self, flags=0):
            need_context("cuStreamCreate")
            self.handle = next(st.next_ptr)

        def synchronize(self):
            need_context("cuStreamSynchronize")

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
        return (6 << 30, 8 << 30)

    for name, obj in dict(init=init, Context=Context, Device=Device, mem_alloc=mem_alloc,
                          pagelocked_empty=pagelocked_empty, Stream=Stream, memcpy_htod_async=memcpy_htod_async,
                          memcpy_dtoh_async=memcpy_dtoh_async, mem_get_info=mem_get_info,
                          DeviceAllocation=DeviceAllocation).items():
        setattr(drv, name, obj)
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    pkg._state = st
    return pkg, drv


# --------------------------------------------------------------------------------------------
# tensorrt
# --------------------------------------------------------------------------------------------

PLAN_MAGIC = b"FAKETRTPLAN1\n"
VERSIONS = {"10.3": "10.3.0", "10.13": "10.13.3.9", "11": "11.1.0.7"}


def make_tensorrt(series: str, cuda_state: _CudaState):
    """A fake ``tensorrt`` module of one API series: "10.3", "10.13" or "11"."""
    v11 = series == "11"
    v1013 = series in ("10.13", "11")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSIONS[series]
    trt.calls = []  # what the code under test did, for assertions

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        UINT8 = 5
        FP8 = 6
        BF16 = 7
        INT64 = 8
        INT4 = 9

    trt.DataType = DataType
    trt.float32, trt.float16, trt.uint8 = DataType.FLOAT, DataType.HALF, DataType.UINT8

    def nptype(dt):
        table = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                 DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
                 DataType.UINT8: np.uint8}
        if dt not in table:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. {dt}")
        return table[dt]

    trt.nptype = nptype
    trt.volume = lambda it: int(np.prod(list(it))) if len(list(it)) else 1

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    _sev = Severity

    class ILogger:
        Severity = _sev

        def __init__(self):
            pass

        def log(self, severity, msg):
            pass

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity.INTERNAL_ERROR, Severity.ERROR,
                                                          Severity.WARNING, Severity.INFO, Severity.VERBOSE)

        def __init__(self, min_severity=Severity.WARNING):
            self.min_severity = min_severity

    for s in Severity:
        setattr(ILogger, s.name, s)
    trt.ILogger, trt.Logger = ILogger, Logger

    def require_context(what):
        if not cuda_state.stack():
            raise RuntimeError(f"[TRT] {what}: CUDA error 201 invalid device context")

    # Builder flags per series (TENSORRT_API.md).
    flags = ["TF32", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS",
             "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS", "STRIP_PLAN",
             "WEIGHT_STREAMING"]
    if not v11:
        flags += ["FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS",
                  "PREFER_PRECISION_CONSTRAINTS"]
        if v1013:
            flags += ["FP4"]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {f: i for i, f in enumerate(flags)})
    ndf = {"STRONGLY_TYPED": 0 if v11 else 1}
    if not v11:
        ndf["EXPLICIT_BATCH"] = 0
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ndf)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.ExecutionContextAllocationStrategy = enum.IntEnum("ExecutionContextAllocationStrategy",
                                                          {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2})
    hcl = {"NONE": 0, "AMPERE_PLUS": 1}
    if v1013:
        hcl["SAME_COMPUTE_CAPABILITY"] = 2
    trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", hcl)

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags = flags
            self.onnx: bytes | None = None
            self.inputs: list[tuple[str, tuple, int]] = []

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            mn, op, mx = tuple(min), tuple(opt), tuple(max)
            if not (len(mn) == len(op) == len(mx)) or any(a > b or b > c for a, b, c in zip(mn, op, mx)):
                raise RuntimeError("IOptimizationProfile::setDimensions: inconsistent dimensions")
            self.shapes[name] = (mn, op, mx)

    class ITimingCache:
        def __init__(self, data: bytes):
            self.data = bytearray(data or b"")

        def serialize(self):
            return memoryview(bytes(self.data) + b"[timing:" + cuda_state.gpu_name.encode() + b"]")

    class IBuilderConfig:
        def __init__(self):
            self._flags = set()
            self.pools = {}
            self.profiles = []
            self.timing_cache = None
            self.builder_optimization_level = 3
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError("set_flag(): incompatible function arguments")
            trt.calls.append(("set_flag", flag.name))
            self._flags.add(flag)

        def clear_flag(self, flag):
            self._flags.discard(flag)

        def get_flag(self, flag):
            return flag in self._flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, buffer):
            return ITimingCache(bytes(buffer))

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("set_timing_cache", len(cache.data)))
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    if not v11:
        IBuilderConfig.int8_calibrator = None
        IBuilderConfig.quantization_flags = 0
        IBuilderConfig.set_calibration_profile = lambda self, p: None

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            require_context("createNetwork")
            trt.calls.append(("create_network", flags))
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            require_context("buildSerializedNetwork")
            if network.onnx is None:
                self.logger.log(Severity.ERROR, "Network must have at least one output")
                return None
            for name, shape, dt in network.inputs:
                if -1 in shape:
                    prof = [p.shapes.get(name) for p in config.profiles]
                    if not prof or prof[0] is None:
                        self.logger.log(Severity.ERROR, f"Network has dynamic input {name} but no optimization profile")
                        return None
            import onnx
            from onnx import TensorProto

            model = onnx.load_from_string(network.onnx)
            half_weights = any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
            fp16_flag = any(f.name == "FP16" for f in config._flags)
            precision = "fp16" if (half_weights or fp16_flag) else "fp32"
            if config.timing_cache is not None:
                config.timing_cache.data += b"+"
            header = {"trt": trt.__version__, "gpu": cuda_state.gpu_name, "precision": precision,
                      "profiles": {k: v for k, v in config.profiles[0].shapes.items()} if config.profiles else {}}
            return _HostMemory(PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx)

    if not v11:
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_fast_int8 = property(lambda self: True)
        Builder.platform_has_tf32 = property(lambda self: True)

    class _HostMemory:
        def __init__(self, data):
            self._data = data
            self.nbytes = len(data)

        def __buffer__(self, flags):
            return memoryview(self._data)

        def __bytes__(self):
            return self._data

    class ParserError:
        def __init__(self, desc):
            self._desc = desc

        def desc(self):
            return self._desc

        def code(self):
            return 1

        def node(self):
            return -1

        def node_name(self):
            return ""

        def node_operator(self):
            return ""

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse(self, model, path=None):
            import onnx

            try:
                m = onnx.load_from_string(bytes(model))
                onnx.checker.check_model(m)
            except Exception as e:  # the real parser reports, never raises
                self.errors.append(ParserError(f"ModelImporter: failed to parse ONNX: {e}"))
                return False
            self.network.onnx = bytes(model)
            for i in m.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in i.type.tensor_type.shape.dim)
                self.network.inputs.append((i.name, dims, i.type.tensor_type.elem_type))
            return True

        def parse_from_file(self, path):
            with open(path, "rb") as f:
                return self.parse(f.read(), path)

        def supports_model_v2(self, model, path=None):
            return True

    if not v11:
        OnnxParser.supports_model = lambda self, model, path=None: (True, [])

    _ONNX_TO_TRT = {1: DataType.FLOAT, 10: DataType.HALF, 2: DataType.UINT8, 7: DataType.INT64}

    class ICudaEngine:
        def __init__(self, header, onnx_bytes):
            import onnx
            import onnxruntime as ort

            self.header, self.onnx_bytes = header, onnx_bytes
            m = onnx.load_from_string(onnx_bytes)
            self.io = []
            for i in m.graph.input:
                self.io.append((i.name, trt.TensorIOMode.INPUT, _ONNX_TO_TRT[i.type.tensor_type.elem_type],
                                tuple(d.dim_value if d.dim_value else -1 for d in i.type.tensor_type.shape.dim)))
            for o in m.graph.output:
                self.io.append((o.name, trt.TensorIOMode.OUTPUT, _ONNX_TO_TRT[o.type.tensor_type.elem_type],
                                tuple(d.dim_value if d.dim_value else -1 for d in o.type.tensor_type.shape.dim)))
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

        num_io_tensors = property(lambda self: len(self.io))
        num_optimization_profiles = property(lambda self: 1)
        device_memory_size_v2 = property(lambda self: 1 << 20)

        def _find(self, name):
            for e in self.io:
                if e[0] == name:
                    return e
            raise KeyError(name)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return self._find(name)[1]

        def get_tensor_dtype(self, name):
            return self._find(name)[2]

        def get_tensor_shape(self, name):
            return self._find(name)[3]

        def get_tensor_profile_shape(self, name, profile_index):
            if self._find(name)[1] != trt.TensorIOMode.INPUT:
                raise RuntimeError("get_tensor_profile_shape: not an input")
            mn, op, mx = self.header["profiles"][name]
            return [tuple(mn), tuple(op), tuple(mx)]

        def create_execution_context(self, strategy=None):
            require_context("createExecutionContext")
            return IExecutionContext(self)

        def serialize(self):
            return _HostMemory(PLAN_MAGIC + json.dumps(self.header).encode() + b"\n" + self.onnx_bytes)

    if not v11:
        ICudaEngine.device_memory_size = property(lambda self: 1 << 20)
        ICudaEngine.has_implicit_batch_dimension = property(lambda self: False)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self.shapes = {}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            mn, _, mx = self.engine.header["profiles"][name]
            shape = tuple(shape)
            if len(shape) != len(mn) or any(s < a or s > b for s, a, b in zip(shape, mn, mx)):
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            return self.shapes.get(name, self.engine.get_tensor_shape(name))

        def set_tensor_address(self, name, ptr):
            if not isinstance(ptr, int):
                raise TypeError("set_tensor_address(): incompatible function arguments")
            self.engine._find(name)
            self.addresses[name] = ptr
            return True

        def get_tensor_address(self, name):
            return self.addresses.get(name, 0)

        def infer_shapes(self):
            return []

        all_binding_shapes_specified = property(lambda self: True)

        def execute_async_v3(self, stream_handle):
            if not isinstance(stream_handle, int):
                raise TypeError("execute_async_v3(): incompatible function arguments: stream_handle must be int")
            require_context("enqueueV3")
            inp = [e for e in self.engine.io if e[1] == trt.TensorIOMode.INPUT][0]
            name, _, dt, _ = inp
            shape = self.shapes[name]
            nbytes = int(np.prod(shape)) * np.dtype(nptype(dt)).itemsize
            x = np.frombuffer(bytes(cuda_state.memory[self.addresses[name]][:nbytes]), nptype(dt)).reshape(shape)
            outs = self.engine.session.run(None, {name: x})
            if self.engine.header["precision"] == "fp16":  # what the half-precision kernels would round to
                outs = [o.astype(np.float16).astype(o.dtype) for o in outs]
            for (oname, _, odt, _), val in zip([e for e in self.engine.io if e[1] == trt.TensorIOMode.OUTPUT], outs):
                data = np.ascontiguousarray(val.astype(nptype(odt))).view(np.uint8).reshape(-1)
                cuda_state.memory[self.addresses[oname]][: data.size] = data.tobytes()
            return True

        def execute_v2(self, bindings):
            return True

    if not v11:
        IExecutionContext.all_shape_inputs_specified = property(lambda self: True)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, buffer):
            require_context("deserializeCudaEngine")
            data = bytes(buffer)
            if not data.startswith(PLAN_MAGIC):
                self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
                return None
            head, _, onnx_bytes = data[len(PLAN_MAGIC):].partition(b"\n")
            try:
                header = json.loads(head)
            except ValueError:
                self.logger.log(Severity.ERROR, "Serialization: corrupt plan header")
                return None
            if header["trt"] != trt.__version__:
                self.logger.log(Severity.ERROR, f"Serialization: The engine plan file is not compatible with this "
                                f"version of TensorRT, expecting library version {trt.__version__} got {header['trt']}")
                return None
            if header["gpu"] != cuda_state.gpu_name:
                self.logger.log(Severity.ERROR, "The engine plan file is generated on an incompatible device")
                return None
            try:
                return ICudaEngine(header, onnx_bytes)
            except Exception as e:  # truncated graph
                self.logger.log(Severity.ERROR, f"Serialization: corrupt plan ({e})")
                return None

    trt.Builder, trt.Runtime, trt.OnnxParser, trt.IBuilderConfig = Builder, Runtime, OnnxParser, IBuilderConfig
    trt.ICudaEngine, trt.IExecutionContext, trt.IOptimizationProfile = ICudaEngine, IExecutionContext, IOptimizationProfile
    trt.INetworkDefinition, trt.ITimingCache, trt.ParserError = INetworkDefinition, ITimingCache, ParserError
    return trt


def install(monkeypatch, series: str, gpu_name: str = "NVIDIA Orin", cc=(8, 7)):
    """Put fake ``tensorrt`` and ``pycuda`` modules of one series into sys.modules."""
    import sys

    pkg, drv = make_pycuda(gpu_name, cc)
    trt = make_tensorrt(series, pkg._state)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, pkg._state
