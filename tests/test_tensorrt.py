"""TensorRT builder and runtime against fakes of the 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2), 10.13+
and 11.x APIs.

Each test runs once per API series; a member the real API of that series lacks is absent from
its fake, so calling it fails the test. Real-hardware tests at the end run only where TensorRT
and a GPU exist.
"""

import json
import os
import threading

import numpy as np
import pytest

from support import fakes
from support.data import edit_bundle_meta
from ganomaly_edge.engine import BundleError, load, open_bundle

SERIES = fakes.SERIES


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
        assert not hasattr(trt.ILayer, "precision")
    else:
        assert hasattr(trt.BuilderFlag, "FP16")
        assert hasattr(trt.BuilderFlag, "FP4") == (series == "10.13")
        assert hasattr(trt.ILayer, "precision") and hasattr(trt.ILayer, "set_output_type")
    if series == "8.6":  # release/8.6 bindings: explicit batch is a flag, strong typing does not exist
        assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
        assert not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        assert not hasattr(trt.ICudaEngine, "device_memory_size_v2")
        assert not hasattr(trt.OnnxParser, "supports_model_v2") and not hasattr(trt.ParserError, "node_name")
        assert not hasattr(trt.DataType, "INT64") and not hasattr(trt.DataType, "BF16")
        assert hasattr(trt.IExecutionContext, "execute_async_v2")  # deprecated, still bound
    else:
        assert hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        for gone in ("max_batch_size", "build_engine", "build_cuda_engine"):
            assert not hasattr(trt.Builder, gone)
        for gone in ("num_bindings", "get_binding_shape", "max_batch_size"):
            assert not hasattr(trt.ICudaEngine, gone)
        assert not hasattr(trt.IExecutionContext, "execute_async_v2")
    for needed in ("execute_async_v3", "set_tensor_address", "set_input_shape"):  # from 8.5 on
        assert hasattr(trt.IExecutionContext, needed)
    assert hasattr(trt.ICudaEngine, "get_tensor_profile_shape")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run(trt_fake, tiny_bundle, precision, tmp_path):
    series, trt, state = trt_fake
    cache = str(tmp_path / "timing.cache")
    entry = _build(tiny_bundle, precision, max_batch=4, cache=cache)
    assert entry.tensorrt_version == trt.__version__ and entry.gpu_name == "NVIDIA Orin"
    assert entry.compute_capability == "8.7" and entry.precision == precision
    assert entry.parity["max_score_diff_calibrated"] <= (0.05 if precision == "fp16" else 2e-3)
    flags = [c[1] for c in trt.calls if c[0] == "create_network"]
    ndf = trt.NetworkDefinitionCreationFlag
    if series == "8.6":
        assert flags == [1 << int(ndf.EXPLICIT_BATCH)]  # 8.x networks are implicit batch without it
    else:
        assert flags == [1 << int(ndf.STRONGLY_TYPED)]
    if precision == "fp16":
        if series == "8.6":
            assert entry.fp16_mode == "builder-flag, fp32 score head"
            assert {("set_flag", "FP16"), ("set_flag", "OBEY_PRECISION_CONSTRAINTS")} <= set(trt.calls)
        else:  # 10.x too: a strongly typed FP16 graph whose score head stays fp32, never the FP16 flag
            assert entry.fp16_mode == "fp16-typed-graph"
            assert ("set_flag", "FP16") not in trt.calls
    else:
        assert ("clear_flag", "TF32") in trt.calls
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
    assert state.retained == 1  # the primary context: retained once per process, as autoprimaryctx does
    assert state.leaks == [] and state.pinned_live == 0 and state.streams_live == 0 and state.memory == {}


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
    edit_bundle_meta(tiny_bundle, lambda m: m["plans"][0].__setitem__("sha256", sha256_file(p)))
    with pytest.raises(BundleError, match="could not deserialise.*Magic tag does not match.*rebuild"):
        load(tiny_bundle, "tensorrt")


