"""The fake ONNX parser: its own reading of onnx-tensorrt's operator matrix (``parser_rules``,
not engine/trt_compat.py), and layers named and split as onnx-tensorrt does (weights as constant
layers named after them, unnamed helpers)."""

from __future__ import annotations

from .versions import RULES, onnx_to_trt

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
    # INT8 (explicit quantization): operators.md 8.6-GA and 10.1-GA, "`y_zero_point` must be 0",
    # "`x_zero_point` must be zero" (checked in parser_rules).
    "QuantizeLinear": ("F", "FH"), "DequantizeLinear": ("8", "8"),
}
_LETTERS = {"F": (1, 10), "I": (6,), "L": (7,), "B": (9,), "8": (3,), "U": (2,), "H": (16,)}
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Equal", "Greater", "Less", "And"}
_ONNX_TYPE_NAMES = {1: "FLOAT", 10: "FLOAT16", 16: "BFLOAT16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
                    11: "DOUBLE"}


def parser_rules(m, series: str, strongly_typed: bool) -> list[str]:
    """What the ONNX parser of ``series`` refuses in the shape-inferred model ``m``."""
    from onnx import helper, numpy_helper

    v8 = RULES[series].onnx_parser == "8.6-GA"
    col = 0 if v8 else 1
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
    if v8:  # the 8.x parser imports INT64 as INT32 and DOUBLE as FLOAT
        elem = {k: {7: 6, 11: 1}.get(v, v) for k, v in elem.items()}
    lo, hi = RULES[series].opset
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
        if not v8:
            constant_axes.update({"ReduceSum": 1, "ReduceMean": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceL2": 1,
                                  "Pad": 3})
        k = constant_axes.get(n.op_type)
        if k is not None and len(n.input) > k and n.input[k] and n.input[k] not in const_values:
            errors.append(f"{where}: axes must be an initializer")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(ins) > 2:
            zp = const_values.get(ins[2])
            if zp is None or zp.any():
                errors.append(f"{where}: zero point must be a constant 0 (TensorRT supports symmetric quantization only)")
        if n.op_type == "TopK" and not v8:
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


def add_parser(trt, fake) -> None:
    """``trt.OnnxParser`` and ``trt.ParserError`` of one series."""
    DataType, series, use_logger = trt.DataType, fake.series, fake.use_logger
    to_trt = onnx_to_trt(series)

    class ParserError:
        def __init__(self, desc):
            self._desc = desc

        def desc(self):
            return self._desc

        def code(self):
            return 1

        def node(self):
            return -1

        node_name = lambda self: ""  # noqa: E731
        node_operator = lambda self: ""  # noqa: E731

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
                return getattr(DataType, to_trt.get(elem, "INT32"), DataType.INT32)

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
                    t = trt.ITensor(name, dtype(weights[name][0]))
                    add(trt.ILayer(unique(name), [], [t], net, weights=name))
                    tensors[name] = t
                return tensors[name]

            def helper(t):
                label = unique(f"(Unnamed Layer* {len(net.layers)}) [Shuffle]")
                out = trt.ITensor(label + "_output", t.dtype)
                add(trt.ILayer(label, [t], [out], net))
                return out

            for i in m.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in i.type.tensor_type.shape.dim)
                net.inputs.append((i.name, dims, i.type.tensor_type.elem_type))
                tensors[i.name] = trt.ITensor(i.name, dtype(i.type.tensor_type.elem_type))
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
                outs = [trt.ITensor(o, dtype(info[o].elem_type if o in info else 6)) for o in n.output]
                add(trt.ILayer(unique(n.name or n.output[0]), ins, outs, net, node=n.name))
                tensors.update(zip(n.output, outs))
            net.output_tensors = [tensors[o.name] for o in m.graph.output]

        def parse_from_file(self, path):
            with open(path, "rb") as f:
                return self.parse(f.read(), path)

        supports_model_v2 = lambda self, model, path=None: True  # noqa: E731
        supports_model = lambda self, model, path=None: (True, [])  # noqa: E731

    trt.OnnxParser, trt.ParserError = OnnxParser, ParserError
