"""A run that trained too little (train/adequacy.py) warns loudly and says what to do, and the
warning travels: checkpoint -> bundle -> ganomaly-eval, ganomaly-agent --check-config and the
agent at start. Real tiny runs of the commands on real digits, a real mosquitto."""

import json
import os
import subprocess
import sys

import pytest

from support.agent import start_agent, write_config
from support.data import ROOT, digits_u8, write_images
from ganomaly_edge.train.adequacy import MIN_EPOCHS, MIN_STEPS, training_warnings


def _epochs(losses, batches=200):
    return [{"batches": batches, "val_con": v} for v in losses]


def test_enough_training_with_a_falling_loss_is_not_warned():
    assert training_warnings(_epochs([0.30, 0.20, 0.15, 0.14]), n_train=5000) == []


def test_too_few_steps_or_epochs_is_warned_with_what_to_do():
    (w,) = training_warnings(_epochs([0.3], batches=3), n_train=900, stopped_by_time=True)
    assert "trained too little: 3 optimisation steps in 1 epoch(s) on 900 images" in w
    assert "--time-budget ran out" in w and "--resume" in w and "ganomaly-eval" in w
    assert training_warnings(_epochs([0.3, 0.2], batches=1000), 10)[0].startswith("trained too little")  # 2 epochs
    few_steps = _epochs([0.3, 0.2, 0.1, 0.05], batches=(MIN_STEPS - 1) // 4)
    assert len(training_warnings(few_steps, 50)) == 1
    assert training_warnings(_epochs([0.3, 0.2, 0.1], batches=MIN_STEPS), 50) == []  # both minimums met
    assert MIN_EPOCHS == 3


def test_a_held_out_loss_that_never_fell_is_warned():
    (w,) = training_warnings(_epochs([0.20, 0.21, 0.20, 0.25]), n_train=5000)
    assert "never fell (epoch 1: 0.2, the best after it: 0.2)" in w and "Train longer" in w


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-c", "import sys; from ganomaly_edge.train.cli import " + args[0]
                           + " as m; sys.exit(m())", *args[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A 1-epoch ganomaly-train run on 120 digits, its bundle and labelled test folders."""
    d = tmp_path_factory.mktemp("short")
    x, y = digits_u8(16)
    write_images(d / "train", x[y == 0][:120])
    write_images(d / "normal", x[y == 0][120:150])
    write_images(d / "abnormal", x[y == 1][:30])
    r = _cli("train_main", "--data", str(d / "train"), "--out", str(d / "m.pt"), "--image-size", "16",
             "--channels", "1", "--epochs", "1", "--width", "8", "--latent-dim", "8", "--batch-size", "16",
             "--score", "recon", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    b = subprocess.run([sys.executable, "-c", "import sys; from ganomaly_edge.train.build_engine import main; "
                        "sys.exit(main())", str(d / "m.pt"), "--out", str(d / "bundle"), "--no-tensorrt", "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert b.returncode == 0, b.stderr
    return d, r


def test_training_warns_and_records_it_in_checkpoint_and_bundle(short_run):
    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.train.checkpoint import load_checkpoint

    d, r = short_run
    assert "WARNING: THIS MODEL IS NOT READY: trained too little" in r.stderr and "--time-budget" in r.stderr
    ck = load_checkpoint(str(d / "m.pt"))
    assert ck["training_warnings"] and ck["training_warnings"][0].startswith("trained too little: 6 optimisation steps in 1 epoch(s) on 108 images")
    assert open_bundle(str(d / "bundle")).training_warnings == ck["training_warnings"]
    meta = json.load(open(d / "bundle" / "bundle.json"))
    assert meta["checkpoint"]["training_warnings"] == ck["training_warnings"]


def test_eval_repeats_the_warning(short_run, tmp_path):
    d, _ = short_run
    r = _cli("eval_main", str(d / "m.pt"), "--normal", str(d / "normal"), "--abnormal", str(d / "abnormal"),
             "--out", str(tmp_path / "report"), "--no-plots")
    assert r.returncode == 0, r.stderr
    assert "THIS MODEL IS NOT READY: trained too little" in r.stderr


def test_the_agent_repeats_the_warning_at_check_and_at_start(short_run, broker, tmp_path):
    d, _ = short_run
    cfg = write_config(tmp_path / "agent.toml", broker.port, {"kind": "folder", "uri": str(d / "normal"), "watch": False},
                       tmp_path / "ev.db", bundle=d / "bundle", device_id="short", prefix=None, stats_interval_s=None,
                       reconnect_s=None, retry_s=None, decision=None, results=None)
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, "--check-config"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr  # a warning, not a refusal
    assert "warning: bundle" in r.stderr and "THIS MODEL IS NOT READY: trained too little" in r.stderr
    log = tmp_path / "agent.log"
    assert start_agent(cfg, log).wait(180) == 0, log.read_text()
    assert "WARNING" in log.read_text() and "THIS MODEL IS NOT READY: trained too little" in log.read_text()
