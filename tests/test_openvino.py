"""The OpenVINO backend (issue 34) with the real OpenVINO runtime: its self-test on fp32 and INT8
bundles, what ``auto`` picks and why, a clear message without OpenVINO, and the agent end to end on
it with a real mosquitto broker on loopback."""

import logging
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ganomaly_edge.engine import BundleError, load
from support.agent import Subscriber, start_agent, write_config

ov = pytest.importorskip("openvino", reason="the [openvino] extra is not installed")


def test_openvino_runs_the_bundle_and_passes_its_self_test(tiny_bundle):
    eng = load(tiny_bundle, "openvino")
    assert eng.backend == "openvino" and eng.precision == "fp32"
    rep = eng.selftest_report
    assert rep["passed"] and rep["max_score_diff_calibrated"] <= 2e-3 and rep["tolerance"]["score"] == 2e-3
    x = np.random.default_rng(0).integers(0, 256, (5, *eng.spec.shape), dtype=np.uint8)
    s, r = eng.infer(x)
    so, ro = load(tiny_bundle, "onnxruntime").infer(x)
    assert s.shape == (5,) and r.shape == ro.shape
    assert np.abs(eng.calibrated(s) - eng.calibrated(so)).max() < 2e-3
    assert eng.describe()["backend"] == "openvino"


def test_openvino_runs_an_int8_bundle_in_int8(int8_bundle):
    eng = load(int8_bundle, "openvino")
    assert eng.precision == "int8" and eng.selftest_report["passed"]


TILED = Path(__file__).resolve().parents[1] / "engine" / "selfcheck-bundles" / "tiled"


def same_scores(a, b) -> bool:
    """Calibrated scores equal within the self-test's 2e-3, relative above 1 (the threshold)."""
    return bool(np.all(np.abs(a - b) <= 2e-3 * np.maximum(1.0, np.abs(b))))


class Counting:
    """An OpenVINO infer request that counts its calls and can skew its scores (a compile gone wrong)."""

    def __init__(self, request, skew: float = 0.0):
        self.request, self.skew, self.calls = request, skew, 0

    def infer(self, inputs):
        self.calls += 1
        res = self.request.infer(inputs)
        return Skewed(res, self.skew) if self.skew else res


class Skewed:
    """An infer result whose scores (the 1-D output) are off by ``skew``."""

    def __init__(self, res, skew: float):
        self.res, self.skew = res, skew

    def __getitem__(self, key):
        v = np.asarray(self.res[key])
        return v + self.skew if v.ndim == 1 else v


def test_a_tiled_fp32_bundle_runs_each_frame_through_a_fixed_batch_compile_that_passed_its_self_test(tmp_path):
    shutil.copytree(TILED, tmp_path / "b")
    eng = load(str(tmp_path / "b"), "openvino")
    t = eng.tiling
    assert t.tiled and eng.fixed_batch == t.count and eng.describe()["fixed_batch"] == t.count
    fixed = eng.selftest_report["fixed_batch"]
    assert fixed["passed"] and fixed["n"] == t.count and fixed["max_score_diff_calibrated"] <= 2e-3
    request, score, residual = eng._fixed
    eng._fixed = (spy := Counting(request), score, residual)
    frames = np.random.default_rng(1).integers(0, 256, (3, t.height, t.width, 1), dtype=np.uint8)
    s, maps = eng.score_frames(frames)
    assert spy.calls == 3  # one call per frame, each through the fixed compile
    ref_s, ref_maps = load(str(tmp_path / "b"), "onnxruntime").score_frames(frames)
    # noise frames score far above the threshold (30-50 calibrated units): relative agreement
    assert same_scores(eng.calibrated(s), eng.calibrated(ref_s))
    assert maps.shape == ref_maps.shape and np.abs(maps - ref_maps).max() < 2e-3
    eng.infer(eng.tiling.split(frames[:1])[:5])  # any other batch: the dynamic compile
    assert spy.calls == 3


def test_a_fixed_batch_compile_that_scores_differently_is_dropped_and_the_dynamic_one_serves(tmp_path, caplog):
    shutil.copytree(TILED, tmp_path / "b")
    eng = load(str(tmp_path / "b"), "openvino")
    request, score, residual = eng._fixed
    eng._fixed = (Counting(request, skew=1.0), score, residual)  # a whole raw unit off on every score
    with caplog.at_level(logging.WARNING, logger="ganomaly_edge.engine.backends.openvino"):
        rep = eng.self_test()
    assert rep["passed"] and not rep["fixed_batch"]["passed"]
    assert eng.fixed_batch is None and eng._fixed is None
    assert "fixed-batch compile differs" in caplog.text and "dynamic" in caplog.text
    frames = np.random.default_rng(2).integers(0, 256, (1, eng.tiling.height, eng.tiling.width, 1), dtype=np.uint8)
    ref = load(str(tmp_path / "b"), "onnxruntime").score_frames(frames)[0]
    assert same_scores(eng.calibrated(eng.score_frames(frames)[0]), eng.calibrated(ref))


