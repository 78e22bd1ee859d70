"""The one list of inference backends: the loader, the agent's config and the bench read it.

A backend is an ``Engine`` subclass in ``engine/backends/``, imported only when chosen, so a
device without TensorRT (or without ONNX Runtime) still loads the others.
"""

from __future__ import annotations

import importlib
from typing import Literal, get_args

from .errors import EngineError

BACKENDS = {
    "tensorrt": "ganomaly_edge.engine.backends.tensorrt:TensorRTEngine",
    "onnxruntime": "ganomaly_edge.engine.backends.onnxruntime:OnnxRuntimeEngine",
    "openvino": "ganomaly_edge.engine.backends.openvino:OpenVinoEngine",  # optional: the [openvino] extra
}
# "auto": a TensorRT plan built for this GPU and TensorRT version if the bundle has one; else, on the
# CPU, ONNX Runtime or (where it is installed) OpenVINO, whichever a short timed race on load finds
# faster (engine/loader.py, cpu_race).
BackendChoice = Literal["auto", "tensorrt", "onnxruntime", "openvino"]
CHOICES: tuple[str, ...] = get_args(BackendChoice)
assert set(CHOICES) == {"auto", *BACKENDS}, "BackendChoice and BACKENDS must name the same backends"


class UnknownBackend(EngineError, ValueError):
    """A backend name that is not in the registry."""


def backend_class(name: str):
    """The Engine class registered under ``name`` (imported on demand)."""
    if name not in BACKENDS:
        raise UnknownBackend(f"unknown backend {name!r}; choose one of {CHOICES}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
