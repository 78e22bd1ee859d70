"""The fake runtime: deserialising a plan (refused on another TensorRT version or GPU, as the real
one does), the engine and its execution context, which runs the plan's graph with ONNX Runtime on
the bytes in fake device memory, so parity checks compare real numbers."""

from __future__ import annotations

import json

import numpy as np

from .builder import PLAN_MAGIC, HostMemory
from .versions import onnx_to_trt


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


def add_runtime(trt, fake) -> None:
    """``trt.Runtime``, ``trt.ICudaEngine`` and ``trt.IExecutionContext`` of one series."""
    DataType, Severity, nptype = trt.DataType, fake.Severity, trt.nptype
    emit, use_logger, require_context, cuda_state = fake.emit, fake.use_logger, fake.require_context, fake.cuda_state
    to_trt = onnx_to_trt(fake.series)

    class ICudaEngine:
        def __init__(self, header, onnx_bytes):
            import onnx
            import onnxruntime as ort

            self.header, self.onnx_bytes = header, onnx_bytes
            m = onnx.load_from_string(onnx_bytes)
            self.io = []
            for coll, mode in ((m.graph.input, trt.TensorIOMode.INPUT), (m.graph.output, trt.TensorIOMode.OUTPUT)):
                for i in coll:
                    self.io.append((i.name, mode, getattr(DataType, to_trt[i.type.tensor_type.elem_type]),
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
            return HostMemory(PLAN_MAGIC + json.dumps(self.header).encode() + b"\n" + self.onnx_bytes)

        device_memory_size_v2 = property(lambda self: 1 << 20)
        device_memory_size = property(lambda self: 1 << 20)
        has_implicit_batch_dimension = property(lambda self: False)
        num_bindings = property(lambda self: len(self.io))

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

        all_shape_inputs_specified = property(lambda self: True)
        execute_async_v2 = lambda self, bindings, stream_handle: True  # noqa: E731

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

    trt.Runtime, trt.ICudaEngine, trt.IExecutionContext = Runtime, ICudaEngine, IExecutionContext
