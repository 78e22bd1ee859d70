"""Turn the fp32 bundle graph into an FP16-typed graph with the same uint8 input and fp32 outputs.

TensorRT 11 removed the FP16 builder flag: networks are strongly typed, so an FP16 engine comes
from a graph whose weights and internal tensors are already float16. Only the networks (the
nodes the exporter names ``/generator/...`` and ``/discriminator/...``) run in float16; the
preprocessing and the score head (standardisation, the k-nearest-neighbour distance, whose
``|z|^2 - 2 z.b + |b|^2`` cancels badly in half precision) stay in float32, with Casts at the
boundaries. Needs only ``onnx``.
"""

from __future__ import annotations

import numpy as np

# Scopes of the network modules in exported node names (Scorer calls the sub-networks directly).
HALF_SCOPES = ("/generator/", "/discriminator/", "/encoder1/", "/encoder2/", "/decoder/")


def to_fp16(onnx_bytes: bytes) -> bytes:
    from .trt_compat import require_onnx

    onnx = require_onnx()

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_bytes))
    g = model.graph
    elem: dict[str, int] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        elem[vi.name] = vi.type.tensor_type.elem_type
    inits = {i.name: i for i in g.initializer}
    for name, init in inits.items():
        elem[name] = init.data_type
    # The exporter shares repeated weights through Identity nodes: read through them, so every
    # network weight becomes a float16 initializer rather than a Cast of a float32 tensor.
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in inits}
    outputs = {o.name for o in g.output}
    pass_ = _HalfPass(elem, inits)
    new_nodes = []
    for node in g.node:
        if node.op_type == "Identity" and node.output[0] in alias and node.output[0] not in outputs:
            continue
        for j, name in enumerate(node.input):
            node.input[j] = alias.get(name, name)
        new_nodes.extend(pass_.rewrite(node))
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + pass_.new_inits)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _HalfPass:
    """Rewrites nodes one by one: network nodes to float16 (weights copied), Casts where a
    float16 tensor meets a float32 one."""

    def __init__(self, elem: dict[str, int], inits: dict):
        self.elem, self.inits = elem, inits
        self.half_inits: dict[str, str] = {}  # fp32 initializer name -> its fp16 copy
        self.casts: dict[tuple[str, int], str] = {}
        self.produced_half: set[str] = set()
        self.new_inits: list = []

    def rewrite(self, node) -> list:
        from onnx import TensorProto, numpy_helper

        half = node.name.startswith(HALF_SCOPES)
        if half and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
        out = []
        for j, name in enumerate(node.input):
            if name and self.elem.get(name) == TensorProto.FLOAT:
                node.input[j] = self._input(name, half, out)
        if half:
            self.produced_half.update(o for o in node.output if self.elem.get(o) == TensorProto.FLOAT)
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == TensorProto.FLOAT:
                        a.i = TensorProto.FLOAT16
        return out + [node]

    def _input(self, name: str, half: bool, out: list) -> str:
        from onnx import TensorProto, helper, numpy_helper

        if half and name in self.inits:
            if name not in self.half_inits:
                arr = numpy_helper.to_array(self.inits[name]).astype(np.float16)
                self.half_inits[name] = name + "__fp16"
                self.new_inits.append(numpy_helper.from_array(arr, self.half_inits[name]))
            return self.half_inits[name]
        if half == (name in self.produced_half):
            return name
        to = TensorProto.FLOAT16 if half else TensorProto.FLOAT
        key = (name, to)
        if key not in self.casts:
            self.casts[key] = f"{name}__to{'16' if half else '32'}"
            out.append(helper.make_node("Cast", [name], [self.casts[key]], to=to, name=self.casts[key] + "_cast"))
        return self.casts[key]


def is_fp16_graph(onnx_bytes: bytes) -> bool:
    """True if the networks' weights are float16 (what a strongly typed FP16 build needs)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load_from_string(onnx_bytes)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    types = {i.data_type for i in model.graph.initializer if i.name in conv_weights}
    return types == {TensorProto.FLOAT16}
