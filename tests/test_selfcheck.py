"""The on-device acceptance check (ganomaly-build-engine --self-check), end to end against the
fakes of every supported TensorRT series, and on this machine without TensorRT. Needs no torch."""

import json
import os

import pytest

import fakes
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR, EXIT_FAILED, EXIT_NO_TENSORRT, EXIT_OK, HEADS, main


@pytest.mark.parametrize("series", fakes.SERIES)
def test_self_check_passes_on_every_series(series, monkeypatch, capsys):
    trt, state = fakes.install(monkeypatch, series)
    assert main(["--cycles", "100", "--reps", "5"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"TensorRT {trt.__version__}" in out and "GStreamer:" in out
    for head in HEADS:
        line = next(ln for ln in out.splitlines() if ln.startswith(f"trt {head} "))
        assert "fp32" in line and "fp16" in line and "FAIL" not in line
    assert "100 load/infer/close from a worker thread" in out and "pinned 0 -> 0 B" in out
    assert "fp16 b1" in out and "onnxruntime b1" in out
    assert out.rstrip().splitlines()[-2].split()[-1] == "PASS"
    assert state.leaks == [] and state.pinned_live == 0


def test_self_check_without_tensorrt_says_so_with_its_own_exit_code(capsys):
    assert main(["--cycles", "0", "--reps", "5"]) == EXIT_NO_TENSORRT
    out = capsys.readouterr().out
    assert "INCOMPLETE: TensorRT is not installed" in out and "onnxruntime    parity" in out


def test_self_check_fails_when_buffers_are_not_freed(monkeypatch, capsys):
    fakes.install(monkeypatch, "10.3")
    from ganomaly_edge.engine import cuda

    monkeypatch.setattr(cuda.Buffers, "release", lambda self: None)  # the leak a bad teardown makes
    assert main(["--cycles", "10", "--reps", "5"]) == EXIT_FAILED
    assert "pinned host memory not freed" in capsys.readouterr().out


def test_shipped_bundles_are_complete_and_one_per_head():
    from ganomaly_edge.engine import open_bundle

    for head in HEADS:
        b = open_bundle(os.path.join(BUNDLE_DIR, head))
        assert b.meta.score.name == head and b.input.shape == (16, 16, 1)
        assert json.load(open(os.path.join(BUNDLE_DIR, head, "bundle.json")))["plans"] == []


def test_build_engine_cli_runs_the_self_check(capsys):
    from ganomaly_edge.train.build_engine import main as cli

    assert cli(["--self-check", "--cycles", "0", "--reps", "3"]) == EXIT_NO_TENSORRT
    assert "==== ganomaly-edge self-check ====" in capsys.readouterr().out


def test_gpu_tests_collect_and_run_without_torch():
    """`pytest -m gpu` on a device: no torch there, so collecting the suite must not need it."""
    import subprocess
    import sys

    from conftest import ROOT
    from test_engine import BLOCK_TORCH

    code = BLOCK_TORCH + ("import pytest\n"
                          "sys.exit(pytest.main(['-m', 'gpu', '-q', '-p', 'no:cacheprovider', 'tests']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "needs TensorRT and a CUDA GPU" in r.stdout and "error" not in r.stdout.lower()
