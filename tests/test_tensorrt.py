"""TensorRT builder and runtime against fakes of the 10.3 (JetPack 6), 10.13+ and 11.x APIs.

Each test runs once per API series; a member the real API of that series lacks is absent from
its fake, so calling it fails the test. Real-hardware tests at the end run only where TensorRT
and a GPU exist.
"""

import json
import os
import threading

import numpy as np
import pytest

import fakes
from ganomaly_edge.engine import BundleError, load, open_bundle

SERIES = ["10.3", "10.13", "11"]


@pytest.fixture(params=SERIES)
def trt_fake(request, monkeypatch):
    trt, state = fakes.install(monkeypatch, request.param)
    return request.param, trt, state


def _build(bundle_path, precision="fp32", max_batch=4, cache=None):
    from ganomaly_edge.engine.trt_build import BuildOptions, build_into_bundle

    return build_into_bundle(open_bundle(bundle_path),
                             BuildOptions(precision=precision, max_batch=max_batch, timing_cache=cache,
                                          progress=False))


def test_fake_matches_documented_api(trt_fake):
    series, trt, _ = trt_fake
    if series == "11":
        for missing in ("FP16", "INT8", "BF16"):
            assert not hasattr(trt.BuilderFlag, missing)
        assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
        assert not hasattr(trt.IBuilderConfig, "int8_calibrator")
        assert not hasattr(trt.ICudaEngine, "device_memory_size")
    else:
        assert hasattr(trt.BuilderFlag, "FP16")
        assert hasattr(trt.BuilderFlag, "FP4") == (series == "10.13")
    for gone in ("max_batch_size", "build_engine", "build_cuda_engine"):
        assert not hasattr(trt.Builder, gone)
    for gone in ("num_bindings", "get_binding_shape", "max_batch_size"):
        assert not hasattr(trt.ICudaEngine, gone)
    assert not hasattr(trt.IExecutionContext, "execute_async_v2")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run(trt_fake, tiny_bundle, precision, tmp_path):
    series, trt, state = trt_fake
    cache = str(tmp_path / "timing.cache")
    entry = _build(tiny_bundle, precision, max_batch=4, cache=cache)
    assert entry.tensorrt_version == trt.__version__ and entry.gpu_name == "NVIDIA Orin"
    assert entry.compute_capability == "8.7" and entry.precision == precision
    assert entry.parity["max_score_diff_calibrated"] <= (0.05 if precision == "fp16" else 2e-3)
    assert ("create_network", 0) in trt.calls  # explicit batch, no flag
    if precision == "fp16":
        if series == "11":
            assert entry.fp16_mode == "fp16-typed-graph"
            assert ("set_flag", "FP16") not in trt.calls
        else:
            assert entry.fp16_mode == "builder-flag" and ("set_flag", "FP16") in trt.calls
    assert os.path.getsize(cache) > 0
    # The timing cache is read back on the next build.
    before = os.path.getsize(cache)
    _build(tiny_bundle, precision, max_batch=4, cache=cache)
    assert [c for c in trt.calls if c[0] == "set_timing_cache"][-1][1] == before

    meta = json.load(open(os.path.join(tiny_bundle, "bundle.json")))
    assert len(meta["plans"]) == 1 and meta["plans"][0]["sha256"]
    eng = load(tiny_bundle)  # auto picks the matching plan
    assert eng.backend == "tensorrt" and eng.precision == precision and eng.max_batch == 4
    ref = open_bundle(tiny_bundle).reference()
    ort = load(tiny_bundle, "onnxruntime")
    s, r = eng.infer(ref["inputs"][:4])
    so, ro = ort.infer(ref["inputs"][:4])
    tol = 0.05 if precision == "fp16" else 1e-5
    assert np.abs(eng.calibrated(s) - ort.calibrated(so)).max() < tol
    assert r.shape == ro.shape
    eng.close()


def test_inference_from_another_thread(trt_fake, tiny_bundle):
    _build(tiny_bundle)
    eng = load(tiny_bundle, "tensorrt")
    x = open_bundle(tiny_bundle).reference()["inputs"][:2]
    out, err = [], []

    def work():
        try:
            out.append(eng.infer(x)[0])
        except Exception as e:  # surfaced in the assertion below
            err.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not err, err
    assert np.allclose(out[0], eng.infer(x)[0])
    eng.close()