def test_build_engine_cli_with_tensorrt(trt_fake, tiny_bundle, capsys):
    from ganomaly_edge.train.build_engine import main

    assert main([tiny_bundle, "--out", tiny_bundle, "--precision", "fp16", "--max-batch", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fp16 plan for NVIDIA Orin" in out and "parity vs reference" in out
    assert load(tiny_bundle).backend == "tensorrt"


def _transpose_first_graph():
    """uint8 images -> Transpose -> Cast -> ... : what every bundle exported before the fix held."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 16, 16, 1])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    nodes = [helper.make_node("Transpose", ["images"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["score"], axes=[1, 2, 3], keepdims=0)]
    g = helper.make_graph(nodes, "old", [x], [score])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_fake_parser_rejects_transpose_before_cast(trt_fake):
    series, trt, state = trt_fake
    from ganomaly_edge.engine.cuda import device
    from ganomaly_edge.engine.trt_build import network_flags

    dev = device(0)
    with dev.activate():
        builder = trt.Builder(trt.Logger())
        parser = trt.OnnxParser(builder.create_network(network_flags(trt)), trt.Logger())
        assert not parser.parse(_transpose_first_graph())
    errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
    assert any("t [Transpose]: UINT8 tensor images may only be the input of a Cast" in e for e in errors), errors


def test_86_parser_needs_an_explicit_batch_network(monkeypatch, tiny_bundle):
    trt, state = fakes.install(monkeypatch, "8.6")
    from ganomaly_edge.engine.cuda import device

    with device(0).activate():
        parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
        assert not parser.parse(open(os.path.join(tiny_bundle, "model.onnx"), "rb").read())
    assert "explicit batch" in parser.get_error(0).desc()
    _build(tiny_bundle, "fp16")  # what the builder does on 8.6
    assert load(tiny_bundle, "tensorrt").selftest_report["passed"]


def test_100_load_infer_close_cycles_from_a_worker_thread_leak_nothing(trt_fake, tiny_bundle):
    _, trt, state = trt_fake
    from ganomaly_edge.engine.cuda import device

    _build(tiny_bundle)
    x = open_bundle(tiny_bundle).reference()["inputs"][:2]
    free_before = device(0).memory()[0]
    errors = []

    def cycles():
        try:
            for _ in range(100):
                eng = load(tiny_bundle, "tensorrt", self_test=False)
                eng.infer(x)
                eng.close()
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=cycles)
    t.start()
    t.join()
    assert not errors, errors
    assert state.leaks == [] and state.pinned_live == 0 and state.streams_live == 0
    assert device(0).memory()[0] == free_before and state.memory == {}
    assert state.stack() == [] and state.retained == 1


def test_fake_reports_buffers_freed_after_the_context_is_detached(monkeypatch):
    """The old close(): detach first, then free. pycuda skips both frees silently: a leak."""
    pkg, drv = fakes.make_pycuda()
    drv.init()
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    pinned, stream = drv.pagelocked_empty((4, 4), np.float32), drv.Stream()
    drv.Context.pop()
    ctx.detach()  # not current on this thread: pycuda pushes it and never pops
    assert len(pkg._state.stack()) == 1
    pinned.base.free()
    del stream
    assert len(pkg._state.leaks) == 2 and "cuMemFreeHost skipped" in pkg._state.leaks[0]


def test_timing_cache_that_tensorrt_cannot_read_or_refuses(trt_fake, tiny_bundle, tmp_path, caplog):
    _, trt, _ = trt_fake
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a timing cache")  # create_timing_cache returns None for it
    with caplog.at_level("WARNING"):
        _build(tiny_bundle, cache=str(cache))
    assert "cannot be read by TensorRT" in caplog.text
    assert cache.read_bytes().startswith(fakes.CACHE_MAGIC)  # replaced by a good one
    cache.write_bytes(fakes.CACHE_MAGIC + b"NVIDIA H100 80GB HBM3\n+++")  # another GPU's
    caplog.clear()
    with caplog.at_level("WARNING"):
        _build(tiny_bundle, cache=str(cache))
    assert "made on another GPU" in caplog.text


def test_one_tensorrt_logger_for_every_builder_and_runtime(trt_fake, tiny_bundle, tmp_path):
    """TensorRT keeps the first logger it is given; a second bundle's errors must still be ours."""
    import shutil

    from ganomaly_edge.engine.bundle import sha256_file

    _, trt, _ = trt_fake
    _build(tiny_bundle)
    load(tiny_bundle, "tensorrt").close()
    other = str(tmp_path / "other")
    shutil.copytree(tiny_bundle, other)
    plan = open_bundle(other).plans[0]
    open(os.path.join(other, plan.file), "wb").write(b"garbage" * 10)
    edit_bundle_meta(other, lambda m: m["plans"][0].__setitem__("sha256", sha256_file(os.path.join(other, plan.file))))
    with pytest.raises(BundleError, match="Magic tag does not match"):
        load(other, "tensorrt")
    assert len({id(lg) for lg in trt.loggers}) == 1


def test_tensorrt_85_of_jetpack_51_is_refused_with_what_to_do(monkeypatch, tiny_bundle):
    trt, _ = fakes.install(monkeypatch, "8.6")
    trt.__version__ = "8.5.2.2"
    with pytest.raises(BundleError, match=r"TensorRT 8.5.2.2 \(JetPack 5.1\) is not supported.*JetPack 6"):
        load(tiny_bundle, "tensorrt")
    eng = load(tiny_bundle)  # auto: ONNX Runtime, with the reason as a warning
    assert eng.backend == "onnxruntime"
    from ganomaly_edge.engine.trt_build import BuildError, BuildOptions, build_plan

    with pytest.raises(BuildError, match="not supported"):
        build_plan(open_bundle(tiny_bundle), BuildOptions(progress=False))


def test_tensorrt_without_pycuda_is_an_error_when_asked_for_and_a_warning_on_auto(monkeypatch, tiny_bundle, caplog):
    import sys

    fakes.install(monkeypatch, "10.3")
    monkeypatch.setitem(sys.modules, "pycuda", None)  # import pycuda -> ImportError
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BundleError, match="pycuda is not installed"):
        load(tiny_bundle, "tensorrt")
    with caplog.at_level("WARNING"):
        assert load(tiny_bundle).backend == "onnxruntime"
    assert "ONNX Runtime on the CPU (pycuda is not installed" in caplog.text


def _shipped(head, tmp_path):
    import shutil

    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

    dst = str(tmp_path / head)
    shutil.copytree(os.path.join(BUNDLE_DIR, head), dst)
    return dst


def test_86_fp16_pins_the_score_head_by_graph_position(monkeypatch, tmp_path):
    """The 8.6 parser names weight layers after their weights and leaves helpers unnamed: pinning by
    name prefix pinned the generator's weights to fp32 and never pinned TopK (it has an INT32 output)."""
    from ganomaly_edge.engine.onnx_fp16 import HALF_SCOPES

    trt, _ = fakes.install(monkeypatch, "8.6")
    bundle = _shipped("knn", tmp_path)
    entry = _build(bundle, "fp16")
    layers = trt.networks[-1].layers
    pinned = [l for l in layers if l._precision == trt.float32]
    assert any(l.weights and l.weights.startswith("generator.") for l in layers)  # weights named after themselves
    assert any(l.name.startswith("(Unnamed Layer*") for l in pinned)  # helpers of the head are pinned too
    assert not [l.name for l in pinned if (l.node or "").startswith(HALF_SCOPES)
                or (l.weights or "").startswith(("generator.", "discriminator."))]
    topk = next(l for l in layers if l.node == "/TopK")
    assert topk in pinned and topk.get_output(0).pinned == trt.float32 and not hasattr(topk.get_output(1), "pinned")
    assert {"/Cast", "/Sub", "/Add", "/ReduceMean_1", "/Mul_3"} <= {l.node for l in pinned}  # input, residual, score
    assert entry.parity["max_score_diff_calibrated"] <= 0.05


@pytest.mark.parametrize("series", ["10.3", "10.13"])
def test_fake_refuses_per_layer_precision_on_a_strongly_typed_network(monkeypatch, tiny_bundle, series):
    trt, _ = fakes.install(monkeypatch, series)
    from ganomaly_edge.engine.cuda import device
    from ganomaly_edge.engine.trt_build import network_flags

    with device(0).activate():
        builder = trt.Builder(trt.Logger())
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, trt.Logger())
        assert parser.parse(open(os.path.join(tiny_bundle, "model.onnx"), "rb").read())
        network.get_layer(network.num_layers - 1).precision = trt.float32
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape("images", (1, 16, 16, 1), (1, 16, 16, 1), (2, 16, 16, 1))
        config.add_optimization_profile(profile)
        assert builder.build_serialized_network(network, config) is None
    assert "API Usage Error" in network.api_errors[0] or network.api_errors


