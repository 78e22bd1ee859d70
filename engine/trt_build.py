"""Compile a bundle's ONNX graph into a TensorRT plan, on the device that will run it.

Works with the TensorRT 10.x and 11.x Python APIs (see shared/TENSORRT_API.md): explicit
batch (``create_network(0)``), one optimisation profile 1..max_batch, FP16 through
``BuilderFlag.FP16`` where that flag exists (10.x) and through an FP16-typed graph with fp32
outputs where it does not (11.x: strong typing only). Which API is present is detected from
the module itself, never guessed from the version string.
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
from .meta import PlanMeta

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    pass


@dataclass
class BuildOptions:
    precision: str = "fp32"
    max_batch: int = 8
    opt_batch: int = 0  # 0 = max_batch // 2 or 1
    workspace_mib: int = 1024
    timing_cache: str | None = None
    progress: bool = True


def fp16_via_flag(trt) -> bool:
    """True where the builder takes FP16 as a flag (10.x); False where only strong typing exists (11.x)."""
    return hasattr(trt.BuilderFlag, "FP16")


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

    from .backends.tensorrt import TrtLogger
    from .cuda import CudaDevice

    if opts.precision not in ("fp32", "fp16"):
        raise BuildError(f"precision must be fp32 or fp16, not {opts.precision!r}")
    if opts.max_batch < 1:
        raise BuildError("--max-batch must be at least 1")
    spec = bundle.input
    with open(bundle.file(ONNX), "rb") as f:
        onnx_bytes = f.read()
    via_flag = fp16_via_flag(trt)
    if opts.precision == "fp16" and not via_flag:
        from .onnx_fp16 import to_fp16

        log.info("TensorRT %s has no FP16 builder flag (strongly typed): building from an FP16-typed graph",
                 trt.__version__)
        onnx_bytes = to_fp16(onnx_bytes)

    dev = CudaDevice(0)
    try:
        with dev.activate():
            logger = TrtLogger.make(trt)
            builder = trt.Builder(logger)
            network = builder.create_network(0)  # explicit batch is the only mode since 10.0
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(onnx_bytes):
                errs = [parser.get_error(i).desc() for i in range(parser.num_errors)]
                raise BuildError("TensorRT cannot parse the bundle's ONNX graph: " + "; ".join(errs))
            config = _configure(trt, builder, spec, opts, via_flag)
            with _Spinner(f"building {opts.precision} TensorRT plan for {dev.name()}", opts.progress):
                plan = builder.build_serialized_network(network, config)
            if plan is None:
                detail = "; ".join(logger.errors[-3:]) or "see the TensorRT log above"
                raise BuildError(f"TensorRT failed to build the plan: {detail}")
            if opts.timing_cache:
                data = bytes(config.get_timing_cache().serialize())
                tmp = opts.timing_cache + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, opts.timing_cache)
                log.info("timing cache: wrote %d bytes to %s", len(data), opts.timing_cache)
            info = {"tensorrt_version": trt.__version__, "gpu_name": dev.name(),
                    "compute_capability": dev.compute_capability(), "precision": opts.precision,
                    "max_batch": opts.max_batch, "opt_batch": opts.opt_batch or max(1, opts.max_batch // 2),
                    "fp16_mode": ("builder-flag" if via_flag else "fp16-typed-graph")
                    if opts.precision == "fp16" else None}
            return bytes(plan), info
    finally:
        dev.close()


def _configure(trt, builder, spec, opts: BuildOptions, via_flag: bool):
    """Builder config: workspace, precision, one optimisation profile 1..max_batch, timing cache."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    if opts.precision == "fp16" and via_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    h, w, c = spec.shape
    opt = opts.opt_batch or max(1, opts.max_batch // 2)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.name, (1, h, w, c), (opt, h, w, c), (opts.max_batch, h, w, c))
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if opts.timing_cache and os.path.exists(opts.timing_cache):
        with open(opts.timing_cache, "rb") as f:
            cache_bytes = f.read()
        log.info("timing cache: read %d bytes from %s", len(cache_bytes), opts.timing_cache)
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one",
                    opts.timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), True)
    return config


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
