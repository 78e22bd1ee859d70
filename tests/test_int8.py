"""INT8 bundles (issue 34): the QDQ graph with real ONNX Runtime, its self-test and calibration record,
the refusal of a bundle whose calibration data does not match, and the TensorRT INT8 build against
the fakes of every series (8.6 with the INT8 builder flag; 10.x and 11 strongly typed as it is)."""

import json
import os

import numpy as np
import pytest

from support import fakes
from support.data import calibration_folder
from ganomaly_edge.engine import BundleError, load, open_bundle
from ganomaly_edge.engine.int8 import CALIBRATION_FILE, data_hash, zero_points_nonzero


def _qdq_model(path):
    import onnx

    return onnx.load(os.path.join(path, "model.onnx"))


def test_int8_bundle_records_its_quantisation_and_passes_its_self_test(int8_bundle, tiny_bundle):
    b = open_bundle(int8_bundle)
    q = b.meta.quantization
    assert b.precision == "int8" and b.meta.format_version == 6
    assert q.quantized_nodes > 0 and q.calibration_n > 0 and q.heldout_frames == 12
    with np.load(os.path.join(int8_bundle, CALIBRATION_FILE)) as z:
        assert data_hash(z["tiles"]) == q.calibration_sha256
    fp32 = open_bundle(tiny_bundle)
    assert q.fp32_model_sha256 == fp32.meta.files["model.onnx"] != b.meta.files["model.onnx"]
    m = _qdq_model(int8_bundle)
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert zero_points_nonzero(m.SerializeToString()) == []  # what TensorRT demands
    # the score head stays fp32: nothing quantised feeds TopK or the kNN MatMul directly
    producers = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type in ("TopK", "MatMul", "ReduceMax"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input)
    tol = b.meta.tolerance["int8"]
    eng = load(int8_bundle, "onnxruntime")
    assert eng.precision == "int8" and eng.selftest_report["passed"]
    assert eng.selftest_report["tolerance"] == tol
    # parity with the fp32 graph on the reference inputs, in the INT8 bundle's calibrated units
    ref = fp32.reference()["inputs"]
    s8, r8 = eng.infer(ref)
    s32, r32 = load(tiny_bundle, "onnxruntime").infer(ref)
    assert np.abs(s8 - s32).max() / b.calibration.scale <= tol["score"]
    assert np.abs(r8 - r32).max() <= tol["residual"]
    assert tol["score"] >= 2 * q.measured["max_score_diff_calibrated"] - 1e-12


def test_int8_threshold_is_reset_on_int8_scores(int8_bundle, tiny_bundle):
    c8, c32 = open_bundle(int8_bundle).calibration, open_bundle(tiny_bundle).calibration
    assert c8.method.endswith("int8-shifted") and c8.target_far == c32.target_far
    assert c8.threshold_raw == pytest.approx(c8.median + c8.scale)
    assert (c8.median, c8.threshold_raw) != (c32.median, c32.threshold_raw)
    assert 0.0 <= c8.val_far <= 1.0


def test_int8_threshold_moves_with_the_frames_near_it_not_with_the_low_end():
    """The re-set threshold follows the paired INT8 - fp32 differences of the upper half of the
    held-out frames. A graph that lifts the quietest frames a lot and the loudest a little (what
    INT8 did on a real ELPV network with position statistics) must not lower the threshold."""
    from ganomaly_edge.engine.int8 import shifted_calibration

    rng = np.random.default_rng(0)
    fp32 = np.sort(rng.exponential(1.0, 24))
    int8 = fp32 + np.where(fp32 < np.median(fp32), 1.0, 0.1)
    calib = {"method": "exponential-tail", "median": float(np.median(fp32)), "threshold_raw": 6.0, "scale": 5.0,
             "target_far": 0.01, "mean": 1.0, "std": 1.0}
    c = shifted_calibration(calib, fp32, int8)
    assert c["threshold_raw"] == pytest.approx(6.1)
    assert c["median"] == pytest.approx(calib["median"] + np.median(int8 - fp32))
    assert c["scale"] == pytest.approx(c["threshold_raw"] - c["median"]) and "mean" not in c
    assert c["method"] == "exponential-tail, int8-shifted" and c["val_far"] == pytest.approx(np.mean(int8 > 6.1))
    # identical scores: nothing moves
    same = shifted_calibration(calib, fp32, fp32.copy())
    assert (same["median"], same["threshold_raw"]) == (calib["median"], 6.0)


