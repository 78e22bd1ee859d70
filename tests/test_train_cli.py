"""The training and evaluation CLIs on real images (scikit-learn's digits) and their error paths."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support.data import ROOT, write_images


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-c", "import sys; from ganomaly_edge.train.cli import " + args[0] + " as m; sys.exit(m(sys.argv[1:]))", *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_empty_folder_is_a_clear_error(tmp_path):
    r = run("train_main", "--data", str(tmp_path), "--out", str(tmp_path / "c.pt"))
    assert r.returncode == 2 and "no images under" in r.stderr


def test_missing_folder_is_a_clear_error(tmp_path):
    r = run("train_main", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "c.pt"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_only_corrupt_images_is_a_clear_error(tmp_path):
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    r = run("train_main", "--data", str(tmp_path), "--out", str(tmp_path / "c.pt"))
    assert r.returncode == 2 and "none of the 3 image files" in r.stderr


def test_unsupported_size_is_refused_before_loading(tmp_path):
    r = run("train_main", "--data", str(tmp_path), "--out", str(tmp_path / "c.pt"), "--image-size", "100")
    assert r.returncode == 2 and "image size 100 is not supported" in r.stderr and "96" in r.stderr


def test_too_few_images(tmp_path, digits):
    x, _ = digits
    write_images(tmp_path / "few", x[:12])
    r = run("train_main", "--data", str(tmp_path / "few"), "--out", str(tmp_path / "c.pt"), "--image-size", "16")
    assert r.returncode == 2 and "too few" in r.stderr


def test_eval_of_a_missing_checkpoint(tmp_path):
    r = run("eval_main", str(tmp_path / "none.pt"), "--normal", str(tmp_path), "--abnormal", str(tmp_path),
            "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.slow
def test_train_then_eval_end_to_end(tmp_path, digits):
    """Digit 7 held out as the anomaly; a small model separates it well above chance."""
    x, y = digits
    rng = np.random.default_rng(0)
    normal_idx = rng.permutation(np.flatnonzero(y != 7))
    train_idx, test_normal = normal_idx[:-200], normal_idx[-200:]
    data = tmp_path / "normal"
    write_images(data / "a", x[train_idx[: len(train_idx) // 2]])
    write_images(data / "b" / "deeper", x[train_idx[len(train_idx) // 2:]], ext=".bmp")
    (data / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(64))  # skipped and counted
    write_images(tmp_path / "test_normal", x[test_normal])
    write_images(tmp_path / "test_abnormal", x[y == 7])
    ck = tmp_path / "model.pt"
    r = run("train_main", "--data", str(data), "--out", str(ck), "--image-size", "16", "--channels", "1",
            "--epochs", "8", "--batch-size", "32", "--width", "16", "--latent-dim", "32", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "1 unreadable or corrupt" in r.stderr
    import torch

    saved = torch.load(ck, weights_only=False)
    assert saved["complete"] and saved["epoch"] == 8 and saved["data"]["skipped"] == 1
    assert saved["preprocess"] == {"image_size": 16, "channels": 1, "color_order": "BGR",
                                   "normalisation": "x/127.5-1", "layout": "NHWC uint8"}
    assert {"torch", "numpy", "opencv"} <= set(saved["versions"])

    out = tmp_path / "report"
    r = run("eval_main", str(ck), "--normal", str(tmp_path / "test_normal"), "--abnormal",
            str(tmp_path / "test_abnormal"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"] == {"normal": 200, "abnormal": int((y == 7).sum())}
    auc = rep["scores"][rep["default_score"]]["roc_auc"]
    assert auc > 0.85, rep["scores"]
    assert rep["at_threshold"]["false_alarm_rate"] < 0.1
    for png in ("roc.png", "histogram.png", "reconstructions.png"):
        assert (out / png).stat().st_size > 5000
