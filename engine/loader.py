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
         spinning: bool = True, trusted_keys: list[str] | None = None) -> Engine:
    """Load a bundle on a backend and run its self-test against the reference outputs.

    ``auto`` takes a TensorRT plan built for this GPU and TensorRT version when there is one,
    else ONNX Runtime, and logs which and why. With ``trusted_keys`` only a bundle signed by one of
    them loads (engine/signing.py).
    """
    if backend not in CHOICES:
        raise UnknownBackend(f"backend must be one of {CHOICES}, not {backend!r}")
    b = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, trusted_keys=trusted_keys)
    engine: Engine
    fallback = None
    if backend in ("auto", "tensorrt"):
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
                log.warning("backend: falling back to ONNX Runtime: %s", e)
                engine = _onnxruntime(b, threads, providers, spinning)
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
            why = (reason if gpu is None else
                   f"no plan for {gpu} (sm {probe.compute_capability}) with TensorRT {trt_version} in the bundle")
            engine = _onnxruntime(b, threads, providers, spinning)
            # TensorRT present but unusable (no pycuda, no GPU, an old release) is a fault to fix,
            # not a quiet fallback: a warning, and the engine carries the reason into stats.
            if trt_version:
                fallback = why
            (log.warning if trt_version else log.info)("backend: ONNX Runtime on %s (%s)", engine.device, why)
    else:
        engine = _onnxruntime(b, threads, providers, spinning)
    engine.fallback = fallback
    if self_test:
        try:
            engine.self_test(enforce=not allow_mismatch)
        except BaseException:
            engine.close()
            raise
    return engine


def _onnxruntime(b: Bundle, threads: int, providers: list[str] | None, spinning: bool = True) -> Engine:
    return backend_class("onnxruntime")(b, threads=threads, providers=providers, spinning=spinning)