def test_context_stack_is_empty_after_close(trt_fake, tiny_bundle):
    _, _, state = trt_fake
    _build(tiny_bundle)
    eng = load(tiny_bundle, "tensorrt")
    eng.infer(open_bundle(tiny_bundle).reference()["inputs"][:1])
    eng.close()
    assert state.stack() == []
    assert state.retained == 0


def test_batch_beyond_profile_is_refused(trt_fake, tiny_bundle):
    from ganomaly_edge.engine import FrameError

    _build(tiny_bundle, max_batch=2)
    eng = load(tiny_bundle, "tensorrt")
    with pytest.raises(FrameError, match="exceeds this engine's maximum 2"):
        eng.infer(np.zeros((3, 16, 16, 1), np.uint8))


def test_plan_for_another_gpu(monkeypatch, tiny_bundle):
    fakes.install(monkeypatch, "10.3", gpu_name="NVIDIA H100 80GB HBM3", cc=(9, 0))
    _build(tiny_bundle)
    fakes.install(monkeypatch, "10.3", gpu_name="NVIDIA Orin")
    eng = load(tiny_bundle)  # auto: no matching plan -> ONNX Runtime, with the reason logged
    assert eng.backend == "onnxruntime"
    with pytest.raises(BundleError, match="no TensorRT plan for NVIDIA Orin.*build one on this device"):
        load(tiny_bundle, "tensorrt")
    from ganomaly_edge.engine.backends.tensorrt import TensorRTEngine

    b = open_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="built for NVIDIA H100.*rebuild on this device with"):
        TensorRTEngine(b, b.plans[0])


def test_plan_for_another_tensorrt_version(monkeypatch, tiny_bundle):
    fakes.install(monkeypatch, "10.13")
    _build(tiny_bundle)
    fakes.install(monkeypatch, "11")
    from ganomaly_edge.engine.backends.tensorrt import TensorRTEngine

    b = open_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="built with TensorRT 10.13.3.9, this device has TensorRT 11.1.0.7"):
        TensorRTEngine(b, b.plans[0])


def test_truncated_plan(trt_fake, tiny_bundle):
    entry = _build(tiny_bundle)
    p = os.path.join(tiny_bundle, entry.file)
    data = open(p, "rb").read()
    open(p, "wb").write(data[:100])
    with pytest.raises(BundleError, match="does not match its recorded hash"):
        load(tiny_bundle, "tensorrt")


def test_plan_that_does_not_deserialise(trt_fake, tiny_bundle):
    """A plan whose hash matches but that TensorRT rejects: a clear error, never a crash."""
    from ganomaly_edge.engine.bundle import sha256_file

    entry = _build(tiny_bundle)
    p = os.path.join(tiny_bundle, entry.file)
    open(p, "wb").write(b"garbage" * 10)
    meta = json.load(open(os.path.join(tiny_bundle, "bundle.json")))
    meta["plans"][0]["sha256"] = sha256_file(p)
    json.dump(meta, open(os.path.join(tiny_bundle, "bundle.json"), "w"))
    with pytest.raises(BundleError, match="could not deserialise.*Magic tag does not match.*rebuild"):
        load(tiny_bundle, "tensorrt")


def test_build_engine_cli_with_tensorrt(trt_fake, tiny_bundle, capsys):
    from ganomaly_edge.train.build_engine import main

    assert main([tiny_bundle, "--out", tiny_bundle, "--precision", "fp16", "--max-batch", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fp16 plan for NVIDIA Orin" in out and "parity vs reference" in out
    assert load(tiny_bundle).backend == "tensorrt"


# -- real hardware ---------------------------------------------------------------------------

def _real_trt():
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _real_trt(), reason="needs TensorRT and a CUDA GPU (runs on the device, not in CI)")
def test_real_tensorrt_build_and_run(tiny_bundle):
    for precision in ("fp32", "fp16"):
        _build(tiny_bundle, precision)
        eng = load(tiny_bundle, "tensorrt", precision=precision)
        assert eng.selftest_report["passed"]
        eng.close()
