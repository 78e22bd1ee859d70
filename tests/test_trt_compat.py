"""The TensorRT compatibility check of exported graphs (engine/trt_compat.py): every score head the
project can export passes on every supported series, fp32 and fp16; graphs TensorRT rejects fail."""

import os

import numpy as np
import pytest

from support.data import make_checkpoint
from ganomaly_edge.engine.trt_compat import SERIES, UnsupportedTensorRT, check_bundle_graph, check_graph, series_of


def _graph(nodes, inputs, outputs, inits=()):
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("score", ["latent", "recon", "features", "knn", "fknn", "peak", "knn+fknn+peak"])
def test_every_score_head_passes_for_every_series(score, tmp_path):
    from ganomaly_edge.train.export import checkpoint_to_bundle

    # An untrained peak saturates, and standardising by its tiny spread turns rounding into noise.
    ck = make_checkpoint(tmp_path / "m.pt", size=16, epochs=1 if "+" in score else 0, score=score)
    b = checkpoint_to_bundle(ck, str(tmp_path / "b"))
    report = check_bundle_graph(open(os.path.join(b.path, "model.onnx"), "rb").read())
    assert set(report) == {f"{s}/{p}" for s in SERIES for p in ("fp32", "fp16")}
    assert all(v == [] for v in report.values()), report


def test_uint8_only_into_cast_and_only_to_float():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 8, 8, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])
    bad = _graph([helper.make_node("Transpose", ["images"], ["t"], perm=[0, 3, 1, 2]),
                  helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)], [x], [y])
    good = _graph([helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
                   helper.make_node("Transpose", ["f"], ["y"], perm=[0, 3, 1, 2])], [x], [y])
    for series in SERIES:
        assert any("feeds a Transpose" in e for e in check_graph(bad, series))
        assert check_graph(good, series) == []
    yi = helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 8, 8, 1])
    to_int = _graph([helper.make_node("Cast", ["images"], ["y"], to=TensorProto.INT32)], [x], [yi])
    assert any("only to and from FLOAT or HALF" in e for e in check_graph(to_int, "10.3"))


def test_strongly_typed_networks_refuse_mixed_float_inputs():
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((1, 4), np.float16), "w")
    g = _graph([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [w])
    assert any("mixes" in e for e in check_graph(g, "10.3", strongly_typed=True))
    assert not any("mixes" in e for e in check_graph(g, "8.6", strongly_typed=False))


def test_constant_axes_and_topk_rules():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    g = _graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], [x, axes], [y])
    assert any("(axes) must be a constant" in e for e in check_graph(g, "10.3"))
    assert check_graph(g, "8.6") == []  # 8.6's matrix has no such restriction for ReduceSum
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 2])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2])
    t = _graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0)], [x, k], [v, i])
    errs = check_graph(t, "11")
    assert any("sorted=1" in e for e in errs) and any("K must be a constant" in e for e in errs)


def test_unknown_operators_fail_until_looked_up():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    g = _graph([helper.make_node("Hardmax", ["x"], ["y"])], [x], [y])
    assert any("not in the TensorRT 10.3 support matrix" in e for e in check_graph(g, "10.3"))


@pytest.mark.parametrize("version,series", [("8.6.2.3", "8.6"), ("8.6.1", "8.6"), ("10.3.0", "10.3"),
                                            ("10.7.0.23", "10.3"), ("10.13.3.9", "10.13"),
                                            ("10.16.1.11", "10.13"), ("11.1.0.7", "11")])
def test_series_of_versions(version, series):
    assert series_of(version) == series


@pytest.mark.parametrize("version", ["8.5.2.2", "8.2.1", "7.1.3", "9.3.0"])
def test_older_or_unchecked_series_are_refused(version):
    with pytest.raises(UnsupportedTensorRT, match=version):
        series_of(version)