def test_int8_bundle_whose_calibration_data_hash_does_not_match_is_refused(int8_bundle):
    from support.data import edit_bundle_meta
    from ganomaly_edge.engine.bundle import sha256_file

    path = os.path.join(int8_bundle, CALIBRATION_FILE)
    with np.load(path) as z:
        tiles = z["tiles"].copy()
    tiles[0] = 255 - tiles[0]
    np.savez_compressed(path, tiles=tiles)
    # the file's own hash re-recorded, as a careless edit would: only the data hash can tell
    edit_bundle_meta(int8_bundle, lambda m: m["files"].__setitem__(CALIBRATION_FILE, sha256_file(path)))
    with pytest.raises(BundleError, match="calibration data hash does not match") as e:
        open_bundle(int8_bundle)
    assert "--precision int8" in str(e.value)
    os.remove(path)
    with pytest.raises(BundleError, match=f"{CALIBRATION_FILE} is missing"):
        open_bundle(int8_bundle)


def test_an_int8_record_in_an_older_format_is_refused(int8_bundle):
    from support.data import edit_bundle_meta

    edit_bundle_meta(int8_bundle, lambda m: m.__setitem__("format_version", 5))
    with pytest.raises(BundleError, match="INT8 came in version 6"):
        open_bundle(int8_bundle)


def test_int8_without_calibration_frames_says_what_to_pass(tiny_bundle, tmp_path, capsys):
    from ganomaly_edge.train.build_engine import main

    rc = main([tiny_bundle, "--out", str(tmp_path / "x"), "--precision", "int8", "--no-tensorrt", "--quiet"])
    assert rc == 2 and "--calibration-data" in capsys.readouterr().err


# -- TensorRT INT8 against the fakes --------------------------------------------------------------

@pytest.fixture(params=fakes.SERIES)
def trt_fake(request, monkeypatch):
    trt, state = fakes.install(monkeypatch, request.param)
    return request.param, trt, state


def _build(path, precision):
    from ganomaly_edge.engine.trt_build import BuildOptions, build_into_bundle

    return build_into_bundle(open_bundle(path), BuildOptions(precision=precision, max_batch=4, progress=False))


def test_tensorrt_int8_plan_from_the_qdq_graph(trt_fake, int8_bundle):
    series, trt, _ = trt_fake
    entry = _build(int8_bundle, "int8")
    assert entry.precision == "int8" and entry.file.endswith("_int8.plan")
    if series == "8.6":  # explicit quantization needs the INT8 flag on a weakly typed network
        assert ("set_flag", "INT8") in trt.calls and entry.fp16_mode == "int8-qdq-builder-flag"
    else:  # strongly typed: the graph's own types, no precision flag
        assert ("set_flag", "INT8") not in trt.calls and entry.fp16_mode == "int8-qdq-strongly-typed"
    eng = load(int8_bundle)  # auto takes the plan
    try:
        assert eng.backend == "tensorrt" and eng.precision == "int8" and eng.selftest_report["passed"]
    finally:
        eng.close()
    meta = json.load(open(os.path.join(int8_bundle, "bundle.json")))
    assert [p["precision"] for p in meta["plans"]] == ["int8"]


def test_int8_plan_is_refused_from_an_fp32_bundle_and_fp32_from_an_int8_one(trt_fake, tiny_bundle, int8_bundle):
    from ganomaly_edge.engine.trt_build import BuildError

    with pytest.raises(BuildError, match="quantise it first"):
        _build(tiny_bundle, "int8")
    with pytest.raises(BuildError, match="--precision int8"):
        _build(int8_bundle, "fp16")


