"""Fake TensorRT and pycuda for a process of the device-profile venv (tests/test_device_profile.py):
with this folder on PYTHONPATH, ``import tensorrt`` and ``import pycuda.driver`` give the fakes of
tests/support/fakes/. FAKE_TRT_SERIES picks the API series (default 10.3, JetPack 6.1/6.2), FAKE_GPU the
GPU name, FAKE_DLA its DLA cores."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for support.fakes

from support import fakes  # noqa: E402

pkg, drv = fakes.make_pycuda(os.environ.get("FAKE_GPU", "Orin"), (8, 7), int(os.environ.get("FAKE_DLA", "0")))
trt = fakes.make_tensorrt(os.environ.get("FAKE_TRT_SERIES", "10.3"), pkg._state)
sys.modules["pycuda"], sys.modules["pycuda.driver"] = pkg, drv
