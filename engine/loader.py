"""``load(bundle, backend)``: pick a backend, load it, and make it prove itself."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .base import Engine
from .bundle import Bundle, BundleError, open_bundle
from .meta import PlanMeta
from .registry import CHOICES, UnknownBackend, backend_class

log = logging.getLogger(__name__)


class GpuUnavailable(BundleError):
    """TensorRT and pycuda are installed but the GPU or its driver failed (no device, CUDA
    initialisation or allocation failed): a fault of the moment, not of the configuration, so the
    agent exits with a status its systemd unit restarts."""


@dataclass(frozen=True)
class TensorRTProbe:
    version: str | None  # None: TensorRT is not installed
    gpu: str | None  # None: unusable, see reason
    compute_capability: str | None
    reason: str
    multiprocessors: int | None = None
    gpu_fault: bool = False  # the GPU or driver failed (retry later), rather than a package missing


def tensorrt_probe() -> TensorRTProbe:
    """What this machine offers TensorRT: its version, the GPU and its compute capability."""
    try:
        import tensorrt as trt
    except ImportError:
        return TensorRTProbe(None, None, None, "TensorRT is not installed")
    except Exception as e:  # a broken install (a missing libnvinfer) is reported, not raised
        return TensorRTProbe(None, None, None, f"TensorRT does not import ({type(e).__name__}: {e})")
    from .cuda import CudaUnavailable, device_info
    from .trt_compat import UnsupportedTensorRT, series_of

    try:
        series_of(trt.__version__)
        info = device_info(0)
    except UnsupportedTensorRT as e:
        return TensorRTProbe(trt.__version__, None, None, str(e))
    except CudaUnavailable as e:
        return TensorRTProbe(trt.__version__, None, None, str(e), gpu_fault=e.fault)
    return TensorRTProbe(trt.__version__, info["gpu_name"], info["compute_capability"], "ok",
                         multiprocessors=info["multiprocessors"])


def tensorrt_status() -> tuple[str | None, str | None, str]:
    """(TensorRT version, GPU name, reason) — versions None when unusable, with the reason."""
    p = tensorrt_probe()
    return p.version, p.gpu, p.reason


def matching_plan(bundle: Bundle, trt_version: str, gpu_name: str, precision: str | None = None,
                  compute_capability: str | None = None, multiprocessors: int | None = None) -> PlanMeta | None:
    from .backends.tensorrt import plan_mismatch

    plans = [p for p in bundle.plans
             if plan_mismatch(p, trt_version, gpu_name, compute_capability, multiprocessors) is None
             and (precision is None or p.precision == precision)]
    # Prefer fp16 when both exist and no precision is asked for: it is what the build was for;
    # then a DLA plan, which someone built on purpose.
    plans.sort(key=lambda p: (p.precision != "fp16", p.dla_core is None))
    return plans[0] if plans else None


def load(bundle: str | Bundle, backend: str = "auto", *, threads: int = 0, precision: str | None = None,
         allow_mismatch: bool = False, self_test: bool = True, providers: list[str] | None = None,
         spinning: bool = True, trusted_keys: list[str] | None = None,
         openvino_precision: str = "auto", openvino_threads: int = 0) -> Engine:
    """Load a bundle on a backend and run its self-test against the reference outputs. ``auto`` takes
    a TensorRT plan built for this GPU and TensorRT version when there is one, else the faster CPU
    backend (``cpu_race``), and logs which and why. With ``trusted_keys`` only a bundle signed by
    one of them loads (engine/signing.py)."""
    if backend not in CHOICES:
        raise UnknownBackend(f"backend must be one of {CHOICES}, not {backend!r}")
    b = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, trusted_keys=trusted_keys)
    engine: Engine
    fallback = None
    cpu = CpuOptions(threads, providers, spinning, openvino_precision, openvino_threads or threads,
                     race=backend == "auto")
    if backend == "openvino":
        engine = backend_class("openvino")(b, threads=cpu.openvino_threads, precision=openvino_precision)
    elif backend in ("auto", "tensorrt"):
        probe = tensorrt_probe()
        trt_version, gpu, reason = probe.version, probe.gpu, probe.reason
        plan = (matching_plan(b, trt_version, gpu, precision, probe.compute_capability, probe.multiprocessors)
                if gpu else None)
        if plan is not None:
            log.info("backend: TensorRT (plan %s matches %s sm %s, TensorRT %s)", plan.file, gpu,
                     probe.compute_capability, trt_version)
            try:
                engine = backend_class("tensorrt")(b, plan)
            except GpuUnavailable as e:
                if backend == "tensorrt":
                    raise
                fallback = str(e)
                log.warning("backend: falling back to the CPU: %s", e)
                engine = _cpu(b, cpu)
        elif backend == "tensorrt":
            if gpu is None:
                cls = GpuUnavailable if probe.gpu_fault else BundleError
                raise cls(f"TensorRT backend requested but unusable here: {reason}")
            have = ", ".join(f"{p.gpu_name}/TensorRT {p.tensorrt_version}/{p.precision}"
                             for p in b.plans) or "none"
            raise BundleError(f"bundle {b.path} has no TensorRT plan for {gpu} with TensorRT {trt_version} "
                              f"(plans: {have}): build one on this device with 'ganomaly-build-engine "
                              f"{b.path} --out {b.path}'")
        else:
            engine, fallback = _cpu_instead(b, cpu, probe)
    else:
        engine = _cpu(b, cpu)
    engine.fallback = fallback
    if self_test:
        try:
            engine.self_test(enforce=not allow_mismatch)
        except BaseException:
            engine.close()
            raise
    return engine


def _cpu_instead(b: Bundle, cpu: "CpuOptions", probe: TensorRTProbe) -> tuple[Engine, str | None]:
    """The CPU engine where ``auto`` finds no usable plan, and the fallback reason to record.
    TensorRT present but unusable (no pycuda, no GPU, an old release) is a fault to fix, not a
    quiet fallback: a warning, and the engine carries the reason into stats."""
    why = (probe.reason if probe.gpu is None else f"no plan for {probe.gpu} (sm {probe.compute_capability}) with "
           f"TensorRT {probe.version} in the bundle")
    engine = _cpu(b, cpu)
    (log.warning if probe.version else log.info)(
        "backend: %s on %s (%s)", NAMES.get(engine.backend, engine.backend), engine.device, why)
    return engine, (why if probe.version else None)


NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}  # for the log


@dataclass(frozen=True)
class CpuOptions:
    threads: int = 0
    providers: list[str] | None = None
    spinning: bool = True
    openvino_precision: str = "auto"
    # OpenVINO takes one caller at a time, so the agent gives it every core (ONNX Runtime's
    # ``threads`` are per worker, one worker per core by default): agent/service.py.
    openvino_threads: int = 0
    race: bool = False  # "auto": time ONNX Runtime against OpenVINO (when installed) and keep the faster


# The race: this many interleaved rounds of one call each (a frame's tiles, or one input), after one
# warm-up call per engine; the median decides. OpenVINO must be this much faster to be taken, so that
# noise on a busy machine does not flip the choice between two equal backends.
RACE_ROUNDS = 5
RACE_MARGIN = 0.03


def _cpu(b: Bundle, o: CpuOptions) -> Engine:
    """ONNX Runtime; with ``race`` and OpenVINO installed (and ONNX Runtime on the CPU, not a GPU
    provider), whichever of the two is faster on this bundle here."""
    from .backends.openvino import openvino_available

    ort = backend_class("onnxruntime")(b, threads=o.threads, providers=o.providers, spinning=o.spinning)
    if not o.race or not openvino_available() or ort.providers[0] != "CPUExecutionProvider":
        return ort
    try:
        ov = backend_class("openvino")(b, threads=o.openvino_threads, precision=o.openvino_precision)
    except BundleError as e:
        log.warning("backend: OpenVINO is installed but cannot run %s (%s): ONNX Runtime", b.path, e)
        return ort
    t_ort, t_ov = cpu_race(ort, ov)
    # ONNX Runtime takes concurrent callers: with fewer threads than OpenVINO's, that many more
    # workers share the cores, so its time per input is its call time over that ratio.
    share = min(1.0, ort.threads / max(ov.threads, 1))
    keep, drop = (ov, ort) if t_ov < t_ort * share * (1 - RACE_MARGIN) else (ort, ov)
    drop.close()
    log.info("backend: %s on the CPU (auto: median %.1f ms ONNX Runtime with %d thread(s) a worker, %.1f ms per "
             "call for the cores; %.1f ms OpenVINO %s with %d; per call of %d input(s), %d interleaved rounds)",
             keep.backend, 1e3 * t_ort, ort.threads, 1e3 * t_ort * share, 1e3 * t_ov, ov.precision, ov.threads,
             keep.tiling.count, RACE_ROUNDS)
    keep.race = {"onnxruntime_ms": 1e3 * t_ort, "onnxruntime_ms_all_workers": 1e3 * t_ort * share,
                 "openvino_ms": 1e3 * t_ov}
    return keep


def cpu_race(a: Engine, b: Engine, rounds: int = RACE_ROUNDS) -> tuple[float, float]:
    """Median seconds per call of ``a`` and ``b`` on the bundle's reference inputs (one frame's worth
    of tiles), in interleaved rounds after a warm-up call each."""
    import time

    import numpy as np

    x = a.bundle.reference()["inputs"]
    n = a.tiling.count
    x = np.ascontiguousarray(np.resize(x, (n, *x.shape[1:])))
    times: tuple[list[float], list[float]] = ([], [])
    for e in (a, b):
        e.infer(x)
    for _ in range(rounds):
        for e, t in zip((a, b), times):
            t0 = time.perf_counter()
            e.infer(x)
            t.append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))
