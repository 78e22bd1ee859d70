"""Compile a bundle's ONNX graph into a TensorRT plan, on the device that will run it.

Works with the TensorRT 8.6, 10.x and 11.x Python APIs (NVIDIA's Python API references per version and NVIDIA's
bindings per release branch):
- 10.x and 11.x: a strongly typed network (``STRONGLY_TYPED``; always so on 11.x). FP16 comes
  from the FP16-typed graph (``onnx_fp16.to_fp16``), whose score head stays in fp32: the kNN
  distance cancels catastrophically in half precision, and a weakly typed network with the FP16
  flag would be free to run it there.
- 8.6 (JetPack 6.0): an explicit-batch network (``EXPLICIT_BATCH``; 8.x networks are implicit
  batch otherwise and the ONNX parser refuses them). FP16 through the builder flag, with
  ``OBEY_PRECISION_CONSTRAINTS`` and every layer outside the networks pinned to fp32, found by
  walking the parsed network back from its outputs (``score_head_layers``), not by layer name.
- INT8 plans come from an INT8 bundle's QDQ graph (engine/int8.py), never from an fp32 one: 8.6
  needs the INT8 builder flag for Q/DQ layers; 10.x and 11 strongly typed take the graph as it is.
- fp32 plans clear TF32 (on by default), which would cost the self-test its 2e-3 tolerance.
Older series are refused (``trt_compat.series_of``). Which API is present is detected from the
module, never guessed from the version string. Before TensorRT sees the graph,
``trt_compat.check_graph`` reports what it would reject.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .bundle import ONNX, Bundle, BundleError
from .errors import EngineError
from .meta import PlanMeta
from .trt_compat import SERIES, OnnxMissing, UnsupportedTensorRT, check_graph, graph_for, require_onnx, series_of

log = logging.getLogger(__name__)


class BuildError(EngineError, RuntimeError):
    pass


@dataclass
class BuildOptions:
    precision: str = "fp32"
    max_batch: int = 8
    opt_batch: int = 0  # 0 = max_batch // 2 or 1
    workspace_mib: int = 1024
    timing_cache: str | None = None
    progress: bool = True
    dla_core: int | None = None  # build for this DLA core, layers it cannot run falling back to the GPU


def dla_cores() -> int:
    """DLA cores of this device as TensorRT counts them (2 on Xavier and AGX Orin, 0 on Orin Nano and
    discrete GPUs)."""
    import tensorrt as trt

    from .backends.tensorrt import trt_logger
    from .cuda import device

    with device(0).activate():
        return int(trt.Builder(trt_logger(trt)).num_DLA_cores)


def _check_dla(builder, core: int, precision: str, gpu: str) -> None:
    n = int(builder.num_DLA_cores)
    if n == 0:
        raise BuildError(f"--dla {core}: this device ({gpu}) has no DLA (only Xavier and Jetson AGX Orin have "
                         "DLA cores; Orin NX/Nano and discrete GPUs do not): build without --dla")
    if not 0 <= core < n:
        raise BuildError(f"--dla {core}: this device has {n} DLA core(s), numbered 0 to {n - 1}")
    if precision != "fp16":
        raise BuildError("--dla needs --precision fp16: the DLA runs FP16 and INT8 only")


def network_flags(trt) -> int:
    """Strongly typed where TensorRT has it (10.x, 11.x); explicit batch on 8.x."""
    flags = trt.NetworkDefinitionCreationFlag
    if hasattr(flags, "STRONGLY_TYPED"):
        return 1 << int(flags.STRONGLY_TYPED)
    return 1 << int(flags.EXPLICIT_BATCH)


class _Spinner:
    """A progress line while the builder works (it gives no fraction done we could use on all versions)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        frames = "|/-\\"
        i = 0
        while not self._stop.wait(0.25):
            sys.stderr.write(f"\r{frames[i % 4]} {self.label}: {time.monotonic() - self.t0:5.0f} s")
            sys.stderr.flush()
            i += 1

    def __enter__(self) -> "_Spinner":
        log.info("%s ...", self.label)
        if self.enabled:
            self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.enabled:
            self._t.join()
            sys.stderr.write("\n")
        log.info("%s took %.1f s", self.label, time.monotonic() - self.t0)


