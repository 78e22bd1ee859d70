"""``load(bundle, backend)``: pick a backend, load it, and make it prove itself."""

from __future__ import annotations

import logging
from .base import Engine
from .bundle import Bundle, BundleError, open_bundle
from .meta import PlanMeta
from .registry import CHOICES, backend_class

log = logging.getLogger(__name__)


def tensorrt_status() -> tuple[str | None, str | None, str]:
    """(TensorRT version, GPU name, reason) — versions None when unusable, with the reason."""
    try:
        import tensorrt as trt
    except ImportError:
        return None, None, "TensorRT is not installed"
    from .cuda import CudaUnavailable, device_info
    from .trt_compat import UnsupportedTensorRT, series_of

    try:
        series_of(trt.__version__)
        info = device_info(0)
    except (CudaUnavailable, UnsupportedTensorRT) as e:
        return trt.__version__, None, str(e)
    return trt.__version__, info["gpu_name"], "ok"


def matching_plan(bundle: Bundle, trt_version: str, gpu_name: str, precision: str | None = None) -> PlanMeta | None:
    from .backends.tensorrt import plan_mismatch

    plans = [p for p in bundle.plans if plan_mismatch(p, trt_version, gpu_name) is None
             and (precision is None or p.precision == precision)]
    # Prefer fp16 when both exist and no precision is asked for: it is what the build was for.
    plans.sort(key=lambda p: p.precision != "fp16")
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
        raise ValueError(f"backend must be one of {CHOICES}, not {backend!r}")
    b = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, trusted_keys=trusted_keys)
    engine: Engine
    if backend in ("auto", "tensorrt"):
        trt_version, gpu, reason = tensorrt_status()
        plan = matching_plan(b, trt_version, gpu, precision) if gpu else None
        if plan is not None:
            log.info("backend: TensorRT (plan %s matches %s, TensorRT %s)", plan.file, gpu, trt_version)
            engine = backend_class("tensorrt")(b, plan)
        elif backend == "tensorrt":
            if gpu is None:
                raise BundleError(f"TensorRT backend requested but unusable here: {reason}")
            have = ", ".join(f"{p.gpu_name}/TensorRT {p.tensorrt_version}/{p.precision}"
                             for p in b.plans) or "none"
            raise BundleError(f"bundle {b.path} has no TensorRT plan for {gpu} with TensorRT {trt_version} "
                              f"(plans: {have}): build one on this device with 'ganomaly-build-engine "
                              f"{b.path} --out {b.path}'")
        else:
            why = reason if gpu is None else f"no plan for {gpu} with TensorRT {trt_version} in the bundle"
            # TensorRT present but unusable (no pycuda, no GPU, an old release) is a fault to fix,
            # not a quiet CPU fallback.
            (log.warning if trt_version else log.info)("backend: ONNX Runtime on the CPU (%s)", why)
            engine = _onnxruntime(b, threads, providers, spinning)
    else:
        engine = _onnxruntime(b, threads, providers, spinning)
    if self_test:
        try:
            engine.self_test(enforce=not allow_mismatch)
        except BaseException:
            engine.close()
            raise
    return engine


def _onnxruntime(b: Bundle, threads: int, providers: list[str] | None, spinning: bool = True) -> Engine:
    return backend_class("onnxruntime")(b, threads=threads, providers=providers, spinning=spinning)
