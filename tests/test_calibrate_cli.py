"""``ganomaly-calibrate``: the threshold set again from more normal frames, a new bundle with the
same graph, run as the command a user types."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support.data import ROOT, digits_u8, write_images


def run(*args):
    return subprocess.run([sys.executable, "-m", "ganomaly_edge.train.recalibrate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def unseen_digits(tmp_path_factory):
    """Real digits the tiny model never trained on (it trained on the first 400)."""
    x, _ = digits_u8(16)
    d = tmp_path_factory.mktemp("unseen")
    write_images(d, x[600:1400])
    return str(d)


def test_new_bundle_has_the_same_graph_and_a_threshold_for_the_frames_given(tiny_bundle, unseen_digits, tmp_path):
    from ganomaly_edge.engine import load

    out = tmp_path / "recal"
    r = run(tiny_bundle, "--normal", unseen_digits, "--far", "0.05", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "false alarms on these frames" in r.stdout and "800 normal frame(s)" in r.stdout
    old, new = (json.load(open(os.path.join(p, "bundle.json"))) for p in (tiny_bundle, out))
    assert new["files"] == old["files"]  # the same graph and reference outputs
    assert new["calibration"] != old["calibration"] and new["calibration"]["n"] == 800
    with load(tiny_bundle, "onnxruntime", threads=1) as a, load(str(out), "onnxruntime", threads=1) as b:
        assert a.bundle.model_hash != b.bundle.model_hash
        from ganomaly_edge.train.data import load_folder

        frames = load_folder(unseen_digits, (16, 16), 1).images
        raw = b.score_frames(frames, b.tiling)[0]
        # The new threshold gives the asked rate on these frames (a quantile of 800 frames).
        rate = float(np.mean(b.calibrated(raw) > b.bundle.calibration.threshold))
        assert abs(rate - 0.05) <= 0.01, rate
        # And the same raw scores: only the calibration moved.
        assert np.allclose(raw, a.score_frames(frames, a.tiling)[0])


def test_a_checkpoint_is_exported_then_recalibrated(tiny_checkpoint, unseen_digits, tmp_path):
    out = tmp_path / "recal"
    r = run(tiny_checkpoint, "--normal", unseen_digits, "--normal", unseen_digits, "--out", out)
    assert r.returncode == 0, r.stderr
    assert json.load(open(out / "bundle.json"))["calibration"]["n"] == 1600


@pytest.mark.parametrize("case", ["missing model", "missing folder", "empty folder", "out not empty", "bad far"])
def test_bad_input_is_named_and_writes_nothing(case, tiny_bundle, unseen_digits, tmp_path):
    out = tmp_path / "out"
    args = {"missing model": [tmp_path / "nope.pt", "--normal", unseen_digits],
            "missing folder": [tiny_bundle, "--normal", tmp_path / "nodir"],
            "empty folder": [tiny_bundle, "--normal", tmp_path],
            "out not empty": [tiny_bundle, "--normal", unseen_digits],
            "bad far": [tiny_bundle, "--normal", unseen_digits, "--far", "0.7"]}[case]
    if case == "out not empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    r = run(*args, "--out", out)
    assert r.returncode == 2, (r.stdout, r.stderr)
    word = {"missing model": "does not exist", "missing folder": "does not exist", "empty folder": "no images",
            "out not empty": "not empty", "bad far": "--far"}[case]
    assert word in r.stderr, r.stderr
    assert (not out.exists()) or os.listdir(out) == (["keep.txt"] if case == "out not empty" else [])