def build_plan(bundle: Bundle, opts: BuildOptions) -> tuple[bytes, dict[str, Any]]:
    """Build a plan for ``bundle`` on this machine's GPU; returns the plan and its metadata."""
    import tensorrt as trt

    from .backends.tensorrt import trt_logger
    from .cuda import device

    if opts.precision not in ("fp32", "fp16", "int8"):
        raise BuildError(f"precision must be fp32, fp16 or int8, not {opts.precision!r}")
    _check_int8(bundle, opts.precision)
    if opts.max_batch < 1:
        raise BuildError("--max-batch must be at least 1")
    try:
        require_onnx()
    except OnnxMissing as e:
        raise BuildError(str(e)) from None
    try:
        series = series_of(trt.__version__)
    except UnsupportedTensorRT as e:
        raise BuildError(str(e)) from None
    with open(bundle.file(ONNX), "rb") as f:
        onnx_bytes = graph_for(f.read(), series, opts.precision)
    problems = check_graph(onnx_bytes, series, strongly_typed=SERIES[series].strongly_typed)
    if problems:
        raise BuildError(f"TensorRT {trt.__version__} would reject the bundle's graph: " + "; ".join(problems[:5]))
    dev = device(0)
    logger = trt_logger(trt)
    with dev.activate():
        mark = logger.sink.mark()
        builder = trt.Builder(logger)
        if opts.dla_core is not None:
            _check_dla(builder, opts.dla_core, opts.precision, dev.name())
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errs = [parser.get_error(i).desc() for i in range(parser.num_errors)]
            raise BuildError("TensorRT cannot parse the bundle's ONNX graph: " + "; ".join(errs))
        config = _configure(trt, builder, network, bundle.input, opts, series, bundle.tiling.count, onnx_bytes)
        with _Spinner(f"building {opts.precision} TensorRT plan for {dev.name()}", opts.progress):
            plan = builder.build_serialized_network(network, config)
        if plan is None:
            detail = "; ".join(logger.sink.errors_since(mark)[-3:]) or "see the TensorRT log above"
            raise BuildError(f"TensorRT failed to build the plan: {detail}")
        if opts.timing_cache:
            _save_timing_cache(config, opts.timing_cache)
    tiles = bundle.tiling.count
    fp16_mode = None
    if opts.precision == "fp16":
        fp16_mode = "fp16-typed-graph" if SERIES[series].strongly_typed else "builder-flag, fp32 score head"
    elif opts.precision == "int8":  # explicit quantization from the QDQ graph
        fp16_mode = "int8-qdq-strongly-typed" if SERIES[series].strongly_typed else "int8-qdq-builder-flag"
    info = {"tensorrt_version": trt.__version__, "gpu_name": dev.name(),
            "compute_capability": dev.compute_capability(), "multiprocessors": dev.multiprocessors(),
            "precision": opts.precision,
            "max_batch": opts.max_batch * tiles, "opt_batch": (opts.opt_batch or max(1, opts.max_batch // 2)) * tiles,
            "fp16_mode": fp16_mode, "dla_core": opts.dla_core}
    return bytes(plan), info


def _check_int8(bundle: Bundle, precision: str) -> None:
    """An int8 plan comes from an INT8 bundle's QDQ graph, and an INT8 bundle builds int8 plans only."""
    if (precision == "int8") != (bundle.precision == "int8"):
        fix = ("quantise it first: ganomaly-build-engine CHECKPOINT --out DIR --precision int8"
               if precision == "int8" else "build this INT8 bundle's plan with --precision int8")
        raise BuildError(f"an int8 plan is built from an INT8 bundle's QDQ graph and only from it (this bundle "
                         f"is {bundle.precision}): {fix}")


def _configure(trt, builder, network, spec, opts: BuildOptions, series: str, tiles: int = 1,
               onnx_bytes: bytes = b""):
    """Builder config: workspace, precision, one optimisation profile, timing cache. The profile's
    batch is in model inputs: ``max_batch`` frames of ``tiles`` tiles each at most."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    if opts.precision in ("fp32", "int8"):
        config.clear_flag(trt.BuilderFlag.TF32)  # INT8: the layers left unquantised stay true fp32
    if opts.precision == "int8":
        if not SERIES[series].strongly_typed:
            # 8.6: a network with Q/DQ layers builds only with INT8 enabled (explicit quantization);
            # a strongly typed network (10.x, 11) takes its types from the graph and refuses the flag.
            config.set_flag(trt.BuilderFlag.INT8)
    elif opts.precision == "fp16" and not SERIES[series].strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_score_head(trt, network, onnx_bytes)
    h, w, c = spec.shape
    opt = (opts.opt_batch or max(1, opts.max_batch // 2)) * tiles
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.name, (1, h, w, c), (opt, h, w, c), (opts.max_batch * tiles, h, w, c))
    config.add_optimization_profile(profile)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # what the DLA cannot run stays on the GPU
    if opts.timing_cache:
        _use_timing_cache(config, opts.timing_cache, trt.__version__)
    return config


def network_tensors(onnx_bytes: bytes) -> set[str]:
    """Names of the tensors the networks' nodes produce in the ONNX graph. The exporter names those
    nodes (``onnx_fp16.HALF_SCOPES``) and the ONNX parser keeps tensor names, so these mark where
    the networks end in the parsed TensorRT network, whatever its layers are called."""
    from .onnx_fp16 import HALF_SCOPES

    onnx = require_onnx()
    model = onnx.load_from_string(onnx_bytes)
    return {o for n in model.graph.node if n.name.startswith(HALF_SCOPES) for o in n.output}


def score_head_layers(network, stop: set[str]) -> list:
    """The layers between the networks and the outputs: walked back from every network output
    through each layer's inputs, up to the tensors in ``stop``. Found by position in the graph,
    because the 8.6 parser names weight layers after their weights and leaves its helper layers
    unnamed ("(Unnamed Layer* 12) [Shuffle]")."""
    producer = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
    todo = [network.get_output(i).name for i in range(network.num_outputs)]
    seen: set[str] = set()
    head, taken = [], set()
    while todo:
        name = todo.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        layer = producer.get(name)
        if layer is None or layer.name in taken:  # a network input, or a layer already walked
            continue
        taken.add(layer.name)
        head.append(layer)
        todo.extend(layer.get_input(k).name for k in range(layer.num_inputs) if layer.get_input(k) is not None)
    return head


def _pin_score_head(trt, network, onnx_bytes: bytes) -> int:
    """Weakly typed FP16 (8.6): the preprocessing, the residual and the score head (TopK included)
    run and output fp32; the networks are left to the builder."""
    pinned = 0
    for layer in score_head_layers(network, network_tensors(onnx_bytes)):
        floats = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in (trt.float32, trt.float16)]
        if not floats:  # shapes and indices only
            continue
        layer.precision = trt.float32
        for j in floats:  # TopK's indices stay INT32
            layer.set_output_type(j, trt.float32)
        pinned += 1
    log.info("FP16 with the builder flag: %d preprocessing, residual and score-head layer(s) pinned to fp32", pinned)
    return pinned


def _use_timing_cache(config, path: str, version: str) -> None:
    """Read the timing cache at ``path`` into the config; a corrupt or foreign one is replaced by a
    new, empty cache with a warning. TensorRT may return None or refuse a cache (trtexec checks)."""
    data = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
        log.info("timing cache: read %d bytes from %s", len(data), path)
    cache = config.create_timing_cache(data)
    if cache is None and data:
        log.warning("timing cache %s cannot be read by TensorRT %s (corrupt, or written by another "
                    "version): starting a new one", path, version)
        cache = config.create_timing_cache(b"")
    if cache is not None and not config.set_timing_cache(cache, False):
        log.warning("timing cache %s was made on another GPU or TensorRT version: starting a new one", path)
        cache = config.create_timing_cache(b"")
        if cache is not None and not config.set_timing_cache(cache, False):
            cache = None
    if cache is None:
        raise BuildError(f"TensorRT {version} could not create a timing cache; build without "
                         f"--timing-cache, or delete {path}")


def _save_timing_cache(config, path: str) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("TensorRT returned no timing cache: %s not updated", path)
        return
    data = bytes(cache.serialize())
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    log.info("timing cache: wrote %d bytes to %s", len(data), path)


def build_into_bundle(bundle: Bundle, opts: BuildOptions) -> PlanMeta:
    """Build, prove the plan against the reference outputs, then add it to the bundle."""
    from .backends.tensorrt import TensorRTEngine

    plan, info = build_plan(bundle, opts)
    entry = bundle.add_plan(plan, info)
    try:
        eng = TensorRTEngine(bundle, entry)
        try:
            rep = eng.self_test(enforce=True)
        finally:
            eng.close()
    except BundleError:
        bundle.drop_plan(entry)  # never leave a plan that does not score like the model in the bundle
        raise
    entry.parity = {k: rep[k] for k in ("max_score_diff_calibrated", "max_residual_diff", "n")}
    bundle.put_plan(entry)
    return entry
