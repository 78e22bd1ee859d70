"""Tiled inspection end to end: training on tiles at working resolution, the bundle's tiling,
frame scores and stitched maps from every backend, per-frame calibration, the agent's boxes in
frame coordinates, and the training recipe (augmentations, time budget, Skip-GANomaly)."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from support.data import ROOT, write_images

SIZE, TILE, STRIDE = 96, 32, 16


def train_cli(*args, timeout=300):
    """ganomaly-train as a user runs it, in a process of its own."""
    return subprocess.run([sys.executable, "-c", "import sys; from ganomaly_edge.train.cli import train_main; "
                           "sys.exit(train_main(sys.argv[1:]))", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def parts(n, seed=0, size=SIZE):
    from ganomaly_edge.tools.defects import part

    rng = np.random.default_rng(seed)
    return np.stack([part(size, rng)[0] for _ in range(n)])[..., None]


@pytest.fixture(scope="session")
def tiled(tmp_path_factory):
    """A real tiled checkpoint and bundle: 96x96 grey parts in 32 px tiles, stride 16."""
    from ganomaly_edge.train.export import checkpoint_to_bundle
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    d = tmp_path_factory.mktemp("tiled")
    # rpeak named: several tests read its edge-tolerant map (the default, "auto", may choose another)
    cfg = TrainConfig(image_size=TILE, channels=1, width=8, latent_dim=16, epochs=6, batch_size=32, threads=1,
                      tile=TILE, stride=STRIDE, frame_height=SIZE, frame_width=SIZE, tiles_per_image=8,
                      flip=True, rot90=True, brightness=0.1, score="rpeak", position_stats="on")
    ck = Trainer(cfg, parts(200), out_path=str(d / "t.pt"), progress=False).run()
    bundle = checkpoint_to_bundle(str(d / "t.pt"), str(d / "bundle"), name="tiles")
    return {"ck": ck, "ck_path": str(d / "t.pt"), "bundle": bundle.path}


def test_the_bundle_records_the_tiling_and_a_per_frame_calibration(tiled):
    from ganomaly_edge.engine.bundle import open_bundle

    b = open_bundle(tiled["bundle"])
    t = b.tiling
    # 96 px mirrored out by the 4 px margin: 104 = tiles at 0, 16, ..., 64 and 72 each way.
    assert (t.tile, t.stride, t.height, t.width, t.margin) == (TILE, STRIDE, SIZE, SIZE, 4) and t.count == 36
    assert b.input.height == b.input.width == TILE
    assert b.meta.format_version == 4
    # Calibrated on the held-out frames (20 of 200), not on their 720 tiles.
    assert b.calibration.n == tiled["ck"]["data"]["n_val"] == 20
    # Each tile position's statistics on those frames, as the checkpoint holds them.
    assert t.position_standardised and len(t.position_mean) == len(t.position_scale) == 36
    assert np.allclose(t.position_mean, tiled["ck"]["tiling"]["position_mean"])
    assert min(t.position_scale) > 0 and np.ptp(t.position_mean) > 0


def test_frame_scores_are_the_worst_tile_and_maps_are_stitched_like_pytorch(tiled):
    import torch

    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.tiling import Tiling
    from ganomaly_edge.train.export import scorer_from_checkpoint

    frames = parts(5, seed=7)
    frames[2, 40:52, 40:52] = 255  # a bright patch in one frame
    eng = load(tiled["bundle"], "onnxruntime")
    raw, maps = eng.score_frames(frames)
    assert raw.shape == (5,) and maps.shape == (5, SIZE, SIZE)
    t = Tiling(TILE, STRIDE, SIZE, SIZE, 4)
    with torch.no_grad():
        s, r = scorer_from_checkpoint(tiled["ck"])(torch.from_numpy(t.split(frames)))
    # The worst tile after each position is standardised by its held-out mean and scale.
    mean, scale = np.array(eng.tiling.position_mean), np.array(eng.tiling.position_scale)
    assert np.allclose(raw, ((s.numpy().reshape(5, -1) - mean) / scale).max(1), rtol=1e-4, atol=1e-4)
    assert np.allclose(maps, t.stitch(r.numpy()), atol=1e-4)
    assert np.argmax(raw) == 2  # the patched frame is the worst


def test_engine_takes_frames_at_working_resolution_only(tiled):
    from ganomaly_edge.engine import FrameError, load

    eng = load(tiled["bundle"], "onnxruntime")
    with pytest.raises(FrameError, match="working resolution"):
        eng.score_frames(np.zeros((1, 64, 64, 1), np.uint8))
    # Any size of at least a tile works once the camera asks for it.
    raw, maps = eng.score_frames(np.zeros((2, 64, 128, 1), np.uint8), eng.tiling.resized(64, 128))
    assert raw.shape == (2,) and maps.shape == (2, 64, 128)
    # A frame's tiles go in one call; frames are grouped up to the CPU chunk (64 tiles: one of 36),
    # per thread where ONNX Runtime splits a call across its threads (2 threads: 128, three of 36).
    assert eng.CHUNK == 64 * max(1, eng.split)

    def calls(frames: int, tiles: int) -> list[int]:
        per = max(1, eng.CHUNK // tiles) * tiles
        return [min(per, frames * tiles - i) for i in range(0, frames * tiles, per)]

    sizes, real = [], eng.infer
    eng.infer = lambda x: (sizes.append(len(x)), real(x))[1]
    eng.score_frames(parts(3, seed=1))
    assert sizes == calls(3, 36) == ([36, 36, 36] if eng.CHUNK == 64 else [108] if eng.CHUNK == 128 else sizes)
    sizes.clear()
    eng.score_frames(np.zeros((5, 64, 64, 1), np.uint8), eng.tiling.resized(64, 64))  # 16 tiles a frame
    assert sizes == calls(5, 16)


def test_working_size_in_the_camera_config(tiled, tiny_bundle, caplog, tmp_path):
    import shutil

    from support.data import edit_bundle_meta
    from ganomaly_edge.agent.config import CameraConfig
    from ganomaly_edge.agent.pipeline import camera_tiling
    from ganomaly_edge.engine import load

    cam = CameraConfig(name="c", source={"kind": "folder", "uri": "/x"}, working_size="192x128")
    # Position statistics hold for the bundle's 96x96 frames only: another size is refused.
    with pytest.raises(ValueError, match="standardises each of its 36 tile positions.*--position-stats off"):
        camera_tiling(cam, load(tiled["bundle"], "onnxruntime"))
    same = CameraConfig(name="c", source={"kind": "folder", "uri": "/x"}, working_size=f"{SIZE}x{SIZE}")
    assert camera_tiling(same, load(tiled["bundle"], "onnxruntime")).position_standardised
    # A bundle of raw tile scores takes any size, with a warning.
    raw = tmp_path / "raw"
    shutil.copytree(tiled["bundle"], raw)
    edit_bundle_meta(str(raw), lambda m: m["tiling"].update(position_mean=None, position_scale=None))
    t = camera_tiling(cam, load(str(raw), "onnxruntime"))
    assert (t.height, t.width, t.count) == (128, 192, 8 * 12)
    assert "calibrated for" in caplog.text
    with pytest.raises(ValueError, match="needs a tiled model"):
        camera_tiling(cam, load(tiny_bundle, "onnxruntime"))
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        CameraConfig(name="c", source={"kind": "folder", "uri": "/x"}, working_size="big")


def test_tensorrt_profile_covers_tiles_times_frames(tiled, tmp_path, monkeypatch):
    import shutil

    from support.fakes import install
    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.engine.trt_build import BuildOptions, build_into_bundle

    dst = tmp_path / "b"
    shutil.copytree(tiled["bundle"], dst)
    frames = parts(10, seed=3)
    ort_raw, ort_maps = load(str(dst), "onnxruntime").score_frames(frames)
    install(monkeypatch, "10.3")
    entry = build_into_bundle(open_bundle(str(dst)), BuildOptions(precision="fp32", max_batch=4, progress=False))
    assert entry.max_batch == 4 * 36
    eng = load(str(dst), "tensorrt")
    assert eng.max_batch == 144 and eng.max_frames() == 4 and eng.max_frames(eng.tiling.resized(64, 64)) == 144 // 16
    raw, maps = eng.score_frames(frames)  # 360 tiles: three calls
    eng.close()
    assert np.allclose(raw, ort_raw, rtol=1e-4, atol=1e-4) and np.allclose(maps, ort_maps, atol=1e-3)


@pytest.mark.slow
def test_agent_boxes_land_on_the_defect_in_frame_coordinates(tiled, tmp_path):
    """Frames of 400x300 with the part in a 192x192 ROI at (100, 50), resized to the 96x96
    working resolution: the strongest box of each alarm lies on the painted defect."""
    from ganomaly_edge.tools.broker import Mosquitto
    from support.agent import Subscriber, write_config

    frames, truth = [], []
    for i, img in enumerate(parts(6, seed=11, size=192)[..., 0]):
        f = np.full((300, 400), 45, np.uint8)
        y, x = 60 + 16 * (i % 3), 60 + 14 * (i % 4)
        img[y:y + 24, x:x + 24] = 255
        f[50:242, 100:292] = img
        frames.append(f)
        truth.append((100 + x, 50 + y, 24, 24))
    names = write_images(tmp_path / "scans", frames)
    with Mosquitto(workdir=str(tmp_path / "broker")) as b:
        # threshold -100: every frame alarms, since this test is about where the boxes land
        cfg = write_config(tmp_path / "a.toml", b.port,
                           {"kind": "folder", "uri": str(tmp_path / "scans"), "watch": False}, tmp_path / "ev.db",
                           bundle=tiled["bundle"], camera="line", decision="threshold = -100.0",
                           roi="x = 100, y = 50, w = 192, h = 192", threads=2, stats_interval_s=1.0, retry_s=(0.5, 1.0))
        sub = Subscriber(b.port)
        p = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        assert sub.wait(lambda: len(sub.alarms()) == 6, 10), p.stderr[-2000:]
        sub.close()
    hits = 0
    for ev in sub.alarms():
        gx, gy, gw, gh = truth[[os.path.basename(n) for n in names].index(ev["item"])]
        bx = ev["boxes"][0]
        assert 100 <= bx["x"] and bx["x"] + bx["w"] <= 292 and 50 <= bx["y"] and bx["y"] + bx["h"] <= 242
        hits += bx["x"] < gx + gw and gx < bx["x"] + bx["w"] and bx["y"] < gy + gh and gy < bx["y"] + bx["h"]
        assert ev["frame_size"] == {"w": 400, "h": 300}
    assert hits >= 5, [(ev["item"], ev["boxes"][:2], truth[[os.path.basename(n) for n in names].index(ev["item"])]) for ev in sub.alarms()]


def test_colour_frames_train_and_score_through_the_cli(tmp_path):
    from ganomaly_edge.engine import load
    from ganomaly_edge.train.export import checkpoint_to_bundle

    rng = np.random.default_rng(2)
    base = cv2.resize(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), (100, 60), interpolation=cv2.INTER_NEAREST)
    write_images(tmp_path / "normal", [np.roll(base, int(s), axis=1) for s in rng.integers(0, 100, 60)], ".jpg")
    ck = tmp_path / "c.pt"
    r = train_cli("--data", str(tmp_path / "normal"), "--out", str(ck), "--tile", "32", "--stride", "24",
                  "--epochs", "1", "--width", "8", "--latent-dim", "8", "--batch-size", "16", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    b = checkpoint_to_bundle(str(ck), str(tmp_path / "b"))
    t = b.tiling
    # Mirrored out by 4 px to 68x108: rows at 0, 24, 36; columns at 0, 24, 48, 72, 76.
    assert (t.height, t.width, t.margin, t.count, b.input.channels) == (60, 100, 4, 3 * 5, 3)
    raw, maps = load(b.path, "onnxruntime").score_frames(np.zeros((1, 60, 100, 3), np.uint8))
    assert maps.shape == (1, 60, 100)


@pytest.mark.parametrize("args,message", [
    (["--stride", "8"], "--stride needs --tile"),
    (["--tile", "32", "--stride", "28"], "between 1 and 24"),
    (["--tile", "128"], "smaller than one 128 px tile"),
    (["--image-size", "64x32"], "square"),
    (["--tile", "32", "--image-size", "wide"], "WIDTHxHEIGHT"),
    (["--position-stats", "on"], "need --tile"),
    (["--tile", "32", "--patience", "-1"], "--patience must be >= 0"),
    (["--tile", "32", "--ema", "1"], "--ema must be a decay between 0 and 1"),
    (["--tile", "32", "--no-position-stats", "--position-stats", "on"], "contradicts --position-stats on"),
])
def test_train_cli_refuses_bad_tiling(tmp_path, args, message):
    write_images(tmp_path / "d", parts(12, size=96)[..., 0])
    r = train_cli("--data", str(tmp_path / "d"), "--out", str(tmp_path / "c.pt"), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-1500:]


def test_time_budget_stops_training_and_still_calibrates():
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    cfg = TrainConfig(image_size=TILE, channels=1, width=8, latent_dim=8, epochs=1000, batch_size=16, threads=1,
                      tile=TILE, stride=24, frame_height=SIZE, frame_width=SIZE, tiles_per_image=4,
                      time_budget_s=4.0)
    tr = Trainer(cfg, parts(60), progress=False)
    ck = tr.run()
    assert 1 <= ck["epoch"] < 1000 and ck["complete"] and ck["calibration"]["n"] == 10


def test_augmentations_keep_the_pixels_and_can_be_switched_off():
    from ganomaly_edge.train.augment import Augment

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
    assert np.array_equal(Augment().apply(x.copy(), rng), x)
    turned = Augment(flip=True, rot90=True).apply(x.copy(), rng)
    assert not np.array_equal(turned, x)
    assert all(np.array_equal(np.sort(a.ravel()), np.sort(b.ravel())) for a, b in zip(turned, x))
    lit = Augment(brightness=0.2).apply(x.copy(), rng)
    ratio = lit.reshape(64, -1).mean(1) / x.reshape(64, -1).mean(1)
    assert np.all((ratio > 0.75) & (ratio < 1.25)) and ratio.std() > 0.02


def test_skip_generator_trains_exports_and_passes_the_tensorrt_check(tmp_path):
    import torch

    from ganomaly_edge.engine import load
    from ganomaly_edge.train.export import checkpoint_to_bundle
    from ganomaly_edge.train.network import Generator
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    g = Generator(64, 1, 16, 8, arch="skip")
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.decoder.modules()) == 5
    cfg = TrainConfig(image_size=TILE, channels=1, width=8, latent_dim=8, epochs=1, batch_size=16, threads=1,
                      tile=TILE, stride=24, frame_height=SIZE, frame_width=SIZE, tiles_per_image=4, arch="skip")
    Trainer(cfg, parts(40), out_path=str(tmp_path / "s.pt"), progress=False).run()
    b = checkpoint_to_bundle(str(tmp_path / "s.pt"), str(tmp_path / "b"))  # parity and TensorRT checks inside
    assert b.meta.checkpoint["config"]["arch"] == "skip"
    assert load(b.path, "onnxruntime").selftest_report["passed"]


def test_eval_reports_frame_auc_and_pixel_localisation(tiled, tmp_path):
    from ganomaly_edge.tools.defects import paint

    rng = np.random.default_rng(4)
    normal = parts(20, seed=21)[..., 0]
    bad, masks = zip(*(paint(im, "missing", 16, rng) for im in parts(20, seed=22)[..., 0]))
    write_images(tmp_path / "n", normal)
    write_images(tmp_path / "a", bad)
    write_images(tmp_path / "m", masks)
    from ganomaly_edge.train.cli import eval_main

    assert eval_main([tiled["ck_path"], "--normal", str(tmp_path / "n"), "--abnormal", str(tmp_path / "a"),
                      "--masks", str(tmp_path / "m"), "--out", str(tmp_path / "rep")]) == 0
    rep = json.load(open(tmp_path / "rep" / "report.json"))
    assert rep["counts"] == {"normal": 20, "abnormal": 20}
    assert 0 <= rep["localisation"]["pixel_roc_auc"] <= 1 and rep["localisation"]["pixels"] == 40 * SIZE * SIZE
    assert "36 tiles" in rep["checkpoint"]["tiling"]
    assert "each position standardised" in rep["checkpoint"]["tiling"]
    raw = rep["raw_tile_max"]  # the comparison: frame scores as the maximum of raw tile scores
    assert 0 <= raw["roc_auc"] <= 1 and 0 <= raw["false_alarm_rate"] <= 1
    assert "standardised" not in raw["frame_scores"] and raw["roc_auc"] != rep["scores"][rep["default_score"]]["roc_auc"]
    rows = open(tmp_path / "rep" / "scores.csv").read().splitlines()
    assert len(rows) == 41 and rows[0].startswith("file,label,calibrated")
    assert os.path.getsize(tmp_path / "rep" / "reconstructions.png") > 0


def test_position_statistics_let_a_quiet_position_alarm_past_a_noisy_one():
    from sklearn.metrics import roc_auc_score as roc_auc

    from ganomaly_edge.engine.tiling import Tiling, TilingError

    t = Tiling(32, 32, 32, 64)  # two tile positions
    assert t.count == 2
    rng = np.random.default_rng(0)
    base = np.array([1.0, 0.2])  # position 0 (a grainy table) peaks high on every normal frame
    spread = np.array([0.1, 0.01])
    val = base + spread * rng.normal(size=(200, 2))
    normal = base + spread * rng.normal(size=(100, 2))
    bad = base + spread * rng.normal(size=(100, 2))
    bad[:, 1] += 0.5  # a defect on the quiet position: far outside its own range, below position 0
    tiles = np.concatenate([normal, bad]).ravel()
    labels = np.r_[np.zeros(100), np.ones(100)]
    s = t.standardised(val.ravel())
    assert s.position_standardised and not t.position_standardised
    assert np.allclose(s.position_mean, val.mean(0))
    # Each position's variance pooled half-and-half with that of all held-out tile scores.
    assert np.allclose(np.square(s.position_scale), 0.5 * val.var(0) + 0.5 * val.var())
    assert roc_auc(labels, t.frame_scores(tiles)) < 0.7 < 0.99 < roc_auc(labels, s.frame_scores(tiles))
    # The held-out frames are on the same footing: their own standardised peaks stay small.
    assert np.quantile(s.frame_scores(val.ravel()), 0.99) < s.frame_scores(tiles)[100:].min()
    # Statistics belong to one frame size and one tiling.
    assert not s.resized(32, 96).position_standardised and s.geometry() == t
    with pytest.raises(TilingError, match="2 values for the 3 tile positions"):
        Tiling(32, 32, 32, 96, 0, s.position_mean, s.position_scale)
    with pytest.raises(TilingError, match="positive"):
        Tiling(32, 32, 32, 64, 0, s.position_mean, (1.0, 0.0))
    assert Tiling.single(32).standardised(np.ones(5)) == Tiling.single(32)


def test_position_share_tells_a_fixed_layout_from_a_texture():
    """The intraclass correlation of held-out tile scores: near 0 where every position sees the
    same thing (their sample means scatter only by chance), near 1 for a fixed layout."""
    from ganomaly_edge.engine.tiling import Tiling

    t = Tiling(32, 24, 104, 104, 4)  # 4 x 4 positions
    rng = np.random.default_rng(1)
    texture = rng.gamma(2.0, 1.0, size=(30, t.count))  # skewed like a peak score, no layout
    layout = np.linspace(0.5, 3.0, t.count) + 0.2 * rng.normal(size=(100, t.count))
    assert t.position_share(texture.ravel()) < 0.05 < Tiling.MIN_POSITION_SHARE < 0.9 < t.position_share(layout.ravel())
    # one position far off the rest is a layout too, however quiet the others
    one = rng.normal(size=(100, t.count))
    one[:, 5] += 4.0
    assert t.position_share(one.ravel()) > Tiling.MIN_POSITION_SHARE
    assert t.position_share(np.ones(30 * t.count)) == 0.0  # no variance at all
    assert Tiling.single(32).position_share(np.arange(10.0)) == 0.0


def test_position_statistics_are_left_out_where_the_frames_have_no_fixed_layout(tiled, caplog):
    """finalise's default (auto) standardises tile positions on the cast parts and keeps the raw
    maximum on frames of noise texture, saying so; "on" and "off" override it."""
    import logging

    import torch

    from ganomaly_edge.engine.tiling import Tiling
    from ganomaly_edge.train.checkpoint import finalise, models_from_checkpoint

    g, d = models_from_checkpoint(tiled["ck"])
    geo = Tiling(TILE, STRIDE, SIZE, SIZE, 4)
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (60, SIZE, SIZE, 1), dtype=np.uint8)
    run = (lambda imgs, mode: finalise(g, d, imgs[:30], imgs[30:], "rpeak", 0.05, torch.device("cpu"), 0, geo,
                                       position_stats=mode))
    with caplog.at_level(logging.INFO, logger="ganomaly_edge.train.checkpoint"):
        flat = run(noise, "auto")
    assert flat["position_share"] < Tiling.MIN_POSITION_SHARE and flat["tiling"]["position_mean"] is None
    assert "no fixed layout" in caplog.text and "--position-stats on" in caplog.text
    assert run(noise, "on")["tiling"]["position_mean"] is not None
    laid_out = run(parts(60, seed=4), "auto")
    assert laid_out["position_share"] >= Tiling.MIN_POSITION_SHARE and laid_out["tiling"]["position_mean"] is not None
    assert run(parts(60, seed=4), "off")["tiling"]["position_mean"] is None
    with pytest.raises(ValueError, match="position_stats must be one of"):
        run(noise, "sometimes")


@pytest.mark.parametrize("rotate,box,want", [
    (0, (10, 5, 4, 4), (120, 60, 8, 8)),  # 192x96 ROI at (100, 50) on a 96x48 working image: x2
    (90, (0, 0, 24, 96), (100, 98, 192, 48)),  # turned clockwise: its left half is the ROI's bottom half
])
def test_boxes_map_back_from_a_non_square_working_resolution(rotate, box, want):
    from ganomaly_edge.agent.geometry import View

    h, w = (48, 96) if rotate == 0 else (96, 48)
    assert View(100, 50, 192, 96, rotate, h, w).to_frame(box) == want


def test_the_edge_tolerant_residual_ignores_a_soft_edge_and_keeps_a_pit():
    """range_residual: a reconstruction that draws an edge a pixel off or blurred leaves
    nothing; a pit on a surface the decoder redraws flat still does."""
    import torch

    from ganomaly_edge.train.scoring import range_residual, window_peak

    x = -torch.ones(1, 1, 32, 32)
    x[..., 16:] = 1.0  # a hard edge
    x_hat = x.clone()
    x_hat[..., 15] = 0.0  # drawn a pixel soft
    assert (x - x_hat).abs().amax() == 1.0 and range_residual(x, x_hat).amax() == 0.0
    shifted = torch.roll(x, 1, dims=3)  # drawn a pixel too far
    assert range_residual(x, shifted)[0, :, 2:-2].amax() == 0.0
    pitted = x.clone()
    pitted[..., 5:7, 24:26] = -1.0  # a dark pit on the bright side
    r = range_residual(pitted, x)
    assert r[0, 5:7, 24:26].min() == 2.0 and r.sum() == 8.0
    assert window_peak(r, 2)[0] == 2.0 and window_peak(r, 2, margin=8)[0] == 0.0  # outside the interior


def test_a_tiled_bundle_outputs_the_map_its_score_reads(tiled):
    import torch

    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.train.scoring import range_residual, to_model_input
    from ganomaly_edge.train.checkpoint import models_from_checkpoint

    b = open_bundle(tiled["bundle"])
    assert b.meta.score.name == "rpeak" and b.meta.score.residual == "range"
    assert "edge-tolerant" in b.meta.outputs["residual"]["meaning"]
    ref = np.load(os.path.join(tiled["bundle"], "reference.npz"))
    g, _ = models_from_checkpoint(tiled["ck"])
    g.eval()
    with torch.no_grad():
        x = to_model_input(torch.from_numpy(ref["inputs"]))
        want = range_residual(x, g.reconstruct(x)[2]).numpy()
    assert np.allclose(ref["residual"], want, atol=1e-5)


def test_a_resumed_tiled_run_with_augmentation_equals_an_unbroken_one(tmp_path):
    """Tiles are drawn and augmented from (seed, epoch): --resume cuts the same tiles."""
    import torch

    from ganomaly_edge.train.checkpoint import load_checkpoint
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    def cfg(epochs):
        return TrainConfig(image_size=TILE, channels=1, width=8, latent_dim=8, epochs=epochs, batch_size=16,
                           threads=1, tile=TILE, stride=24, frame_height=SIZE, frame_width=SIZE, tiles_per_image=4,
                           flip=True, rot90=True, shift=4, brightness=0.1, score="rpeak")

    frames = parts(40)
    straight = Trainer(cfg(2), frames, progress=False).run()
    path = str(tmp_path / "ck.pt")
    Trainer(cfg(1), frames, out_path=path, progress=False).run()
    tr = Trainer(cfg(2), frames, out_path=path, progress=False)
    tr.load_state(load_checkpoint(path))
    resumed = tr.run()
    for k in straight["generator"]:
        assert torch.allclose(straight["generator"][k].float(), resumed["generator"][k].float(), atol=1e-6), k


def test_foreign_patches_change_a_share_of_the_images_in_small_places_only():
    from ganomaly_edge.train.augment import corrupt

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 64, 64, 1), dtype=np.uint8)
    assert np.array_equal(corrupt(x, 0.0, rng), x)
    out = corrupt(x, 0.5, rng)
    changed = (out != x).reshape(200, -1)
    hit = changed.any(1)
    assert 70 <= hit.sum() <= 130  # about half of the images
    # at most two patches of at most 16 x 16 (a quarter of the side) each
    assert changed.sum(1).max() <= 2 * 16 * 16 and np.array_equal(x[~hit], out[~hit])


def test_the_tile_recipe_defaults_in_the_cli(tmp_path):
    """--tile alone gives the recommended recipe: the skip generator, the score chosen without
    labels on synthetic anomalies, foreign patches, augmentation, held-out early stopping and
    abutting tile interiors."""
    from ganomaly_edge.train.checkpoint import load_checkpoint
    from ganomaly_edge.train.scoring import AUTO_CANDIDATES

    write_images(tmp_path / "d", parts(24, size=96)[..., 0])
    r = train_cli("--data", str(tmp_path / "d"), "--out", str(tmp_path / "c.pt"), "--tile", "32", "--channels", "1",
                  "--epochs", "1", "--width", "8", "--latent-dim", "8", "--batch-size", "16")
    assert r.returncode == 0, r.stderr[-2000:]
    ck = load_checkpoint(str(tmp_path / "c.pt"))
    c = ck["config"]
    assert (c["arch"], c["score"], c["corrupt"], c["select"], c["patience"]) == ("skip", "auto", 0.5, "best-val", 6)
    sel = ck["score_selection"]
    assert ck["score"]["name"] == sel["chosen"] and set(sel["candidates"]) == set(AUTO_CANDIDATES)
    assert ck["score"]["k"] == 1 and "ROC AUC against synthetic anomalies" in r.stderr
    assert c["ema"] == 0.998 and "average of its weights over about the last 500 steps" in r.stderr
    # the stride defaults to the scored interior (32 - 2 * 4): 96 px mirrored to 104 gives 4 x 4 tiles
    t = load_checkpoint(str(tmp_path / "c.pt"))["tiling"]
    assert (t["stride"], t["margin"]) == (24, 4) and len(t["position_mean"]) == 16
    assert c["flip"] and c["rot90"] and c["shift"] == 4 and c["brightness"] == 0.1
    assert "foreign patches: 50 % of inputs" in r.stderr and "training:" in r.stderr  # the log and the bar


def test_the_benchmark_splits_auc_by_defect_size(tmp_path):
    """research/benchmark_hires: small (< 5 % of the side) and larger defects each against every
    normal image, from the report's scores.csv and the set's defects.csv."""
    from research.benchmark_hires import by_size

    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "defects.csv").write_text(
        "file,kind,extent_px,share_of_side\n0000.png,spot,5,0.02\n0001.png,spot,30,0.1\n0002.png,crack,6,0.03\n")
    rows = ["file,label,calibrated,peak", "n/0000.png,0,0,1", "n/0001.png,0,0,2", "n/0002.png,0,0,3",
            "a/0000.png,1,0,2.5", "a/0001.png,1,0,9", "a/0002.png,1,0,0.5"]
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    got = by_size(str(tmp_path), str(tmp_path))
    # small: 2.5 and 0.5 against 1, 2, 3 -> 2 of 6 pairs won; large: 9 beats all three
    assert got["peak"]["small"] == pytest.approx(2 / 6) and got["peak"]["large"] == 1.0


def test_position_statistics_need_format_4_and_a_format_3_bundle_keeps_raw_tile_scores(tiled, tmp_path):
    """A format-3 agent would ignore position statistics and compare raw maxima with a threshold
    set on standardised ones, so they are refused in a file claiming format 3; a real format-3
    bundle (no statistics) loads and takes the maximum of raw tile scores."""
    import shutil

    from support.data import edit_bundle_meta
    from ganomaly_edge.engine import load
    from ganomaly_edge.engine.bundle import BundleError

    b = tmp_path / "b"
    shutil.copytree(tiled["bundle"], b)
    edit_bundle_meta(str(b), lambda m: m.update(format_version=3))
    with pytest.raises(BundleError, match="format version 3 with tile position statistics.*version 4"):
        load(str(b), "onnxruntime")
    def statistics(m, version, **stats):
        m["format_version"] = version
        for k in ("position_mean", "position_scale"):
            m["tiling"].pop(k, None)
        m["tiling"].update(stats)

    edit_bundle_meta(str(b), lambda m: statistics(m, 4, position_mean=[0.0] * 35, position_scale=[1.0] * 35))
    with pytest.raises(BundleError, match="35 values for the 36 tile positions"):
        load(str(b), "onnxruntime")
    edit_bundle_meta(str(b), lambda m: statistics(m, 3))
    eng = load(str(b), "onnxruntime")
    assert not eng.tiling.position_standardised and eng.tiling.count == 36
    frames = parts(3, seed=5)
    raw, _ = eng.score_frames(frames)
    s, _ = eng.infer(eng.tiling.split(frames))
    assert np.allclose(raw, s.reshape(3, -1).max(1))


def test_held_out_frames_are_scored_by_the_other_frames_statistics_so_the_target_rate_holds():
    """Standardised by statistics that include its own tiles, a held-out frame looks quieter
    than a new one: the threshold set on such scores alarms more often than its target."""
    from ganomaly_edge.engine.calibration import calibrate
    from ganomaly_edge.engine.tiling import Tiling

    t = Tiling(64, 48, 300, 300, 8)  # 49 positions, as the recommended command's
    rng = np.random.default_rng(0)
    base, spread = rng.uniform(0.5, 2.0, t.count), rng.uniform(0.1, 1.0, t.count)
    fa_own, fa_others = [], []
    for _ in range(20):
        val = base + spread * rng.gumbel(size=(100, t.count))  # skewed, as anomaly scores are
        fresh = base + spread * rng.gumbel(size=(4000, t.count))
        s = t.standardised(val.ravel())
        new = s.frame_scores(fresh.ravel())
        fa_own.append(np.mean(new > calibrate(s.frame_scores(val.ravel()), 0.01)["threshold_raw"]))
        held_out = s.held_out_frame_scores(val.ravel())
        assert np.mean(held_out) > np.mean(s.frame_scores(val.ravel()))  # the same frames, seen from outside
        fa_others.append(np.mean(new > calibrate(held_out, 0.01)["threshold_raw"]))
    assert np.mean(fa_own) > 0.014 and np.mean(fa_others) < 0.013 and np.mean(fa_others) < np.mean(fa_own)
    # Without position statistics there is nothing to leave out.
    plain = base + spread * rng.gumbel(size=(50, t.count))
    assert np.array_equal(t.held_out_frame_scores(plain.ravel()), t.frame_scores(plain.ravel()))


def test_the_weight_average_trace_matches_the_checkpoint(tmp_path):
    """research/trace_average: the same run as ganomaly-train (its checkpoint's held-out losses are the
    average's column), with the live weights' loss beside them; without a weight average it refuses."""
    import csv

    from ganomaly_edge.train.checkpoint import load_checkpoint
    from research.trace_average import main

    write_images(tmp_path / "d", parts(24, size=96)[..., 0])
    out = str(tmp_path / "c.pt")
    common = ["--data", str(tmp_path / "d"), "--out", out, "--channels", "1", "--epochs", "2", "--width", "8",
              "--latent-dim", "8", "--batch-size", "16", "--threads", "1", "--quiet"]
    assert main(common + ["--ema", "0"]) == 2 and not os.path.exists(out)
    assert main(common + ["--tile", "32", "--ema", "0.9"]) == 0
    rows = list(csv.DictReader(open(out + ".trace.csv")))
    history = load_checkpoint(out)["history"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["average"]) for r in rows] == pytest.approx([h["val_con"] for h in history], rel=1e-9)
    assert all(float(r["average"]) != float(r["live"]) for r in rows)


def test_item_mode_on_a_tiled_bundle_takes_one_worker_whose_calls_split(tiled, tiny_bundle, tmp_path):
    """Auto parallelism (agent/service.py: items_split): one worker with every core only where every
    camera is in item mode and a frame has at least two tiles per core to split."""
    from ganomaly_edge.agent.config import load_settings
    from ganomaly_edge.agent.service import items_split

    def settings(bundle, second_trigger="mqtt", second_bundle=None):
        p = tmp_path / "c.toml"
        cam = '[[cameras]]\nname = "{}"\n{}[cameras.source]\nkind = "file"\nuri = "x"\n[cameras.items]\ntrigger = "{}"\n'
        p.write_text(f'[model]\nbundle = "{bundle}"\n' + cam.format("a", "", "mqtt")
                     + cam.format("b", f'bundle = "{second_bundle}"\n' if second_bundle else "", second_trigger))
        return load_settings(str(p))

    assert items_split(settings(tiled["bundle"]), cores=2)  # 36 tiles: 18 per core
    assert not items_split(settings(tiled["bundle"]), cores=24)  # under two tiles per core
    assert not items_split(settings(tiled["bundle"], second_trigger="off"), cores=2)  # camera b streams
    assert not items_split(settings(tiny_bundle), cores=2)  # one input per frame
    assert not items_split(settings(tiled["bundle"], second_bundle=tiny_bundle), cores=2)
    assert not items_split(settings(str(tmp_path / "missing")), cores=2)  # loading it will say why
