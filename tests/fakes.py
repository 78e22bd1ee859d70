"""Faithful fakes of the ``tensorrt`` (8.6, 10.3, 10.13+, 11.x) and ``pycuda`` Python APIs.

Built from NVIDIA's TensorRT Python API references per version and, for 8.6, NVIDIA's release/8.6 bindings (pyCore.cpp, pyGraph.cpp,
pyOnnx.cpp): a member the real API of a version lacks is absent here
(AttributeError), signatures take the same arguments, and failures return None where the real
bindings do. The fake ONNX parser applies its own reading of onnx-tensorrt's operator matrix (not
engine/trt_compat.py) and names and splits layers as onnx-tensorrt does (weights as constant
layers named after them, unnamed helpers). The fake builder serialises the parsed ONNX graph with the build's settings; the
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
    st = _CudaState(gpu_name, cc, dla_cores, sms)
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


# --------------------------------------------------------------------------------------------
# tensorrt
# --------------------------------------------------------------------------------------------

PLAN_MAGIC = b"FAKETRTPLAN1\n"
CACHE_MAGIC = b"FAKETIMINGCACHE1\n"
VERSIONS = {"8.6": "8.6.2.3", "10.3": "10.3.0", "10.13": "10.13.3.9", "11": "11.1.0.7"}
SERIES = list(VERSIONS)


def _round_half(onnx_bytes: bytes, keep: set[str]) -> bytes:
    """The graph with every float node output rounded to float16 (Cast there and back), except the
    outputs of nodes in ``keep``: what half-precision kernels store between layers."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_bytes))
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.value_info) + list(m.graph.output)}
    nodes = []
    for node in m.graph.node:
        nodes.append(node)
        if node.name in keep or node.op_type in ("Constant", "Shape"):
            continue
        for j, out in enumerate(node.output):
            if elem.get(out) != TensorProto.FLOAT:
                continue
            raw = out + "__unrounded"
            node.output[j] = raw
            nodes.append(helper.make_node("Cast", [raw], [raw + "__h"], to=TensorProto.FLOAT16))
            nodes.append(helper.make_node("Cast", [raw + "__h"], [out], to=TensorProto.FLOAT))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]
    return m.SerializeToString()


# -- the fake parser's own rules --------------------------------------------------------------
# Read from onnx-tensorrt's docs/operators.md on its 8.6-GA branch (TensorRT 8.6) and 10.1-GA branch
# (taken for 10.3, 10.13 and 11: the newest matrix stored), and from TensorRT's type rules. Kept
# apart from engine/trt_compat.py on purpose: the project's pre-build check and this fake are two
# readings of the same sources, and a rule one of them misses shows up as a disagreement.
# op: (types on 8.6, types on 10.x); "F" = FP32 FP16, "I" = INT32, "L" = INT64, "B" = BOOL,
# "8" = INT8, "U" = UINT8, "H" = BF16.
_OPERATORS = {
    "Abs": ("FI", "FHIL"), "Add": ("FI", "FHIL"), "And": ("B", "B"), "AveragePool": ("F8I", "FH"),
    "BatchNormalization": ("F", "FH"), "Cast": ("FI8UB", "FHILUB"), "Ceil": ("F", "FH"), "Clip": ("F8", "FH"),
    "Concat": ("FI8B", "FHILB"), "Constant": ("FI8B", "FHILB"), "Conv": ("F8", "FH"), "ConvTranspose": ("F8", "FH"),
    "Div": ("FI", "FHIL"), "Equal": ("FI", "FHIL"), "Erf": ("F", "FH"), "Exp": ("F", "FH"),
    "Expand": ("FIB", "FHILB"), "Flatten": ("FIB", "FHILB"), "Floor": ("F", "FH"), "Gather": ("F8IB", "FHILB"),
    "Gemm": ("F8", "FH"), "GlobalAveragePool": ("F8", "FH"), "Greater": ("FI", "FHIL"),
    "Identity": ("FI8B", "FHILB"), "LeakyRelu": ("F8", "FH"), "Less": ("FI", "FHIL"), "Log": ("F", "FH"),
    "MatMul": ("F", "FH"), "Max": ("FI", "FHIL"), "MaxPool": ("F8", "FH"), "Mean": ("FI", "FHIL"),
    "Min": ("FI", "FHIL"), "Mul": ("FI", "FHIL"), "Neg": ("FI", "FHIL"), "Not": ("B", "B"), "Pad": ("F8I", "FHIL"),
    "Pow": ("F", "FH"), "Reciprocal": ("F", "FH"), "ReduceL2": ("F", "FHIL"), "ReduceMax": ("F", "FHIL"),
    "ReduceMean": ("F", "FHIL"), "ReduceMin": ("F", "FHIL"), "ReduceSum": ("F", "FHIL"), "Relu": ("F8", "FHIL"),
    "Reshape": ("FI8B", "FHILB"), "Resize": ("F", "FH"), "Shape": ("FI8B", "FHILB"), "Sigmoid": ("F8", "FH"),
    "Slice": ("FI8B", "FHILB"), "Softmax": ("F", "FH"), "Sqrt": ("F", "FH"), "Squeeze": ("FI8B", "FHILB"),
    "Sub": ("FI", "FHIL"), "Sum": ("FI", "FHIL"), "Tanh": ("F8", "FH"), "Tile": ("FIB", "FHILB"),
    "TopK": ("FI", "FHIL"), "Transpose": ("FI8B", "FHILB"), "Unsqueeze": ("FI8B", "FHILB"), "Where": ("FIB", "FHILB"),
    # INT8 (explicit quantization, issue 34): operators.md 8.6-GA and 10.1-GA, "`y_zero_point` must be 0",
    # "`x_zero_point` must be zero" (checked in parser_rules).
    "QuantizeLinear": ("F", "FH"), "DequantizeLinear": ("8", "8"),
}
_LETTERS = {"F": (1, 10), "I": (6,), "L": (7,), "B": (9,), "8": (3,), "U": (2,), "H": (16,)}
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Equal", "Greater", "Less", "And"}
_ONNX_TYPE_NAMES = {1: "FLOAT", 10: "FLOAT16", 16: "BFLOAT16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
                    11: "DOUBLE"}
