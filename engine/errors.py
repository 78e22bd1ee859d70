"""The root of every error ganomaly-edge raises, and the engine package's own root.

Each package's errors derive from its root (``EngineError`` here, ``AgentError`` in
agent/errors.py, ``TrainError`` in train/errors.py), and where callers expect a built-in kind
(``ValueError`` for bad input, ``RuntimeError`` for a failure) from that too, so ``except
GanomalyError`` catches whatever the product raises and ``except ValueError`` keeps working. The
root lives in engine, the lowest layer, which agent and train may both import.
"""


class GanomalyError(Exception):
    """Any error of ganomaly-edge."""


class EngineError(GanomalyError):
    """An error of the engine package: bundles, backends, calibration, signing, TensorRT."""
