"""Choosing the score without labels: synthetic anomalies on held-out normal frames
(train/synthetic.py) and the choice among candidate scores (train/selection.py)."""

import numpy as np
import pytest


def frames(n=8, size=96, seed=0):
    """Smooth grey frames with a little grain, like a lit surface."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        base = 120 + 40 * np.sin(xx / rng.uniform(10, 20)) + rng.normal(0, 4, (size, size))
        out.append(np.clip(base, 0, 255).astype(np.uint8))
    return np.stack(out)[..., None]


def test_every_family_changes_each_frame_in_a_bounded_place_and_is_repeatable():
    from ganomaly_edge.train.synthetic import FAMILIES, synthetic_anomalies

    x = frames()
    a, fam = synthetic_anomalies(x, seed=3)
    assert a.shape == (len(FAMILIES) * len(x),) + x.shape[1:] and a.dtype == np.uint8
    assert np.array_equal(np.bincount(fam), [len(x)] * len(FAMILIES))
    src = np.tile(x, (len(FAMILIES), 1, 1, 1))
    changed = (a != src).reshape(len(a), -1).mean(1)
    # something is drawn on every frame, and never most of it
    assert changed.min() > 0 and changed.max() < 0.25, (changed.min(), changed.max())
    b, _ = synthetic_anomalies(x, seed=3)
    c, _ = synthetic_anomalies(x, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_an_intensity_drop_only_darkens_and_a_cut_is_thin():
    from ganomaly_edge.train.synthetic import synthetic_anomalies

    x = frames(6)
    drop, _ = synthetic_anomalies(x, seed=0, families=("drop",))
    assert (drop.astype(int) <= x.astype(int)).all() and (drop < x).any()
    cut, _ = synthetic_anomalies(x, seed=0, families=("cut",))
    share = (cut != x).reshape(len(x), -1).mean(1)
    assert share.max() < 0.05  # a line of at most 3 px across at most 0.6 of the side


def test_unknown_family_and_a_single_frame_are_refused():
    from ganomaly_edge.train.synthetic import synthetic_anomalies

    with pytest.raises(ValueError, match="unknown synthetic anomaly families"):
        synthetic_anomalies(frames(2), 0, families=("lightning",))
    with pytest.raises(ValueError, match="at least 2 normal frames"):
        synthetic_anomalies(frames(1), 0)


def test_roc_auc_agrees_with_scikit_learn_ties_included():
    from sklearn.metrics import roc_auc_score

    from ganomaly_edge.train.selection import roc_auc

    rng = np.random.default_rng(0)
    neg, pos = rng.integers(0, 6, 40).astype(float), rng.integers(2, 8, 30).astype(float)
    want = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[neg, pos])
    assert roc_auc(neg, pos) == pytest.approx(want)


def test_the_candidate_that_sees_the_synthetic_anomalies_is_chosen():
    """Two components: one reacts to whatever was drawn on a tile, the other is noise. The
    choice must fall on the first, and record every candidate's figures per family."""
    from ganomaly_edge.engine.tiling import Tiling
    from ganomaly_edge.train.selection import select_score
    from ganomaly_edge.train.synthetic import FAMILIES

    size, tile = 96, 32
    t = Tiling(tile, 24, size, size, 4)
    val = frames(12)
    rng = np.random.default_rng(1)

    def components_of(f):
        tiles = t.split(f).astype(np.float64)
        clean = t.split(np.tile(val, (len(f) // len(val), 1, 1, 1))).astype(np.float64)
        seen = np.abs(tiles - clean).reshape(len(tiles), -1).max(1)  # what was drawn on the tile
        return {"peak": seen + rng.normal(0, 0.1, len(tiles)), "knn": rng.normal(0, 1, len(tiles))}

    val_comps = components_of(val)
    sel = select_score(("knn", "peak"), t, t.margin, 1, val, val_comps, components_of,
                       lambda tiling, s: tiling, seed=0)
    assert sel["chosen"] == "peak"
    assert set(sel["candidates"]) == {"knn", "peak"} and set(FAMILIES) <= set(sel["candidates"]["peak"])
    assert sel["candidates"]["peak"]["mean_auc"] > 0.9 > 0.7 > sel["candidates"]["knn"]["mean_auc"]
    assert sel["synthetic_frames"] == len(FAMILIES) * len(val) and sel["held_out_frames"] == len(val)


def test_elpv_split_is_fixed_and_keeps_the_uncertain_cells_apart():
    from research.elpv import split

    proba = np.r_[np.zeros(50), np.ones(20), np.full(5, 1 / 3), np.full(5, 2 / 3)]
    a, b = split(proba, 0), split(proba, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (len(a["train"]), len(a["normal"]), len(a["abnormal"]), len(a["uncertain"])) == (40, 10, 20, 10)
    assert set(a["train"]).isdisjoint(a["normal"]) and (proba[a["train"]] == 0).all()
    assert not np.array_equal(split(proba, 1)["train"], a["train"])


def test_a_tiled_run_chooses_its_score_and_its_bundle_maps_the_tiles_that_alarm(tmp_path):
    """--score auto on tiles end to end: the choice is recorded, a nearest-neighbour score keeps
    every training tile in its bank (k = 1), the exported graph passes the TensorRT check
    (conftest) and ONNX Runtime's self-test, and the residual a knn score outputs is the map
    times each tile's distance, so a quiet tile stays dark."""
    import torch

    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.train.checkpoint import models_from_checkpoint
    from ganomaly_edge.train.export import checkpoint_to_bundle
    from ganomaly_edge.train.scoring import AUTO_CANDIDATES, knn_distance, to_model_input
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    size, tile, stride = 96, 32, 24
    x = frames(60, size)
    cfg = TrainConfig(image_size=tile, channels=1, width=8, latent_dim=8, epochs=1, batch_size=32, threads=1,
                      tile=tile, stride=stride, frame_height=size, frame_width=size, tiles_per_image=4,
                      score="auto", position_stats="off")
    ck = Trainer(cfg, x, out_path=str(tmp_path / "a.pt"), progress=False).run()
    sel = ck["score_selection"]
    assert sel["chosen"] == ck["score"]["name"] and set(sel["candidates"]) == set(AUTO_CANDIDATES)
    assert ck["score"]["k"] == 1
    n_train = ck["data"]["n_train"]
    assert len(ck["bank"]) == n_train * 16  # every training tile: 4 x 4 a frame

    # The knn head itself, whatever was chosen: its map is the residual times the tile's distance.
    ck2 = Trainer(TrainConfig(**{**cfg.__dict__, "score": "peak+knn", "epochs": 1}), x,
                  out_path=str(tmp_path / "k.pt"), progress=False).run()
    assert ck2["score"]["residual"] == "abs-knn"
    b = checkpoint_to_bundle(str(tmp_path / "k.pt"), str(tmp_path / "bundle"), name="knn")
    assert open_bundle(b.path).meta.score.residual == "abs-knn"
    eng = load(b.path, "onnxruntime")  # loading runs the self-test against the reference outputs
    _, maps = eng.score_frames(x[:2])
    g, _ = models_from_checkpoint(ck2)
    g.eval()
    ref = np.load(str(tmp_path / "bundle" / "reference.npz"))
    with torch.no_grad():
        t = to_model_input(torch.from_numpy(ref["inputs"]))
        z, _, x_hat = g.reconstruct(t)
        dist = knn_distance(z.flatten(1), torch.from_numpy(ck2["bank"]), 1)
        want = torch.mean(torch.abs(t - x_hat), dim=1) * dist[:, None, None]
    assert np.allclose(ref["residual"], want.numpy(), atol=1e-5)
    assert maps.shape == (2, size, size) and np.isfinite(maps).all()
