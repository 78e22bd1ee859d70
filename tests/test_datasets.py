"""The real data sets the benchmark reads (installed by `make setup`): their parsers are checked
against what the files must contain, since a mis-parsed file still yields arrays of the right shape."""

import numpy as np
import pytest

from examples.datasets import fashion_mnist, first_per_class, mnist_5k, pad_to


def test_mnist_5k_has_500_digits_per_class_and_labels_from_the_last_column():
    x, y = mnist_5k()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [500] * 10
    # Images really are digits of their label: a 1 has far less ink than a 0 or an 8, and the
    # 28x28 border is blank (a parse shifted by one column breaks both).
    ink = {c: x[y == c].astype(float).mean() for c in (0, 1, 8)}
    assert ink[1] < 0.7 * ink[0] and ink[1] < 0.7 * ink[8]
    assert x[:, 0, :].mean() < 1.0


def test_mnist_5k_refuses_a_file_of_the_wrong_layout(tmp_path, monkeypatch):
    import gzip
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write(",".join(["0"] * 100) + "\n")
    monkeypatch.setenv("MNIST5K_PATH", str(bad))
    with pytest.raises(ValueError, match="784 pixels and a label"):
        mnist_5k()


def test_fashion_mnist_splits_and_protocol_helpers():
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(yte).tolist() == [1000] * 10
    idx = first_per_class(ytr, [3, 5], 500)
    assert len(idx) == 1000 and set(np.unique(ytr[idx])) == {3, 5}
    assert np.all(np.diff(idx) > 0)
    padded = pad_to(xte[:4], 32)
    assert padded.shape[1:3] == (32, 32) and padded[:, :2].max() == 0


def test_benchmark_table_has_a_row_per_score_and_the_means(capsys):
    from research.benchmark_loo import print_table
    from ganomaly_edge.train.scoring import CANDIDATES, DEFAULT_SCORE
    names = list(CANDIDATES)
    other = names[0] if names[0] != DEFAULT_SCORE else names[1]
    # every score 0.5 + 0.05 c, except one that is 0.1 higher on class 3 only
    results = [{"class": c, "auc": {n: 0.5 + 0.05 * c + (0.1 if (n == other and c == 3) else 0.0) for n in names},
                "pixel_knn_auc": 0.6,
                "tpr_at_threshold": 0.2, "far_at_threshold": 0.01, "s_per_batch": 0.5, "train_s": 10.0,
                "device": "cpu"} for c in range(10)]
    print_table("fmnist", results)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    rows = {ln.split(" | ")[0][2:]: ln for ln in lines[1:]}
    assert len(rows) == len(CANDIDATES) + 2
    default = rows[f"**{DEFAULT_SCORE}**"]
    cells = [c.strip() for c in default.strip("| ").split("|")]
    # ten classes, the mean of ten (0.725), the mean of classes 0-8 (0.7)
    assert cells[1:11] == [f"{0.5 + 0.05 * c:.3f}" for c in range(10)]
    assert cells[11:] == ["0.725", "0.700"]
    ceiling = [c.strip() for c in rows["ceiling: best listed score per class, picked on test labels"].strip("| ").split("|")]
    assert ceiling[1:11] == [f"{0.5 + 0.05 * c + (0.1 if c == 3 else 0.0):.3f}" for c in range(10)]
    assert ceiling[11:] == ["0.735", "0.711"]