def _fake_build(trt, onnx_bytes, flags=()):
    """The fake builder on its own: parse, set ``flags``, build; the plan or None."""
    from ganomaly_edge.engine.backends.tensorrt import trt_logger
    from ganomaly_edge.engine.cuda import device
    from ganomaly_edge.engine.trt_build import network_flags

    with device(0).activate():
        logger = trt_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(onnx_bytes), [parser.get_error(i).desc() for i in range(parser.num_errors)]
        config = builder.create_builder_config()
        for f in flags:
            config.set_flag(getattr(trt.BuilderFlag, f))
        profile = builder.create_optimization_profile()
        name, shape = network.inputs[0][0], network.inputs[0][1]
        full = tuple(d if d > 0 else 1 for d in shape)
        profile.set_shape(name, full, full, full)
        config.add_optimization_profile(profile)
        return builder.build_serialized_network(network, config)


def test_fake_86_refuses_qdq_without_the_int8_flag_and_strong_typing_refuses_the_flag(trt_fake, int8_bundle):
    series, trt, _ = trt_fake
    onnx_bytes = open(os.path.join(int8_bundle, "model.onnx"), "rb").read()
    if series == "8.6":
        assert _fake_build(trt, onnx_bytes) is None
        assert _fake_build(trt, onnx_bytes, ["INT8"]) is not None
    elif series == "11":  # the precision flags are gone from 11's API
        assert not hasattr(trt.BuilderFlag, "INT8")
        assert _fake_build(trt, onnx_bytes) is not None
    else:
        assert _fake_build(trt, onnx_bytes, ["INT8"]) is None
        assert _fake_build(trt, onnx_bytes) is not None


def test_nonzero_zero_point_is_refused_by_the_check_and_by_the_fake_parser(trt_fake, int8_bundle):
    import onnx
    from onnx import numpy_helper

    from ganomaly_edge.engine.trt_compat import check_bundle_graph

    series, trt, _ = trt_fake
    m = _qdq_model(int8_bundle)
    assert not any(check_bundle_graph(m.SerializeToString()).values())
    zp = next(i for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8 and "zero_point" in i.name
              and len(i.dims) == 0)
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))
    bad = m.SerializeToString()
    assert any("zero point must be 0" in p for p in check_bundle_graph(bad)[f"{series}/int8"])
    from ganomaly_edge.engine.backends.tensorrt import trt_logger
    from ganomaly_edge.engine.cuda import device
    from ganomaly_edge.engine.trt_build import network_flags

    with device(0).activate():
        network = trt.Builder(trt_logger(trt)).create_network(network_flags(trt))
        parser = trt.OnnxParser(network, trt_logger(trt))
        assert not parser.parse(bad)
        assert any("zero point" in parser.get_error(i).desc() for i in range(parser.num_errors))


@pytest.mark.parametrize("series", ["8.6", "10.3"])
def test_self_check_builds_the_shipped_int8_bundle_as_int8(monkeypatch, capsys, series):
    from ganomaly_edge.engine import selfcheck

    fakes.install(monkeypatch, series, gpu_name="Orin")
    assert selfcheck.main(["--cycles", "0", "--reps", "3"]) == selfcheck.EXIT_OK
    rows = {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip()
            for line in capsys.readouterr().out.splitlines() if "  " in line and not line.startswith("====")}
    assert rows["result"] == "PASS"
    assert rows["trt int8"].startswith("parity (calibrated units): int8 ") and "fp16" not in rows["trt int8"]
    assert "int8 " in rows["onnxruntime"]


def test_int8_ops_conv_keeps_the_transposed_convolutions_fp32(tiny_bundle, digits, tmp_path):
    from ganomaly_edge.train.build_engine import main

    out = str(tmp_path / "conv-only")
    assert main([tiny_bundle, "--out", out, "--precision", "int8", "--int8-ops", "conv", "--no-tensorrt", "--quiet",
                 "--calibration-data", calibration_folder(tmp_path, digits)]) == 0
    m = _qdq_model(out)
    producers = {o: n for n in m.graph.node for o in n.output}

    def quantised(op):  # int8 weights: the weight input comes from a DequantizeLinear
        return [n for n in m.graph.node if n.op_type == op and producers.get(n.input[1]) is not None
                and producers[n.input[1]].op_type == "DequantizeLinear"]

    assert quantised("Conv") and not quantised("ConvTranspose")
    b = open_bundle(out)
    assert b.meta.quantization.ops == "conv" and load(out, "onnxruntime").selftest_report["passed"]
