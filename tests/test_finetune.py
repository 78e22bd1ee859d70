"""``ganomaly-train --init-from``: fine-tuning the deployed checkpoint with exported frames."""

import os

import pytest
import torch

from support.data import digits_u8, write_images


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    x, _ = digits_u8(16)
    d = tmp_path_factory.mktemp("ft")
    write_images(d / "normal", x[:400])
    write_images(d / "exported", x[1500:1515])  # a few dozen false alarms at most, as from the console
    return str(d / "normal"), str(d / "exported")


def test_fine_tune_keeps_the_recipe_oversamples_exported_frames_and_holds_some_out(tiny_checkpoint, folders,
                                                                                  tmp_path, capsys):
    from ganomaly_edge.train.cli import train_main

    normal, exported = folders
    out = tmp_path / "ft.pt"
    rc = train_main(["--init-from", tiny_checkpoint, "--data", normal, "--data", exported, "--out", str(out),
                     "--epochs", "1", "--threads", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    base, ft = (torch.load(p, weights_only=False) for p in (tiny_checkpoint, out))
    for k in ("image_size", "channels", "width", "latent_dim", "arch", "tile", "score"):
        assert ft["config"][k] == base["config"][k], k
    assert ft["config"]["time_budget_s"] == 180.0  # the short default
    info = {os.path.basename(f["source"]): f for f in ft["data"]["folders"]}
    assert info["exported"]["n_val"] >= 1 and info["exported"]["n_train"] >= 10
    # 14 exported frames against 360 normal: repeated to a fifth of the training set
    assert info["exported"]["repeats"] == 6 and info["normal"]["repeats"] == 1
    assert ft["data"]["n_train"] == info["normal"]["n_train"] + 6 * info["exported"]["n_train"]
    assert ft["calibration"]["n"] == info["normal"]["n_val"] + info["exported"]["n_val"]
    # It started from the deployed networks: one epoch lands below where training from scratch began.
    assert ft["history"][0]["val_con"] < base["history"][0]["val_con"]
    assert ft["complete"]


def test_a_checkpoint_of_another_format_version_is_refused_with_the_fix(tiny_checkpoint, folders, tmp_path, capsys):
    from ganomaly_edge.train.cli import train_main

    ck = torch.load(tiny_checkpoint, weights_only=False)
    ck["format_version"] = 99
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    rc = train_main(["--init-from", str(old), "--data", folders[0], "--out", str(tmp_path / "x.pt"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "format version 99" in err and "release that wrote it" in err, err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("args,word", [
    (["--data", "A", "--data", "B"], "--init-from"),
    (["--init-from", "NOPE.pt", "--data", "A"], "no such file"),
])
def test_bad_fine_tune_arguments_are_named(args, word, tmp_path, capsys):
    from ganomaly_edge.train.cli import train_main

    args = [str(tmp_path / a) if a in ("A", "B", "NOPE.pt") else a for a in args]
    rc = train_main([*args, "--out", str(tmp_path / "x.pt"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and word in err, err
    assert not (tmp_path / "x.pt").exists()