_OPSET_RANGE = {"8.6": (7, 17), "10.3": (9, 20), "10.13": (9, 20), "11": (9, 20)}  # onnx-tensorrt README per branch


def parser_rules(m, series: str, strongly_typed: bool) -> list[str]:
    """What the ONNX parser of ``series`` refuses in the shape-inferred model ``m``."""
    from onnx import helper, numpy_helper

    col = 0 if series == "8.6" else 1
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in
            list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    const_values = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            t = next(a.t for a in n.attribute if a.name == "value")
            const_values[n.output[0]] = numpy_helper.to_array(t)
            elem[n.output[0]] = t.data_type
    for i in m.graph.initializer:
        elem[i.name] = i.data_type
    if series == "8.6":  # the 8.x parser imports INT64 as INT32 and DOUBLE as FLOAT
        elem = {k: {7: 6, 11: 1}.get(v, v) for k, v in elem.items()}
    lo, hi = _OPSET_RANGE[series]
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    errors = [] if lo <= opset <= hi else [f"ModelImporter: unsupported opset {opset} (this parser: {lo} to {hi})"]
    for n in m.graph.node:
        where = f"{n.name or n.output[0]} [{n.op_type}]"
        if n.op_type not in _OPERATORS:
            errors.append(f"{where}: No importer registered for op: {n.op_type}; plugin not found")
            continue
        allowed = {t for letter in _OPERATORS[n.op_type][col] for t in _LETTERS[letter]}
        first = n.output[0] if n.op_type == "Constant" else next((x for x in n.input if x), n.output[0])
        if elem.get(first) not in allowed:
            errors.append(f"{where}: unsupported data type {_ONNX_TYPE_NAMES.get(elem.get(first), elem.get(first))} "
                          f"for {n.op_type}")
        ins = [x for x in n.input if x]
        if n.op_type not in ("Cast", "Identity") and any(elem.get(x) == 2 for x in ins):
            errors.append(f"{where}: UINT8 tensor {next(x for x in ins if elem.get(x) == 2)} may only be the input "
                          "of a Cast layer")
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Cast" and 2 in (elem.get(ins[0]), attrs.get("to")) and \
                not {elem.get(ins[0]), attrs.get("to")} - {2} <= {1, 10}:
            errors.append(f"{where}: UINT8 can only be cast to or from FLOAT or HALF")
        constant_axes = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1}
        if series != "8.6":
            constant_axes.update({"ReduceSum": 1, "ReduceMean": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceL2": 1,
                                  "Pad": 3})
        k = constant_axes.get(n.op_type)
        if k is not None and len(n.input) > k and n.input[k] and n.input[k] not in const_values:
            errors.append(f"{where}: axes must be an initializer")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(ins) > 2:
            zp = const_values.get(ins[2])
            if zp is None or zp.any():
                errors.append(f"{where}: zero point must be a constant 0 (TensorRT supports symmetric quantization only)")
        if n.op_type == "TopK" and series != "8.6":
            if attrs.get("sorted", 1) != 1:
                errors.append(f"{where}: sorted must be 1")
            kval = const_values.get(n.input[1]) if len(n.input) > 1 else None
            if kval is not None and int(kval.reshape(-1)[0]) >= 3840:
                errors.append(f"{where}: K must be less than 3840")
        if strongly_typed and n.op_type != "Cast":
            floats = {elem.get(x) for x in ins} & {1, 10, 16}
            if len(floats) > 1:
                errors.append(f"{where}: a strongly typed network does not convert types implicitly: inputs of "
                              "different float types")
    return errors


