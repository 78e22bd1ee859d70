"""The real data sets the benchmark reads (installed by `make setup`): their parsers are checked
against what the files must contain, since a mis-parsed file still yields arrays of the right shape."""

import numpy as np
import pytest

from train.datasets import fashion_mnist, first_per_class, mnist_5k, pad_to


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