def test_fake_parser_does_not_lean_on_the_projects_check(monkeypatch, trt_fake):
    """With engine/trt_compat.check_graph blinded, the fake still refuses what TensorRT refuses."""
    from ganomaly_edge.engine import trt_compat
    from ganomaly_edge.engine.cuda import device
    from ganomaly_edge.engine.trt_build import network_flags

    _, trt, _ = trt_fake
    monkeypatch.setattr(trt_compat, "check_graph", lambda *a, **k: [])
    with device(0).activate():
        parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(network_flags(trt)), trt.Logger())
        assert not parser.parse(_transpose_first_graph())


def _graphs():
    """Graphs for the cross-check of the two readings of onnx-tensorrt: (name, bytes)."""
    from onnx import TensorProto, helper, numpy_helper

    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR, HEADS
    from ganomaly_edge.engine.trt_compat import graph_for

    out = []
    for head in HEADS:
        raw = open(os.path.join(BUNDLE_DIR, head, "model.onnx"), "rb").read()
        precisions = ("int8",) if head == "int8" else ("fp32", "fp16")  # the INT8 bundle's QDQ graph (issue 34)
        out += [(f"{head}/{s}/{p}", s, graph_for(raw, s, p)) for s in SERIES for p in precisions]

    def g(nodes, ins, outs, inits=()):
        return helper.make_model(helper.make_graph(nodes, "g", ins, outs, initializer=list(inits)),
                                 opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 2])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2])
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    kbig = numpy_helper.from_array(np.array([4000], np.int64), "k")
    for name, topk_k, extra in (("topk", k, {}), ("topk-k4000", kbig, {})):
        out += [(f"{name}/{s}", s, g([helper.make_node("TopK", ["x", "k"], ["v", "i"], **extra)], [x], [v, i], [topk_k]))
                for s in ("10.3", "11")]
    u8 = helper.make_tensor_value_info("u", TensorProto.UINT8, [2, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    out += [(f"hardmax/{s}", s, g([helper.make_node("Hardmax", ["x"], ["y"])], [x], [y])) for s in SERIES]
    out += [(f"u8-relu/{s}", s, g([helper.make_node("Cast", ["u"], ["c"], to=TensorProto.UINT8),
                                   helper.make_node("Relu", ["c"], ["r"]),
                                   helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)], [u8], [y]))
            for s in SERIES]
    return out


@pytest.mark.parametrize("name,series,graph", _graphs(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_fake_parser_and_the_pre_build_check_agree(name, series, graph):
    """Two readings of onnx-tensorrt's operator matrix and TensorRT's type rules, written apart:
    where one accepts what the other refuses, one of them misses a rule (the K < 3840 of TopK on
    10.x was missing from trt_compat)."""
    import onnx

    from ganomaly_edge.engine.trt_compat import SERIES as TRT_SERIES, check_graph

    strong = TRT_SERIES[series].strongly_typed
    fake = fakes.parser_rules(onnx.shape_inference.infer_shapes(onnx.load_from_string(graph)), series, strong)
    ours = check_graph(graph, series, strongly_typed=strong)
    assert bool(fake) == bool(ours), (fake, ours)


def test_a_plan_is_keyed_by_compute_capability_too(monkeypatch, tiny_bundle):
    """Same GPU name, another compute capability: the plan is refused before TensorRT sees it."""
    fakes.install(monkeypatch, "10.3", gpu_name="Orin", cc=(8, 7))
    entry = _build(tiny_bundle)
    assert entry.compute_capability == "8.7" and "_sm8.7_" in entry.file
    fakes.install(monkeypatch, "10.3", gpu_name="Orin", cc=(7, 2))
    from ganomaly_edge.engine.backends.tensorrt import TensorRTEngine

    with pytest.raises(BundleError, match=r"no TensorRT plan for Orin .*build one on this device"):
        load(tiny_bundle, "tensorrt")
    assert load(tiny_bundle).backend == "onnxruntime"
    b = open_bundle(tiny_bundle)
    with pytest.raises(BundleError, match=r"built for Orin with sm 8.7, this device's Orin is sm 7.2.*rebuild"):
        TensorRTEngine(b, b.plans[0])


def test_an_agx_orin_plan_is_not_taken_on_an_orin_nano(monkeypatch, tiny_bundle):
    """Both report "Orin" and sm 8.7; the multiprocessor count (16 against 8) tells them apart."""
    fakes.install(monkeypatch, "10.3", gpu_name="Orin", cc=(8, 7), sms=16)  # AGX Orin
    entry = _build(tiny_bundle)
    assert entry.multiprocessors == 16
    assert open_bundle(tiny_bundle).meta.format_version == 5  # an older agent says "newer: upgrade"
    fakes.install(monkeypatch, "10.3", gpu_name="Orin", cc=(8, 7), sms=8)  # Orin Nano 8 GB
    assert load(tiny_bundle).backend == "onnxruntime"
    from ganomaly_edge.engine.backends.tensorrt import TensorRTEngine

    b = open_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="16 multiprocessors .another module., this one has 8.*rebuild"):
        TensorRTEngine(b, b.plans[0])


def test_dla_build_with_gpu_fallback_recorded_in_the_plan(monkeypatch, tiny_bundle, capsys):
    from ganomaly_edge.train.build_engine import main

    trt, _ = fakes.install(monkeypatch, "10.3", gpu_name="Orin", dla_cores=2)
    assert main([tiny_bundle, "--out", tiny_bundle, "--dla", "1", "--quiet"]) == 0
    assert "DLA core 1 with GPU fallback" in capsys.readouterr().out
    plan = open_bundle(tiny_bundle).plans[0]
    assert plan.dla_core == 1 and plan.file.endswith("_fp16_dla1.plan")
    assert ("set_flag", "GPU_FALLBACK") in trt.calls
    eng = load(tiny_bundle, "tensorrt")
    assert eng.describe()["dla_core"] == 1 and "DLA core 1" in eng.device
    eng.close()
    assert main([tiny_bundle, "--out", tiny_bundle, "--dla", "0", "--precision", "fp32", "--quiet"]) == 2
    assert "--dla needs --precision fp16" in capsys.readouterr().err


def test_dla_is_refused_where_the_device_has_none(monkeypatch, tiny_bundle, capsys):
    from ganomaly_edge.train.build_engine import main

    fakes.install(monkeypatch, "10.3", gpu_name="Orin", dla_cores=0)  # Orin Nano
    assert main([tiny_bundle, "--out", tiny_bundle, "--dla", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has no DLA" in err and "build without --dla" in err
    assert open_bundle(tiny_bundle).plans == []


def test_gpu_failure_is_its_own_error_and_auto_records_the_fallback(monkeypatch, tiny_bundle, caplog):
    """TensorRT and pycuda present, the driver failing: GpuUnavailable (the agent's retry), and with
    auto the CPU engine carries the reason."""
    from ganomaly_edge.engine import GpuUnavailable

    trt, state = fakes.install(monkeypatch, "10.3")
    _build(tiny_bundle)
    import sys

    drv = sys.modules["pycuda.driver"]

    def broken_init(flags=0):
        raise drv.Error("cuInit failed: unknown error")

    monkeypatch.setattr(drv, "init", broken_init)
    from ganomaly_edge.engine import cuda

    monkeypatch.setattr(cuda, "_devices", {})  # a new process: the device is opened afresh
    with pytest.raises(GpuUnavailable, match="cuInit failed"):
        load(tiny_bundle, "tensorrt")
    with caplog.at_level("WARNING"):
        eng = load(tiny_bundle)
    assert eng.backend == "onnxruntime" and "cuInit failed" in eng.fallback
    assert eng.describe()["fallback"] == eng.fallback
    assert "ONNX Runtime on the CPU (CUDA initialisation failed" in caplog.text


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
def test_real_tensorrt_acceptance_check():
    """On a device: the shipped bundles (no torch), fp32 and fp16, every score head."""
    from ganomaly_edge.engine.selfcheck import main

    assert main(["--cycles", "20"]) == 0
