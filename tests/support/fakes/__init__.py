"""Faithful fakes of the ``tensorrt`` (8.6, 10.3, 10.13+, 11.x) and ``pycuda`` Python APIs.

Built from NVIDIA's TensorRT Python API references per version and, for 8.6, NVIDIA's release/8.6
bindings (pyCore.cpp, pyGraph.cpp, pyOnnx.cpp): a member the real API of a version lacks is absent
here (AttributeError), signatures take the same arguments, and failures return None where the
real bindings do.

- ``versions.py``: what differs between the series (enums, behaviour, which members exist);
- ``pycuda.py``: the driver (contexts per thread, memory, streams, pinned buffers);
- ``network.py``: tensors, layers and the network definition;
- ``parser.py``: the ONNX parser, with its own reading of onnx-tensorrt's operator matrix (not
  engine/trt_compat.py), naming and splitting layers as onnx-tensorrt does;
- ``builder.py``: the builder, its config, profiles and timing caches; it serialises the parsed
  ONNX graph with the build's settings;
- ``runtime.py``: the runtime, which executes that graph with ONNX Runtime on the bytes in fake
  device memory, so parity checks compare real numbers;
- ``tensorrt.py``: the module of one series put together.

And, apart: ``libgpiod/gpiod/``, a fake of libgpiod's Python bindings (v2) that an agent process
imports as ``gpiod`` from PYTHONPATH, driven by ``gpio.py`` (``FakeGpio``).
"""

from .builder import CACHE_MAGIC, PLAN_MAGIC
from .parser import parser_rules
from .pycuda import make_pycuda
from .tensorrt import make_tensorrt
from .versions import SERIES, VERSIONS

__all__ = ["CACHE_MAGIC", "PLAN_MAGIC", "SERIES", "VERSIONS", "install", "make_pycuda", "make_tensorrt",
           "parser_rules"]


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
