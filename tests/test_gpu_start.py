"""What the agent does when the GPU fails at start: with backend = "tensorrt" an exit status the
systemd unit restarts (with a growing wait), never the configuration error's 2; with "auto" a CPU
run that says so in the log, the systemd status, the stats and a gauge."""

import os
import sys

import pytest

from support import fakes
from support.deploy import directive


def _config(tmp_path, bundle, backend):
    scans = tmp_path / "scans"
    scans.mkdir(exist_ok=True)
    cfg = tmp_path / f"{backend}.toml"
    cfg.write_text(f'device_id = "gpu-test"\n[model]\nbundle = "{bundle}"\nbackend = "{backend}"\n[mqtt]\nport = 1\n'
                   f'[store]\npath = "{tmp_path}/state/events.db"\n[[cameras]]\nname = "c"\n[cameras.source]\n'
                   f'kind = "folder"\nuri = "{scans}"\nwatch = false\n')
    (tmp_path / "state").mkdir(exist_ok=True)
    return str(cfg)


def _broken_gpu(monkeypatch, tiny_bundle):
    """A plan built while the GPU worked, then a driver that fails to initialise (a new process)."""
    from ganomaly_edge.engine import cuda
    from ganomaly_edge.engine.trt_build import BuildOptions, build_into_bundle
    from ganomaly_edge.engine import open_bundle

    fakes.install(monkeypatch, "10.3")
    build_into_bundle(open_bundle(tiny_bundle), BuildOptions(progress=False))
    drv = sys.modules["pycuda.driver"]

    def broken_init(flags=0):
        raise drv.Error("cuInit failed: CUDA_ERROR_NOT_INITIALIZED")

    monkeypatch.setattr(drv, "init", broken_init)
    monkeypatch.setattr(cuda, "_devices", {})


def test_gpu_failure_at_start_exits_with_the_status_systemd_restarts(monkeypatch, tiny_bundle, tmp_path, capsys):
    from ganomaly_edge.agent import cli

    _broken_gpu(monkeypatch, tiny_bundle)
    waits = []
    monkeypatch.setattr("time.sleep", waits.append)
    cfg = _config(tmp_path, tiny_bundle, "tensorrt")
    assert cli.main(["--config", cfg]) == cli.EXIT_GPU != cli.EXIT_CONFIG
    assert cli.main(["--config", cfg]) == cli.EXIT_GPU
    assert waits == [5.0, 10.0]  # doubling while the failures continue
    assert open(tmp_path / "state" / "gpu-start-failures").read().strip() == "2"
    # The unit restarts 75 and only refuses 2.
    assert directive("RestartPreventExitStatus") == ["2"] and directive("Restart") == ["always"]
    assert str(cli.EXIT_GPU) not in directive("RestartPreventExitStatus")[0].split()


def test_backoff_is_capped_and_never_reaches_the_units_start_limit():
    from ganomaly_edge.agent import cli

    first, longest = cli.GPU_BACKOFF_S
    restart = float(directive("RestartSec")[0])
    interval, burst = float(directive("StartLimitIntervalSec")[0]), int(directive("StartLimitBurst")[0])
    waits = [min(first * 2 ** n, longest) for n in range(burst)]
    assert max(waits) == longest
    assert sum(w + restart for w in waits[:burst - 1]) > interval  # burst starts never fit in the interval


def test_a_gpu_failure_is_not_a_configuration_error(monkeypatch, tiny_bundle, tmp_path):
    """A missing plan for this GPU is the configuration's fault (2); the driver failing is not."""
    from ganomaly_edge.agent import cli

    fakes.install(monkeypatch, "10.3")
    cfg = _config(tmp_path, tiny_bundle, "tensorrt")  # the bundle has no plan: build one first
    assert cli.main(["--config", cfg]) == cli.EXIT_CONFIG


def test_auto_falling_back_to_the_cpu_is_in_the_log_status_stats_and_a_gauge(monkeypatch, tiny_bundle, tmp_path,
                                                                              caplog):
    from ganomaly_edge.agent import systemd
    from ganomaly_edge.agent.config import load_settings
    from ganomaly_edge.agent.service import Agent

    _broken_gpu(monkeypatch, tiny_bundle)
    notes = []
    monkeypatch.setattr(systemd, "notify", lambda state: notes.append(state) or True)
    with caplog.at_level("WARNING"):
        agent = Agent(load_settings(_config(tmp_path, tiny_bundle, "auto")), connect=False)
        agent.start()
    try:
        stats = agent.stats()
        cam = stats["cameras"]["c"]
        assert cam["backend"] == "onnxruntime" and cam["device"] == "the CPU" and "cuInit failed" in cam["fallback"]
        assert stats["tensorrt_fallbacks"] == 1
        assert any(n.startswith("READY=1") and "on the CPU (TensorRT fallback" in n for n in notes), notes
        assert "running on the CPU, not on TensorRT" in caplog.text
    finally:
        agent.stop()
        agent.shutdown(0.5)


def test_a_healthy_start_clears_the_failure_count(monkeypatch, tiny_bundle, tmp_path):
    from ganomaly_edge.agent import cli

    cfg = _config(tmp_path, tiny_bundle, "onnxruntime")
    counter = tmp_path / "state" / "gpu-start-failures"
    counter.write_text("3\n")
    exits = []
    monkeypatch.setattr(cli, "_exit_after_stop", exits.append)
    cli.main(["--config", cfg, "--flush-timeout", "0.5"])
    assert exits == [0] and not counter.exists()
