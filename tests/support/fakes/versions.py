"""What differs between the TensorRT API series the fakes model: one table per kind of difference.

Read from NVIDIA's TensorRT Python API references per version and, for 8.6, NVIDIA's release/8.6
bindings (pyCore.cpp, pyGraph.cpp, pyOnnx.cpp). The fake classes define the union of every
series' members; ``make_tensorrt`` deletes those a series lacks (``MEMBERS``), so the fake of a
series raises AttributeError where the real bindings do.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSIONS = {"8.6": "8.6.2.3", "10.3": "10.3.0", "10.13": "10.13.3.9", "11": "11.1.0.7"}
SERIES = list(VERSIONS)

_DATA_TYPES = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"]
_FLAGS_8 = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "STRICT_TYPES", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
            "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
            "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "ENABLE_TACTIC_HEURISTIC", "VERSION_COMPATIBLE",
            "EXCLUDE_LEAN_RUNTIME", "FP8"]  # release/8.6 python/src/infer/pyCore.cpp
_FLAGS_10 = ["TF32", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS",
             "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS", "STRIP_PLAN",
             "WEIGHT_STREAMING"]
# The weak-typing precision flags: deprecated in 10.x, gone in 11.
_PRECISION_FLAGS = ["FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]


@dataclass(frozen=True)
class Series:
    """One API series: its enums and the behaviour that differs."""

    data_types: list[str]
    builder_flags: list[str]
    network_flags: dict[str, int]  # NetworkDefinitionCreationFlag
    hardware_compatibility: dict[str, int]
    opset: tuple[int, int]  # the ONNX opsets its parser reads (onnx-tensorrt's README per branch)
    onnx_parser: str  # the onnx-tensorrt branch whose operator matrix and rules it follows
    int64: str  # the TensorRT type an ONNX INT64 tensor becomes
    explicit_batch_always: bool  # else only with the EXPLICIT_BATCH flag
    strongly_typed_always: bool  # else only with the STRONGLY_TYPED flag, where it exists


RULES = {
    "8.6": Series(_DATA_TYPES, _FLAGS_8, {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
                  {"NONE": 0, "AMPERE_PLUS": 1}, (7, 17), "8.6-GA", "INT32", False, False),
    "10.3": Series(_DATA_TYPES + ["BF16", "INT64", "INT4"], _FLAGS_10 + _PRECISION_FLAGS,
                   {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}, {"NONE": 0, "AMPERE_PLUS": 1}, (9, 20), "10.1-GA",
                   "INT64", True, False),
    "10.13": Series(_DATA_TYPES + ["BF16", "INT64", "INT4"], _FLAGS_10 + _PRECISION_FLAGS + ["FP4"],
                    {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
                    {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2}, (9, 20), "10.1-GA", "INT64", True,
                    False),
    "11": Series(_DATA_TYPES + ["BF16", "INT64", "INT4"], _FLAGS_10, {"STRONGLY_TYPED": 0},
                 {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2}, (9, 20), "10.1-GA", "INT64", True,
                 True),
}

_ALL = set(SERIES)
_ONLY_8 = {"8.6"}
_SINCE_10 = _ALL - _ONLY_8
_BEFORE_11 = _ALL - {"11"}
# Class.member -> the series whose bindings have it (members not listed exist in every series).
MEMBERS = {
    "Builder.max_batch_size": _ONLY_8,  # deprecated, still bound in 8.6
    "Builder.build_engine": _ONLY_8,
    "Builder.platform_has_fast_fp16": _BEFORE_11,
    "Builder.platform_has_fast_int8": _BEFORE_11,
    "Builder.platform_has_tf32": _BEFORE_11,
    "ILayer.precision": _BEFORE_11,  # precision controls: gone in 11 (release/11.1 pyGraph.cpp)
    "ILayer.set_output_type": _BEFORE_11,
    "IBuilderConfig.int8_calibrator": _BEFORE_11,
    "IBuilderConfig.quantization_flags": _BEFORE_11,
    "IBuilderConfig.set_calibration_profile": _BEFORE_11,
    "ParserError.node_name": _SINCE_10,
    "ParserError.node_operator": _SINCE_10,
    "OnnxParser.supports_model_v2": _SINCE_10,
    "OnnxParser.supports_model": _BEFORE_11,
    "ICudaEngine.device_memory_size_v2": _SINCE_10,
    "ICudaEngine.device_memory_size": _BEFORE_11,
    "ICudaEngine.has_implicit_batch_dimension": _BEFORE_11,
    "ICudaEngine.num_bindings": _ONLY_8,
    "IExecutionContext.all_shape_inputs_specified": _BEFORE_11,
    "IExecutionContext.execute_async_v2": _ONLY_8,  # deprecated, still bound in 8.6
}


def onnx_to_trt(series: str) -> dict[int, str]:
    """ONNX element type -> the TensorRT DataType name the parser of ``series`` gives it."""
    return {1: "FLOAT", 10: "HALF", 2: "UINT8", 7: RULES[series].int64, 6: "INT32", 9: "BOOL",
            3: "INT8"}  # INT8: the quantised weights of a QDQ graph
