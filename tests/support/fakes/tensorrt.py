"""The fake ``tensorrt`` module of one API series, put together from its parts: the module's types
and logger (here), the network (network.py), the ONNX parser (parser.py), the builder
(builder.py) and the runtime (runtime.py); what differs between series is in versions.py."""

from __future__ import annotations

import enum
import types

import numpy as np

from .builder import add_builder
from .network import add_network
from .parser import add_parser
from .pycuda import CudaState
from .runtime import add_runtime
from .versions import MEMBERS, RULES, VERSIONS


def make_tensorrt(series: str, cuda_state: CudaState):
    """A fake ``tensorrt`` module of one API series: "8.6", "10.3", "10.13" or "11"."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSIONS[series]
    trt.calls = []  # what the code under test did, for assertions
    trt.loggers = []  # every ILogger handed to a Builder or Runtime
    trt.networks = []  # every network created, for assertions on what the builder was given
    fake = _add_types(trt, series, cuda_state)
    for add in (add_network, add_parser, add_builder, add_runtime):
        add(trt, fake)
    for member, has in MEMBERS.items():  # the union defined, what this series lacks taken away
        if series not in has:
            cls, name = member.split(".")
            delattr(getattr(trt, cls), name)
    return trt


def _add_types(trt, series: str, cuda_state: CudaState) -> types.SimpleNamespace:
    """The enums, ``nptype``, ``volume`` and the loggers; returns what the parts share (the
    series' rules, the CUDA state, the first logger's ``emit``)."""
    rules = RULES[series]
    DataType = enum.IntEnum("DataType", {n: i for i, n in enumerate(rules.data_types)})
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

    trt.BuilderFlag = enum.IntEnum("BuilderFlag", {f: i for i, f in enumerate(rules.builder_flags)})
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", rules.network_flags)
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.ExecutionContextAllocationStrategy = enum.IntEnum("ExecutionContextAllocationStrategy",
                                                          {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2})
    trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", rules.hardware_compatibility)
    return types.SimpleNamespace(series=series, rules=rules, cuda_state=cuda_state, Severity=Severity,
                                 emit=emit, use_logger=use_logger, require_context=require_context)
