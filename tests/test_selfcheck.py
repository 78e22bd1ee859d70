"""``ganomaly-build-engine --self-check``: a complete report whatever is missing, the deployed tiled
recipe built, timed and memory-checked, the power mode and DLA cores in the report."""

import sys

import pytest

from support import fakes
from ganomaly_edge.engine import selfcheck


def _rows(text):
    return {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip()
            for line in text.splitlines() if "  " in line and not line.startswith("====")}


def test_with_tensorrt_every_bundle_and_the_tiled_recipe_is_built_and_measured(monkeypatch, capsys):
    fakes.install(monkeypatch, "10.3", gpu_name="Orin", dla_cores=2)
    assert selfcheck.main(["--cycles", "2", "--reps", "5"]) == selfcheck.EXIT_OK
    rows = _rows(capsys.readouterr().out)
    assert rows["result"] == "PASS"
    assert rows["trt tiled"].startswith("parity (calibrated units): fp32 ") and "fp16" in rows["trt tiled"]
    tiled = rows["tiled"]
    assert tiled.startswith("300x300 in 49 tiles of 64 px (rpeak+knn): 2 frames (98 tiles) per call: fp32 ")
    assert "fp16 " in tiled and "onnxruntime " in tiled and "device memory fp32 " in tiled and " MiB" in tiled
    assert rows["dla"].startswith("2 core(s)")
    assert "power mode" in rows


def test_one_shipped_bundle_per_score_component_from_the_one_list():
    from ganomaly_edge.engine import open_bundle
    from ganomaly_edge.engine.meta import COMPONENTS
    from ganomaly_edge.train import scoring

    assert scoring.COMPONENTS is COMPONENTS and selfcheck.HEADS == COMPONENTS + (selfcheck.TILED, selfcheck.INT8)
    paths = selfcheck.shipped_bundles()
    assert len(paths) == len(selfcheck.HEADS)
    for head, path in zip(COMPONENTS, paths):
        assert open_bundle(path).meta.score.name == head


def test_the_tiled_bundle_is_the_current_tile_recipe():
    """research/selfcheck_tiled.py makes it from ganomaly-train --tile 64's defaults: when the recipe
    changes, this fails until the bundle is made again."""
    from ganomaly_edge.engine import open_bundle
    from ganomaly_edge.train.cli import DEFAULT_TILE_ARCH
    from research.selfcheck_tiled import SCORE
    from ganomaly_edge.train.scoring import AUTO, AUTO_CANDIDATES, DEFAULT_TILE_SCORE, CANDIDATES

    b = open_bundle(selfcheck.BUNDLE_DIR + "/tiled")
    # the tile default chooses among candidates: the bundle holds the one with every head they use
    assert DEFAULT_TILE_SCORE == AUTO and SCORE in AUTO_CANDIDATES
    heads = {c for name in AUTO_CANDIDATES for c, _ in CANDIDATES[name]} - {"peak"}  # peak: a pooling of |x - G(x)|
    assert {c for c, _ in CANDIDATES[SCORE]} == heads
    assert b.meta.score.name == SCORE and b.meta.score.residual == "range-knn"
    assert b.tiling.count == 49 and b.tiling.tile == 64
    assert b.meta.checkpoint["config"]["arch"] == DEFAULT_TILE_ARCH
    assert b.meta.tiling.position_mean is not None  # position statistics


def test_without_onnxruntime_the_report_is_complete_and_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert selfcheck.main(["--cycles", "0", "--reps", "3"]) == selfcheck.EXIT_FAILED
    out = capsys.readouterr().out
    assert out.rstrip().endswith("==== end ====")
    rows = _rows(out)
    assert rows["onnxruntime"].startswith("not run") and "ONNX Runtime absent" in rows["libraries"]
    assert "pip install onnxruntime" in rows["result"] and "no CPU fallback" in rows["result"]


def test_without_tensorrt_it_exits_3_after_the_whole_report(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert selfcheck.main(["--cycles", "0", "--reps", "3"]) == selfcheck.EXIT_NO_TENSORRT
    rows = _rows(capsys.readouterr().out)
    assert rows["result"] == "INCOMPLETE: TensorRT is not installed"
    assert rows["tiled"].startswith("300x300 in 49 tiles") and "onnxruntime " in rows["tiled"]


def test_power_mode_from_nvpmodel(monkeypatch):
    import subprocess

    monkeypatch.setattr(selfcheck.shutil, "which", lambda name: "/usr/sbin/nvpmodel")
    out = "NV Power Mode: MAXN\n0\n"
    run = lambda *a, **k: subprocess.CompletedProcess(a, 0, out, "")  # noqa: E731
    assert selfcheck.power_mode(run) == "MAXN (0)"
    monkeypatch.setattr(selfcheck.shutil, "which", lambda name: None)
    assert selfcheck.power_mode(run).startswith("unknown (nvpmodel not found")


def test_build_engine_without_onnx_says_what_to_install(monkeypatch, tiny_bundle, capsys):
    """JetPack has no onnx: the pre-build check needs it, and says so instead of a traceback."""
    from ganomaly_edge.train.build_engine import main

    fakes.install(monkeypatch, "10.3")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main([tiny_bundle, "--out", tiny_bundle, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs the onnx package" in err and "pip install" in err