def _has_qdq(onnx_bytes: bytes) -> bool:
    """Whether a parsed graph holds Q/DQ nodes (an explicitly quantised network; issue 34)."""
    import onnx

    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for n in onnx.load_from_string(onnx_bytes).graph.node)


def make_tensorrt(series: str, cuda_state: _CudaState):
    """A fake ``tensorrt`` module of one API series: "8.6", "10.3", "10.13" or "11"."""
    v86 = series == "8.6"
    v11 = series == "11"
    v1013 = series in ("10.13", "11")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSIONS[series]
    trt.calls = []  # what the code under test did, for assertions
    trt.loggers = []  # every ILogger handed to a Builder or Runtime
    trt.networks = []  # every network created, for assertions on what the builder was given

    names = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"] + ([] if v86 else ["BF16", "INT64", "INT4"])
    DataType = enum.IntEnum("DataType", {n: i for i, n in enumerate(names)})
    trt.DataType = DataType
    trt.float32, trt.float16, trt.uint8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.UINT8, DataType.INT32

    def nptype(dt):
        table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                 "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}
        if dt.name not in table:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. {dt}")
        return table[dt.name]

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

    for sv in Severity:
        setattr(ILogger, sv.name, sv)
    trt.ILogger, trt.Logger = ILogger, Logger

    def use_logger(logger):
        """TensorRT keeps one logger per process: the first one it was given gets every message."""
        trt.loggers.append(logger)

    def emit(severity, msg):
        if trt.loggers:
            trt.loggers[0].log(severity, msg)

    def require_context(what):
        if not cuda_state.stack():
            raise RuntimeError(f"[TRT] {what}: CUDA error 201 invalid device context")

    if v86:  # release/8.6 python/src/infer/pyCore.cpp
        flags = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "STRICT_TYPES", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
                 "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                 "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "ENABLE_TACTIC_HEURISTIC", "VERSION_COMPATIBLE",
                 "EXCLUDE_LEAN_RUNTIME", "FP8"]
    else:
        flags = ["TF32", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS",
                 "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS", "STRIP_PLAN",
                 "WEIGHT_STREAMING"]
        if not v11:
            flags += ["FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS",
                      "PREFER_PRECISION_CONSTRAINTS"] + (["FP4"] if v1013 else [])
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {f: i for i, f in enumerate(flags)})
    if v86:
        ndf = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
    elif v11:
        ndf = {"STRONGLY_TYPED": 0}
    else:
        ndf = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ndf)
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.ExecutionContextAllocationStrategy = enum.IntEnum("ExecutionContextAllocationStrategy",
                                                          {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2})
    hcl = {"NONE": 0, "AMPERE_PLUS": 1}
    if v1013:
        hcl["SAME_COMPUTE_CAPABILITY"] = 2
    trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", hcl)

    class ITensor:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype

    class ILayer:
        """A layer as the ONNX parser makes it: ``node`` is the ONNX node it imports (None for the
        constant layers of weights and for helper layers), ``weights`` the initializer a constant
        layer holds."""

        def __init__(self, name, inputs, outputs, network, node=None, weights=None):
            self.name, self._inputs, self._outputs = name, inputs, outputs
            self.network, self.node, self.weights = network, node, weights
            self._precision = None

        num_outputs = property(lambda self: len(self._outputs))
        num_inputs = property(lambda self: len(self._inputs))

        def get_output(self, i):
            return self._outputs[i]

        def get_input(self, i):
            return self._inputs[i]

    if not v11:  # precision controls: gone in 11 (release/11.1 pyGraph.cpp)
        def _refused(layer, what):
            """10.x: a strongly typed network takes its types from the graph; setting a layer's
            precision or output type is an API usage error and the build fails."""
            emit(Severity.ERROR, f"{layer.name}: ILayer::{what}: Error Code 3: API Usage Error (cannot be "
                                 "called on a layer of a strongly typed network)")
            layer.network.api_errors.append(f"{what} on {layer.name}")

        def _set_precision(self, dt):
            if self.network.strongly_typed:
                return _refused(self, "setPrecision")
            self._precision = dt

        def _set_output_type(self, i, dt):
            if self.network.strongly_typed:
                return _refused(self, "setOutputType")
            self._outputs[i].pinned = dt

        ILayer.precision = property(lambda self: self._precision or DataType.FLOAT, _set_precision)
        ILayer.set_output_type = _set_output_type

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags = flags
            self.explicit_batch = not v86 or bool(flags & (1 << ndf["EXPLICIT_BATCH"]))
            self.strongly_typed = v11 or (not v86 and bool(flags & (1 << ndf["STRONGLY_TYPED"])))
            self.onnx: bytes | None = None
            self.inputs: list[tuple[str, tuple, int]] = []
            self.layers: list[ILayer] = []
            self.input_tensors: list[ITensor] = []
            self.output_tensors: list[ITensor] = []
            self.api_errors: list[str] = []

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.input_tensors))
        num_outputs = property(lambda self: len(self.output_tensors))

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return self.input_tensors[i]

        def get_output(self, i):
            return self.output_tensors[i]

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            mn, op, mx = tuple(min), tuple(opt), tuple(max)
            if not (len(mn) == len(op) == len(mx)) or any(a > b or b > c for a, b, c in zip(mn, op, mx)):
                raise RuntimeError("IOptimizationProfile::setDimensions: inconsistent dimensions")
            self.shapes[name] = (mn, op, mx)

    class ITimingCache:
        def __init__(self, gpu: str, data: bytes):
            self.gpu, self.data = gpu, bytearray(data)

        def serialize(self):
            return memoryview(CACHE_MAGIC + self.gpu.encode() + b"\n" + bytes(self.data))

    class IBuilderConfig:
        def __init__(self):
            self._flags = {trt.BuilderFlag.TF32}  # TF32 is on by default
            self.pools = {}
            self.profiles = []
            self.timing_cache = None
            self.builder_optimization_level = 3
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError("set_flag(): incompatible function arguments")
            trt.calls.append(("set_flag", flag.name))
            self._flags.add(flag)

        def clear_flag(self, flag):
            trt.calls.append(("clear_flag", flag.name))
            self._flags.discard(flag)

        def get_flag(self, flag):
            return flag in self._flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, buffer):
            data = bytes(buffer)
            if not data:
                return ITimingCache("", b"")
            if not data.startswith(CACHE_MAGIC):
                emit(Severity.ERROR, "Error Code 1: Serialization (timing cache: magic tag does not match)")
                return None  # as the real call may: trtexec checks for it
            gpu, _, rest = data[len(CACHE_MAGIC):].partition(b"\n")
            return ITimingCache(gpu.decode(), rest)

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("set_timing_cache", len(bytes(cache.serialize())) if cache.gpu else 0))
            if cache.gpu and cache.gpu != cuda_state.gpu_name and not ignore_mismatch:
                emit(Severity.WARNING, "timing cache was created on a different device")
                return False
            cache.gpu = cuda_state.gpu_name
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
            use_logger(logger)

        num_DLA_cores = property(lambda self: cuda_state.dla_cores)

        def create_network(self, flags=0):
            require_context("createNetwork")
            trt.calls.append(("create_network", flags))
            trt.networks.append(INetworkDefinition(flags))
            return trt.networks[-1]

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            require_context("buildSerializedNetwork")
            if network.onnx is None:
                emit(Severity.ERROR, "Network must have at least one output")
                return None
            if network.api_errors:  # TensorRT fails the build after an API usage error
                emit(Severity.ERROR, f"network has {len(network.api_errors)} API usage error(s): {network.api_errors[0]}")
                return None
            fp16_flag = any(f.name == "FP16" for f in config._flags)
            if network.strongly_typed and fp16_flag:
                emit(Severity.ERROR, "Error Code 4: API Usage Error (BuilderFlag::kFP16 cannot be set for a "
                                     "strongly typed network)")
                return None
            # INT8 (issue 34): a strongly typed network refuses the precision flags, INT8 as FP16; a weakly
            # typed one (8.6) builds Q/DQ layers only with kINT8 set (explicit quantization, TensorRT 8.6
            # developer guide: "INT8 must be enabled using the builder configuration flag").
            int8_flag = any(f.name == "INT8" for f in config._flags)
            if network.strongly_typed and int8_flag:
                emit(Severity.ERROR, "Error Code 4: API Usage Error (BuilderFlag::kINT8 cannot be set for a "
                                     "strongly typed network)")
                return None
            if not network.strongly_typed and not int8_flag and _has_qdq(network.onnx):
                emit(Severity.ERROR, "Error Code 4: Internal Error (network has Q/DQ layers, but INT8 is not "
                                     "enabled in the builder config)")
                return None
            for name, shape, dt in network.inputs:
                if -1 in shape and not any(p.shapes.get(name) for p in config.profiles):
                    emit(Severity.ERROR, f"Network has dynamic input {name} but no optimization profile")
                    return None
            header = {"trt": trt.__version__, "gpu": cuda_state.gpu_name, "cc": list(cuda_state.cc), "round": None,
                      "profiles": {k: v for k, v in config.profiles[0].shapes.items()} if config.profiles else {}}
            if fp16_flag:  # weak typing: every float layer may run in half unless pinned and obeyed
                obey = any(f.name == "OBEY_PRECISION_CONSTRAINTS" for f in config._flags)
                # A node keeps fp32 when the layer that imports it is pinned (helpers and weights
                # do not change what the node computes in this model of TensorRT).
                header["round"] = sorted(l.node for l in network.layers
                                         if l.node and obey and l._precision == DataType.FLOAT)
            if config.default_device_type == trt.DeviceType.DLA:
                if not 0 <= config.DLA_core < cuda_state.dla_cores:
                    emit(Severity.ERROR, f"DLA core {config.DLA_core} is not available ({cuda_state.dla_cores} cores)")
                    return None
                if not fp16_flag and not network.strongly_typed:
                    emit(Severity.ERROR, "DLA supports only FP16 and INT8 precision")
                    return None
                header["dla"] = config.DLA_core
            if config.timing_cache is not None:
                config.timing_cache.data += b"+"
            return _HostMemory(PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx)

    if v86:  # deprecated but still bound in 8.6
        Builder.max_batch_size = 1
        Builder.build_engine = lambda self, network, config: None
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

    if not v86:
        ParserError.node_name = lambda self: ""
        ParserError.node_operator = lambda self: ""

    _ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 2: "UINT8", 7: "INT64" if not v86 else "INT32", 6: "INT32", 9: "BOOL",
                    3: "INT8"}  # INT8: the quantised weights of a QDQ graph (issue 34)

    class OnnxParser:
        def __init__(self, network, logger):
            use_logger(logger)
            self.network, self.errors = network, []

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
            if not self.network.explicit_batch:
                self.errors.append(ParserError("ModelImporter.cpp: This version of the ONNX parser only supports "
                                               "TensorRT INetworkDefinitions with an explicit batch dimension"))
                return False
            m = onnx.shape_inference.infer_shapes(m)
            problems = parser_rules(m, series, self.network.strongly_typed)
            if problems:  # the fake's own reading of onnx-tensorrt, not the project's trt_compat
                self.errors += [ParserError(p) for p in problems]
                return False
            self.network.onnx = bytes(model)
            self._layers(m)
            return True

        def _layers(self, m):
            """Layers as onnx-tensorrt makes them (ImporterContext::registerLayer, release 8.6-GA and
            10.x): no layer for a Constant node; a weight becomes a constant layer, named after the
            weight, where it is first used; each node's layer is named after the node (made unique);
            helper layers (broadcast reshapes, TopK's scalar K) are left unnamed, so TensorRT calls
            them "(Unnamed Layer* N) [Shuffle]". Tensors keep their ONNX names."""
            net = self.network
            info = {vi.name: vi.type.tensor_type for vi in
                    list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
            weights = {i.name: (i.data_type, len(i.dims)) for i in m.graph.initializer}
            for n in m.graph.node:
                if n.op_type == "Constant":
                    t = next(a.t for a in n.attribute if a.name == "value")
                    weights[n.output[0]] = (t.data_type, len(t.dims))
            names, tensors = set(), {}

            def dtype(elem):
                return getattr(DataType, _ONNX_TO_TRT.get(elem, "INT32"), DataType.INT32)

            def rank(name):
                if name in weights:
                    return weights[name][1]
                tt = info.get(name)
                return len(tt.shape.dim) if tt is not None and tt.HasField("shape") else 0

            def unique(base):
                name, i = base, 0
                while name in names:
                    i += 1
                    name = f"{base}_{i}"
                names.add(name)
                return name

            def add(layer):
                net.layers.append(layer)
                return layer

            def tensor(name):
                if name not in tensors and name in weights:
                    t = ITensor(name, dtype(weights[name][0]))
                    add(ILayer(unique(name), [], [t], net, weights=name))
                    tensors[name] = t
                return tensors[name]

            def helper(t):
                label = unique(f"(Unnamed Layer* {len(net.layers)}) [Shuffle]")
                out = ITensor(label + "_output", t.dtype)
                add(ILayer(label, [t], [out], net))
                return out

            for i in m.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in i.type.tensor_type.shape.dim)
                net.inputs.append((i.name, dims, i.type.tensor_type.elem_type))
                tensors[i.name] = ITensor(i.name, dtype(i.type.tensor_type.elem_type))
                net.input_tensors.append(tensors[i.name])
            for n in m.graph.node:
                if n.op_type == "Constant":
                    continue
                ins = [tensor(x) if x else None for x in n.input]
                if n.op_type in _BROADCASTING:
                    top = max(rank(x) for x in n.input if x)
                    ins = [helper(t) if x and rank(x) < top else t for x, t in zip(n.input, ins)]
                if n.op_type == "TopK" and len(ins) > 1:
                    ins[1] = helper(ins[1])
                outs = [ITensor(o, dtype(info[o].elem_type if o in info else 6)) for o in n.output]
                add(ILayer(unique(n.name or n.output[0]), ins, outs, net, node=n.name))
                tensors.update(zip(n.output, outs))
            net.output_tensors = [tensors[o.name] for o in m.graph.output]

        def parse_from_file(self, path):
            with open(path, "rb") as f:
                return self.parse(f.read(), path)

    if not v86:
        OnnxParser.supports_model_v2 = lambda self, model, path=None: True
    if not v11:
        OnnxParser.supports_model = lambda self, model, path=None: (True, [])

    class ICudaEngine:
        def __init__(self, header, onnx_bytes):
            import onnx
            import onnxruntime as ort

            self.header, self.onnx_bytes = header, onnx_bytes
            m = onnx.load_from_string(onnx_bytes)
            self.io = []
            for coll, mode in ((m.graph.input, trt.TensorIOMode.INPUT), (m.graph.output, trt.TensorIOMode.OUTPUT)):
                for i in coll:
                    self.io.append((i.name, mode, getattr(DataType, _ONNX_TO_TRT[i.type.tensor_type.elem_type]),
                                    tuple(d.dim_value if d.dim_value else -1 for d in i.type.tensor_type.shape.dim)))
            run = onnx_bytes if header.get("round") is None else _round_half(onnx_bytes, set(header["round"]))
            self.session = ort.InferenceSession(run, providers=["CPUExecutionProvider"])

        num_io_tensors = property(lambda self: len(self.io))
        num_optimization_profiles = property(lambda self: 1)

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

    if not v86:
        ICudaEngine.device_memory_size_v2 = property(lambda self: 1 << 20)
    if not v11:
        ICudaEngine.device_memory_size = property(lambda self: 1 << 20)
        ICudaEngine.has_implicit_batch_dimension = property(lambda self: False)
    if v86:
        ICudaEngine.num_bindings = property(lambda self: len(self.io))

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self.shapes = {}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            mn, _, mx = self.engine.header["profiles"][name]
            shape = tuple(shape)
            if len(shape) != len(mn) or any(v < a or v > b for v, a, b in zip(shape, mn, mx)):
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
            name, _, dt, _ = [e for e in self.engine.io if e[1] == trt.TensorIOMode.INPUT][0]
            shape = self.shapes[name]
            nbytes = int(np.prod(shape)) * np.dtype(nptype(dt)).itemsize
            x = np.frombuffer(bytes(cuda_state.memory[self.addresses[name]][:nbytes]), nptype(dt)).reshape(shape)
            outs = self.engine.session.run(None, {name: x})
            for (oname, _, odt, _), val in zip([e for e in self.engine.io if e[1] == trt.TensorIOMode.OUTPUT], outs):
                data = np.ascontiguousarray(val.astype(nptype(odt))).view(np.uint8).reshape(-1)
                cuda_state.memory[self.addresses[oname]][: data.size] = data.tobytes()
            return True

        def execute_v2(self, bindings):
            return True

    if not v11:
        IExecutionContext.all_shape_inputs_specified = property(lambda self: True)
    if v86:
        IExecutionContext.execute_async_v2 = lambda self, bindings, stream_handle: True

    class Runtime:
        def __init__(self, logger):
            use_logger(logger)
            self.engine_host_code_allowed = False
            self.DLA_core = -1

        def deserialize_cuda_engine(self, buffer):
            require_context("deserializeCudaEngine")
            data = bytes(buffer)
            if not data.startswith(PLAN_MAGIC):
                emit(Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                     "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
                return None
            head, _, onnx_bytes = data[len(PLAN_MAGIC):].partition(b"\n")
            try:
                header = json.loads(head)
            except ValueError:
                emit(Severity.ERROR, "Serialization: corrupt plan header")
                return None
            if header["trt"] != trt.__version__:
                emit(Severity.ERROR, f"Serialization: The engine plan file is not compatible with this "
                                     f"version of TensorRT, expecting library version {trt.__version__} got {header['trt']}")
                return None
            if header["gpu"] != cuda_state.gpu_name or header.get("cc", list(cuda_state.cc)) != list(cuda_state.cc):
                emit(Severity.ERROR, "The engine plan file is generated on an incompatible device, expecting compute "
                                     f"{cuda_state.cc[0]}.{cuda_state.cc[1]} got compute {'.'.join(map(str, header.get('cc', [])))}")
                return None
            if header.get("dla") is not None and header["dla"] >= cuda_state.dla_cores:
                emit(Severity.ERROR, f"Cannot deserialize a DLA engine: DLA core {header['dla']} is not available")
                return None
            try:
                return ICudaEngine(header, onnx_bytes)
            except Exception as e:  # truncated graph
                emit(Severity.ERROR, f"Serialization: corrupt plan ({e})")
                return None

    trt.Builder, trt.Runtime, trt.OnnxParser, trt.IBuilderConfig = Builder, Runtime, OnnxParser, IBuilderConfig
    trt.ICudaEngine, trt.IExecutionContext, trt.IOptimizationProfile = ICudaEngine, IExecutionContext, IOptimizationProfile
    trt.INetworkDefinition, trt.ITimingCache, trt.ParserError = INetworkDefinition, ITimingCache, ParserError
    trt.ILayer, trt.ITensor = ILayer, ITensor
    return trt


def install(monkeypatch, series: str, gpu_name: str = "NVIDIA Orin", cc=(8, 7), dla_cores: int = 0, sms: int = 16):
    """Put fake ``tensorrt`` and ``pycuda`` modules of one series into sys.modules. Jetson Orin
    modules all report the name "Orin" and sm 8.7; AGX Orin has 16 multiprocessors and 2 DLA cores,
    Orin Nano 8 (4 on the 4 GB module) and none."""
    import sys

    pkg, drv = make_pycuda(gpu_name, cc, dla_cores, sms)
    trt = make_tensorrt(series, pkg._state)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, pkg._state
