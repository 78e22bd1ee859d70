"""Would TensorRT build this ONNX graph? A check from NVIDIA's own sources, run before a build and
by the test suite on every graph the project exports. The fake TensorRT parser (tests/support/fakes/)
reads the same sources on its own, and the tests compare the two readings graph by graph.

Sources (read 2026-11):
- onnx-tensorrt ``docs/operators.md``: branch 8.6-GA for TensorRT 8.6 (JetPack 6.0), branch
  10.1-GA for the 10.x and 11.x series. No newer matrix was in the stored snapshot of the
  repository, so the 10.1 one stands for 10.3, 10.13 and 11 too: for the operators below it
  only ever grew between releases.
- TensorRT's type rules (``DataType.UINT8``, NvInferRuntimeBase.h): a UINT8 network input may only
  feed a Cast, and UINT8 converts only to and from FLOAT or HALF. 8.x casts INT64 down to INT32
  and DOUBLE to FLOAT (operators.md's note); from 10.0 INT64 is a type of its own.
- Strong typing (10.x with ``STRONGLY_TYPED``, always on 11.x): no implicit conversions, so the
  float inputs of one operator must share a type.

- INT8 (the QDQ graph of an INT8 bundle, engine/int8.py): QuantizeLinear takes FP32/FP16 (10.x: and
  BF16), DequantizeLinear takes INT8, and both need a zero point of 0 (operators.md, both branches:
  "`y_zero_point` must be 0", "`x_zero_point` must be zero"). Explicit quantization: 8.6 builds a
  Q/DQ network only with the INT8 builder flag; 10.x/11 strongly typed take the graph as it is.

Only the operators this project's graphs can contain (or plausibly will) are listed; anything
else is reported as unknown, which fails the check until someone looks it up.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EngineError

# Operator -> supported data types (of the main input), per matrix. Restrictions are checked
# below by name.
_MATRIX_8_6 = """
Abs FP32 FP16 INT32
Add FP32 FP16 INT32
And BOOL
AveragePool FP32 FP16 INT8 INT32
BatchNormalization FP32 FP16
Cast FP32 FP16 INT32 INT8 UINT8 BOOL
Clip FP32 FP16 INT8
Concat FP32 FP16 INT32 INT8 BOOL
Constant FP32 FP16 INT32 INT8 BOOL
Conv FP32 FP16 INT8
ConvTranspose FP32 FP16 INT8
Div FP32 FP16 INT32
Exp FP32 FP16
Flatten FP32 FP16 INT32 BOOL
Gather FP32 FP16 INT8 INT32 BOOL
Gemm FP32 FP16 INT8
GlobalAveragePool FP32 FP16 INT8
Identity FP32 FP16 INT32 INT8 BOOL
LeakyRelu FP32 FP16 INT8
MatMul FP32 FP16
Max FP32 FP16 INT32
MaxPool FP32 FP16 INT8
Min FP32 FP16 INT32
Mul FP32 FP16 INT32
Neg FP32 FP16 INT32
Pad FP32 FP16 INT8 INT32
Pow FP32 FP16
ReduceMax FP32 FP16
ReduceMean FP32 FP16
ReduceMin FP32 FP16
ReduceSum FP32 FP16
Relu FP32 FP16 INT8
Reshape FP32 FP16 INT32 INT8 BOOL
Shape FP32 FP16 INT32 INT8 BOOL
Sigmoid FP32 FP16 INT8
Slice FP32 FP16 INT32 INT8 BOOL
Sqrt FP32 FP16
Squeeze FP32 FP16 INT32 INT8 BOOL
Sub FP32 FP16 INT32
Tanh FP32 FP16 INT8
TopK FP32 FP16 INT32
Transpose FP32 FP16 INT32 INT8 BOOL
Unsqueeze FP32 FP16 INT32 INT8 BOOL
Where FP32 FP16 INT32 BOOL
QuantizeLinear FP32 FP16
DequantizeLinear INT8
"""

_MATRIX_10 = """
Abs FP32 FP16 BF16 INT32 INT64
Add FP32 FP16 BF16 INT32 INT64
And BOOL
AveragePool FP32 FP16 BF16
BatchNormalization FP32 FP16 BF16
Cast FP32 FP16 BF16 INT32 INT64 UINT8 BOOL
Clip FP32 FP16 BF16
Concat FP32 FP16 BF16 INT32 INT64 BOOL
Constant FP32 FP16 BF16 INT32 INT64 BOOL
Conv FP32 FP16 BF16
ConvTranspose FP32 FP16 BF16
Div FP32 FP16 BF16 INT32 INT64
Exp FP32 FP16 BF16
Flatten FP32 FP16 BF16 INT32 INT64 BOOL
Gather FP32 FP16 BF16 INT32 INT64 BOOL
Gemm FP32 FP16 BF16
GlobalAveragePool FP32 FP16 BF16
Identity FP32 FP16 BF16 INT32 INT64 BOOL
LeakyRelu FP32 FP16 BF16
MatMul FP32 FP16 BF16
Max FP32 FP16 BF16 INT32 INT64
MaxPool FP32 FP16 BF16
Min FP32 FP16 BF16 INT32 INT64
Mul FP32 FP16 BF16 INT32 INT64
Neg FP32 FP16 BF16 INT32 INT64
Pad FP32 FP16 BF16 INT32 INT64
Pow FP32 FP16 BF16
ReduceMax FP32 FP16 BF16 INT32 INT64
ReduceMean FP32 FP16 BF16 INT32 INT64
ReduceMin FP32 FP16 BF16 INT32 INT64
ReduceSum FP32 FP16 BF16 INT32 INT64
Relu FP32 FP16 BF16 INT32 INT64
Reshape FP32 FP16 BF16 INT32 INT64 BOOL
Shape FP32 FP16 BF16 INT32 INT64 BOOL
Sigmoid FP32 FP16 BF16
Slice FP32 FP16 BF16 INT32 INT64 BOOL
Sqrt FP32 FP16 BF16
Squeeze FP32 FP16 BF16 INT32 INT64 BOOL
Sub FP32 FP16 BF16 INT32 INT64
Tanh FP32 FP16 BF16
TopK FP32 FP16 BF16 INT32 INT64
Transpose FP32 FP16 BF16 INT32 INT64 BOOL
Unsqueeze FP32 FP16 BF16 INT32 INT64 BOOL
Where FP32 FP16 BF16 INT32 INT64 BOOL
QuantizeLinear FP32 FP16 BF16
DequantizeLinear INT8
"""


def _parse(text: str) -> dict[str, frozenset[str]]:
    rows = (line.split() for line in text.strip().splitlines())
    return {r[0]: frozenset(r[1:]) for r in rows}


@dataclass(frozen=True)
class Series:
    name: str  # "8.6", "10.3", "10.13", "11"
    matrix: dict[str, frozenset[str]]
    max_opset: int
    int64_cast_down: bool  # 8.x: INT64 becomes INT32, DOUBLE becomes FLOAT
    constant_reduce_axes: bool
    strongly_typed: bool  # the FP16 path builds a strongly typed network


_M86, _M10 = _parse(_MATRIX_8_6), _parse(_MATRIX_10)
SERIES = {
    "8.6": Series("8.6", _M86, 17, True, False, False),
    "10.3": Series("10.3", _M10, 20, False, True, True),
    "10.13": Series("10.13", _M10, 20, False, True, True),
    "11": Series("11", _M10, 20, False, True, True),
}
MIN_SUPPORTED = (8, 6)


class UnsupportedTensorRT(EngineError, RuntimeError):
    """A TensorRT version this project does not build or run plans with."""


class OnnxMissing(EngineError, RuntimeError):
    """The ``onnx`` package, which every plan build needs (the graph check, the FP16 pass), is absent."""


def require_onnx():
    """The ``onnx`` module, or OnnxMissing saying how to install it (JetPack ships none)."""
    try:
        import onnx
    except ImportError as e:
        raise OnnxMissing(
            f"building a TensorRT plan needs the onnx package, which is not installed ({e}): "
            "pip install 'ganomaly-edge[tensorrt]' (or pip install 'onnx>=1.15') in the agent's venv; "
            "deploy/install.sh installs it") from None
    return onnx


def series_of(version: str) -> str:
    """The API series of a TensorRT version string ("8.6.2.3" -> "8.6", "10.7.0" -> "10.3",
    "10.16.1.11" -> "10.13", "11.1.0" -> "11"); UnsupportedTensorRT for older or unknown ones."""
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        raise UnsupportedTensorRT(f"cannot read the TensorRT version {version!r}") from None
    if (major, minor) < MIN_SUPPORTED:
        jetpack = " (JetPack 5.1)" if (major, minor) == (8, 5) else ""
        raise UnsupportedTensorRT(
            f"TensorRT {version}{jetpack} is not supported: ganomaly-edge needs TensorRT 8.6 or newer "
            "(JetPack 6.0 ships 8.6, JetPack 6.1/6.2 ship 10.3). Upgrade the device to JetPack 6, "
            "or run with model.backend = \"onnxruntime\" (CPU) until then; see deploy/JETSON.md")
    if major == 8:
        return "8.6"
    if major == 10:
        return "10.13" if minor >= 13 else "10.3"
    if major == 11:
        return "11"
    raise UnsupportedTensorRT(f"TensorRT {version} is not a series ganomaly-edge was checked against "
                              "(8.6, 10.x, 11.x); use model.backend = \"onnxruntime\" or a supported release")


_TYPE_NAMES = {1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
               11: "DOUBLE"}
_FLOATS = {"FP32", "FP16", "BF16"}


def _types(model) -> dict[str, str]:
    onnx = require_onnx()

    m = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        out[vi.name] = _TYPE_NAMES.get(vi.type.tensor_type.elem_type, f"type{vi.type.tensor_type.elem_type}")
    for init in m.graph.initializer:
        out[init.name] = _TYPE_NAMES.get(init.data_type, f"type{init.data_type}")
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = _TYPE_NAMES.get(a.t.data_type, f"type{a.t.data_type}")
    return out


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return require_onnx().helper.get_attribute_value(a)
    return default


def check_graph(onnx_bytes: bytes, series: str, strongly_typed: bool | None = None) -> list[str]:
    """Every reason TensorRT ``series`` would reject the graph; an empty list when it would build.

    ``strongly_typed`` (default: what the series' FP16 path uses, for graphs with FP16 weights)
    adds the strong-typing rule."""
    onnx = require_onnx()

    s = SERIES[series]
    model = onnx.load_from_string(onnx_bytes)
    types = _types(model)
    consts = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # the parser imports these as weights, so they stay constant
        if n.op_type == "Constant" or (n.op_type in ("Identity", "Cast") and n.input and n.input[0] in consts):
            consts.update(n.output)
    producers = {o: n for n in model.graph.node for o in n.output}
    errors: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > s.max_opset:
        errors.append(f"opset {opset} is above what TensorRT {series} imports ({s.max_opset})")
    has_fp16 = any(t == "FP16" for t in types.values())
    strong = s.strongly_typed and has_fp16 if strongly_typed is None else strongly_typed
    for node in model.graph.node:
        errors += _check_node(node, s, types, consts, producers, strong, _scalars(model))
    for out in model.graph.output:
        if types.get(out.name) not in (_FLOATS | {"INT32", "INT64", "BOOL", "UINT8"}):
            errors.append(f"graph output {out.name} has type {types.get(out.name)}, not a TensorRT I/O type")
    return errors


def _type(name: str, types: dict[str, str], s: Series) -> str:
    t = types.get(name, "unknown")
    if s.int64_cast_down:
        t = {"INT64": "INT32", "DOUBLE": "FP32"}.get(t, t)
    return t


def _scalars(model) -> dict[str, int]:
    """Single-element integer constants of the graph (TopK's K), and zero points (int8/uint8; a
    per-channel one as its largest magnitude), by tensor name."""
    import numpy as np
    from onnx import numpy_helper

    tensors = [(i.name, i) for i in model.graph.initializer]
    tensors += [(n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    out = {}
    for name, t in tensors:
        if t.data_type in (2, 3) and len(t.dims) <= 1 and (not t.dims or t.dims[0] == 1):  # a zero point
            out[name] = int(numpy_helper.to_array(t).reshape(-1)[0])
        elif t.data_type in (2, 3) and len(t.dims) == 1:  # per-channel zero points: any non-zero one counts
            out[name] = int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
        if t.data_type in (6, 7) and len(t.dims) <= 1 and (not t.dims or t.dims[0] == 1):
            out[name] = int(numpy_helper.to_array(t).reshape(-1)[0])
    return out


def _check_node(node, s: Series, types, consts, producers, strong: bool, scalars: dict | None = None) -> list[str]:
    where = f"node {node.name or node.output[0]} ({node.op_type})"
    if node.op_type not in s.matrix:
        return [f"{where}: operator not in the TensorRT {s.name} support matrix checked here"]
    errors = []
    ins = [i for i in node.input if i]
    main = node.output[0] if node.op_type == "Constant" else (ins[0] if ins else node.output[0])
    t = _type(main, types, s)
    if t not in s.matrix[node.op_type]:
        errors.append(f"{where}: input type {t} is not supported by TensorRT {s.name} "
                      f"(supports {', '.join(sorted(s.matrix[node.op_type]))})")
    for i in ins:  # TensorRT's UINT8 rule: a UINT8 tensor only ever enters a Cast
        if types.get(i) == "UINT8" and node.op_type != "Cast":
            errors.append(f"{where}: UINT8 tensor {i} feeds a {node.op_type}; TensorRT takes a UINT8 input "
                          "only into a Cast (cast first, then transpose or normalise)")
    if node.op_type == "Cast":
        to = _TYPE_NAMES.get(_attr(node, "to"), "?")
        src = types.get(ins[0])
        if "UINT8" in (src, to) and not ({src, to} - {"UINT8"}) <= {"FP32", "FP16"}:
            errors.append(f"{where}: Cast {src} -> {to}; TensorRT converts UINT8 only to and from FLOAT or HALF")
    if strong:
        floats = {types.get(i) for i in ins if types.get(i) in _FLOATS}
        if len(floats) > 1 and node.op_type != "Cast":
            errors.append(f"{where}: mixes {sorted(floats)} inputs; a strongly typed network needs one "
                          "float type per operator (insert a Cast)")
    errors += _restrictions(node, s, ins, types, consts, producers, where, scalars or {})
    return errors


def _restrictions(node, s: Series, ins, types, consts, producers, where, scalars: dict) -> list[str]:
    op, errors = node.op_type, []
    if op in ("AveragePool", "MaxPool") and len(_attr(node, "kernel_shape", [])) not in (2, 3):
        errors.append(f"{where}: only 2D or 3D pooling")
    if op in ("AveragePool", "MaxPool") and any(d != 1 for d in _attr(node, "dilations", []) or []):
        errors.append(f"{where}: dilations must be empty or all ones")
    axes_input = {"Unsqueeze": 1, "Squeeze": 1, "Slice": 3}
    if s.constant_reduce_axes:
        axes_input.update({"ReduceSum": 1, "ReduceMean": 1, "ReduceMax": 1, "ReduceMin": 1})
    k = axes_input.get(op)
    if k is not None and len(ins) > k and ins[k] not in consts:
        errors.append(f"{where}: input {ins[k]} (axes) must be a constant")
    if op in ("QuantizeLinear", "DequantizeLinear") and len(ins) > 2 and scalars.get(ins[2], 0) != 0:
        errors.append(f"{where}: the zero point must be 0 (TensorRT quantises symmetrically)")
    if op == "TopK":
        if _attr(node, "sorted", 1) != 1:
            errors.append(f"{where}: TensorRT needs sorted=1")
        if len(ins) > 1 and ins[1] not in consts:
            errors.append(f"{where}: K must be a constant")
        k = scalars.get(ins[1]) if len(ins) > 1 else None
        if s.name != "8.6" and k is not None and k >= 3840:  # 10.1-GA operators.md
            errors.append(f"{where}: K = {k}; TensorRT {s.name} takes K below 3840")
    return errors


def has_qdq(onnx_bytes: bytes) -> bool:
    """Whether the graph is a quantised (Q/DQ) one: an INT8 bundle's."""
    model = require_onnx().load_from_string(onnx_bytes)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def graph_for(onnx_bytes: bytes, series: str, precision: str) -> bytes:
    """The graph a build of ``precision`` parses on ``series``: for FP16 on a strongly typed series
    the FP16-typed graph (score head in fp32); otherwise the bundle's own graph (on 8.6 FP16 comes
    from the builder flag, with the score head's layers pinned to fp32; INT8 is the bundle's QDQ
    graph as it is)."""
    if precision == "fp16" and SERIES[series].strongly_typed:
        from .onnx_fp16 import to_fp16

        return to_fp16(onnx_bytes)
    return onnx_bytes


def check_bundle_graph(onnx_bytes: bytes) -> dict[str, list[str]]:
    """Problems per supported series and precision, for the graph each build would parse."""
    out = {}
    precisions = ("int8",) if has_qdq(onnx_bytes) else ("fp32", "fp16")
    for name, s in SERIES.items():
        for precision in precisions:
            out[f"{name}/{precision}"] = check_graph(graph_for(onnx_bytes, name, precision), name,
                                                     strongly_typed=s.strongly_typed)
    return out