def test_an_untiled_or_int8_bundle_has_no_fixed_batch_compile(tiny_bundle, int8_bundle):
    assert load(tiny_bundle, "openvino").fixed_batch is None
    assert load(int8_bundle, "openvino").fixed_batch is None


def test_bf16_on_a_cpu_without_it_is_refused_with_what_to_do(tiny_bundle):
    caps = [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    if "BF16" in caps:
        eng = load(tiny_bundle, "openvino", openvino_precision="bf16")
        assert eng.precision == "bf16" and eng.selftest_report["tolerance"]["score"] == 5e-2
        return
    with pytest.raises(BundleError, match="no bf16 support") as e:
        load(tiny_bundle, "openvino", openvino_precision="bf16")
    assert '"fp32"' in str(e.value)


def test_auto_races_onnx_runtime_against_openvino_and_says_which_it_took(tiny_bundle, caplog):
    caplog.set_level(logging.INFO, logger="ganomaly_edge.engine.loader")
    eng = load(tiny_bundle, "auto")
    assert eng.backend in ("onnxruntime", "openvino")
    line = next(r.getMessage() for r in caplog.records if "auto: median" in r.getMessage())
    assert line.startswith(f"backend: {eng.backend} on the CPU") and "ms ONNX Runtime" in line and "ms OpenVINO" in line
    assert set(eng.race) == {"onnxruntime_ms", "onnxruntime_ms_all_workers", "openvino_ms"}
    assert eng.selftest_report["passed"]


def test_the_race_counts_onnx_runtime_workers_sharing_the_cores(tiny_bundle):
    """As the agent loads it: ONNX Runtime with 1 thread a worker (one worker per core), OpenVINO,
    which takes one caller at a time, with both cores: ONNX Runtime's time per input is halved."""
    eng = load(tiny_bundle, "auto", threads=1, openvino_threads=2)
    r = eng.race
    assert r["onnxruntime_ms_all_workers"] == pytest.approx(r["onnxruntime_ms"] / 2)
    if eng.backend == "openvino":
        assert eng.threads == 2 and r["openvino_ms"] < r["onnxruntime_ms_all_workers"]
    else:
        assert eng.threads == 1 and r["openvino_ms"] >= 0.97 * r["onnxruntime_ms_all_workers"]


def test_without_openvino_the_backend_says_how_to_install_it_and_auto_keeps_onnx_runtime(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import raises ImportError
    with pytest.raises(BundleError, match=r"pip install 'ganomaly-edge\[openvino\]'"):
        load(tiny_bundle, "openvino")
    assert load(tiny_bundle, "auto").backend == "onnxruntime"


# -- the agent end to end on OpenVINO ------------------------------------------------------------

def test_agent_end_to_end_on_openvino_with_a_real_broker(tiny_bundle, digits, broker, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    x, _ = digits
    frames = list(x[-12:])
    frames[5] = 255 - frames[5]  # an inverted digit among normal ones
    for i, img in enumerate(frames):
        cv2.imwrite(str(scans / f"{i:03d}.png"), cv2.resize(img, (64, 64)))
    cfg = write_config(tmp_path / "agent.toml", broker.port, {"kind": "folder", "uri": str(scans), "watch": False},
                       tmp_path / "ev.db", bundle=tiny_bundle, camera="cam", device_id="ovtest", log_level="INFO",
                       model_extra='backend = "openvino"', prefix="ganomaly/ov", reconnect_s=None, retry_s=None,
                       decision=None, results=None)
    sub = Subscriber(broker.port, "ganomaly/ov", client_id="ov-sub")
    log_path = tmp_path / "agent.log"
    rc = start_agent(cfg, log_path).wait(300)
    log = open(log_path).read()
    assert rc == 0, log
    assert "OpenVINO" in log and "openvino self-test passed" in log
    deadline = time.monotonic() + 10
    while not sub.json("/stats") and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = sub.json("/stats")[-1]
    assert [e["backend"] for e in stats["engines"]] == ["openvino"]
    assert stats["cameras"]["cam"]["frames_processed"] == 12
    sub.close()
