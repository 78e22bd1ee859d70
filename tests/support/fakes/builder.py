"""The fake builder: optimisation profiles, timing caches, the builder config and the builder.

The builder serialises the parsed ONNX graph with the build's settings (a JSON header: TensorRT
version, GPU, compute capability, profiles, the nodes an fp16 build keeps in fp32); the runtime
(runtime.py) refuses a plan of another version or GPU and executes the graph.
"""

from __future__ import annotations

import json

PLAN_MAGIC = b"FAKETRTPLAN1\n"
CACHE_MAGIC = b"FAKETIMINGCACHE1\n"


class HostMemory:
    """What build_serialized_network and ICudaEngine.serialize return: a buffer of the plan."""

    def __init__(self, data):
        self._data = data
        self.nbytes = len(data)

    def __buffer__(self, flags):
        return memoryview(self._data)

    def __bytes__(self):
        return self._data



def _has_qdq(onnx_bytes: bytes) -> bool:
    """Whether a parsed graph holds Q/DQ nodes (an explicitly quantised network)."""
    import onnx

    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for n in onnx.load_from_string(onnx_bytes).graph.node)

def add_builder(trt, fake) -> None:
    """``trt.Builder``, ``trt.IBuilderConfig``, ``trt.IOptimizationProfile`` and ``trt.ITimingCache``."""
    DataType, Severity = trt.DataType, fake.Severity
    emit, use_logger, require_context, cuda_state = fake.emit, fake.use_logger, fake.require_context, fake.cuda_state

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            mn, op, mx = tuple(min), tuple(opt), tuple(max)
            if not (len(mn) == len(op) == len(mx)) or any(a > b or b > c for a, b, c in zip(mn, op, mx)):
                raise RuntimeError("IOptimizationProfile::setDimensions: inconsistent dimensions")
            self.shapes[name] = (mn, op, mx)

    class ITimingCache:
        def __init__(self, gpu: str, data: bytes):
            self.gpu, self.data = gpu, bytearray(data)

        def serialize(self):
            return memoryview(CACHE_MAGIC + self.gpu.encode() + b"\n" + bytes(self.data))

    class IBuilderConfig:
        def __init__(self):
            self._flags = {trt.BuilderFlag.TF32}  # TF32 is on by default
            self.pools = {}
            self.profiles = []
            self.timing_cache = None
            self.builder_optimization_level = 3
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE

        int8_calibrator = None
        quantization_flags = 0
        set_calibration_profile = lambda self, p: None  # noqa: E731

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError("set_flag(): incompatible function arguments")
            trt.calls.append(("set_flag", flag.name))
            self._flags.add(flag)

        def clear_flag(self, flag):
            trt.calls.append(("clear_flag", flag.name))
            self._flags.discard(flag)

        def get_flag(self, flag):
            return flag in self._flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, buffer):
            data = bytes(buffer)
            if not data:
                return ITimingCache("", b"")
            if not data.startswith(CACHE_MAGIC):
                emit(Severity.ERROR, "Error Code 1: Serialization (timing cache: magic tag does not match)")
                return None  # as the real call may: trtexec checks for it
            gpu, _, rest = data[len(CACHE_MAGIC):].partition(b"\n")
            return ITimingCache(gpu.decode(), rest)

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("set_timing_cache", len(bytes(cache.serialize())) if cache.gpu else 0))
            if cache.gpu and cache.gpu != cuda_state.gpu_name and not ignore_mismatch:
                emit(Severity.WARNING, "timing cache was created on a different device")
                return False
            cache.gpu = cuda_state.gpu_name
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            use_logger(logger)

        num_DLA_cores = property(lambda self: cuda_state.dla_cores)
        max_batch_size = 1  # deprecated, still bound in 8.6
        build_engine = lambda self, network, config: None  # noqa: E731
        platform_has_fast_fp16 = property(lambda self: True)
        platform_has_fast_int8 = property(lambda self: True)
        platform_has_tf32 = property(lambda self: True)

        def create_network(self, flags=0):
            require_context("createNetwork")
            trt.calls.append(("create_network", flags))
            trt.networks.append(trt.INetworkDefinition(flags))
            return trt.networks[-1]

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            require_context("buildSerializedNetwork")
            if network.onnx is None:
                emit(Severity.ERROR, "Network must have at least one output")
                return None
            if network.api_errors:  # TensorRT fails the build after an API usage error
                emit(Severity.ERROR, f"network has {len(network.api_errors)} API usage error(s): {network.api_errors[0]}")
                return None
            fp16_flag = any(f.name == "FP16" for f in config._flags)
            if network.strongly_typed and fp16_flag:
                emit(Severity.ERROR, "Error Code 4: API Usage Error (BuilderFlag::kFP16 cannot be set for a "
                                     "strongly typed network)")
                return None
            # INT8: a strongly typed network refuses the precision flags, INT8 as FP16; a weakly typed
            # one (8.6) builds Q/DQ layers only with kINT8 set (explicit quantization, TensorRT 8.6
            # developer guide: "INT8 must be enabled using the builder configuration flag").
            int8_flag = any(f.name == "INT8" for f in config._flags)
            if network.strongly_typed and int8_flag:
                emit(Severity.ERROR, "Error Code 4: API Usage Error (BuilderFlag::kINT8 cannot be set for a "
                                     "strongly typed network)")
                return None
            if not network.strongly_typed and not int8_flag and _has_qdq(network.onnx):
                emit(Severity.ERROR, "Error Code 4: Internal Error (network has Q/DQ layers, but INT8 is not "
                                     "enabled in the builder config)")
                return None
            for name, shape, dt in network.inputs:
                if -1 in shape and not any(p.shapes.get(name) for p in config.profiles):
                    emit(Severity.ERROR, f"Network has dynamic input {name} but no optimization profile")
                    return None
            header = {"trt": trt.__version__, "gpu": cuda_state.gpu_name, "cc": list(cuda_state.cc), "round": None,
                      "profiles": {k: v for k, v in config.profiles[0].shapes.items()} if config.profiles else {}}
            if fp16_flag:  # weak typing: every float layer may run in half unless pinned and obeyed
                obey = any(f.name == "OBEY_PRECISION_CONSTRAINTS" for f in config._flags)
                # A node keeps fp32 when the layer that imports it is pinned (helpers and weights
                # do not change what the node computes in this model of TensorRT).
                header["round"] = sorted(l.node for l in network.layers
                                         if l.node and obey and l._precision == DataType.FLOAT)
            if config.default_device_type == trt.DeviceType.DLA:
                if not 0 <= config.DLA_core < cuda_state.dla_cores:
                    emit(Severity.ERROR, f"DLA core {config.DLA_core} is not available ({cuda_state.dla_cores} cores)")
                    return None
                if not fp16_flag and not network.strongly_typed:
                    emit(Severity.ERROR, "DLA supports only FP16 and INT8 precision")
                    return None
                header["dla"] = config.DLA_core
            if config.timing_cache is not None:
                config.timing_cache.data += b"+"
            return HostMemory(PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx)

    trt.Builder, trt.IBuilderConfig = Builder, IBuilderConfig
    trt.IOptimizationProfile, trt.ITimingCache = IOptimizationProfile, ITimingCache
