"""The fake network definition: tensors, layers as the ONNX parser makes them, the network."""

from __future__ import annotations


def add_network(trt, fake) -> None:
    """``trt.ITensor``, ``trt.ILayer`` and ``trt.INetworkDefinition`` of one series."""
    DataType, Severity, rules = trt.DataType, fake.Severity, fake.rules
    ndf = rules.network_flags

    class ITensor:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype

    def _refused(layer, what):
        """10.x: a strongly typed network takes its types from the graph; setting a layer's
        precision or output type is an API usage error and the build fails."""
        fake.emit(Severity.ERROR, f"{layer.name}: ILayer::{what}: Error Code 3: API Usage Error (cannot be "
                                  "called on a layer of a strongly typed network)")
        layer.network.api_errors.append(f"{what} on {layer.name}")

    def _set_precision(layer, dt):
        if layer.network.strongly_typed:
            return _refused(layer, "setPrecision")
        layer._precision = dt

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

        def set_output_type(self, i, dt):
            if self.network.strongly_typed:
                return _refused(self, "setOutputType")
            self._outputs[i].pinned = dt

        precision = property(lambda self: self._precision or DataType.FLOAT, _set_precision)

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags = flags
            self.explicit_batch = rules.explicit_batch_always or bool(flags & (1 << ndf["EXPLICIT_BATCH"]))
            self.strongly_typed = rules.strongly_typed_always or (
                "STRONGLY_TYPED" in ndf and bool(flags & (1 << ndf["STRONGLY_TYPED"])))
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

    trt.ITensor, trt.ILayer, trt.INetworkDefinition = ITensor, ILayer, INetworkDefinition
