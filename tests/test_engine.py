"""Export, the bundle, the ONNX Runtime backend, the self-test and every error path."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from support.data import ROOT, edit_bundle_meta, make_checkpoint
from ganomaly_edge.engine import BundleError, FrameError, SelfTestError, load, open_bundle
from ganomaly_edge.engine.bundle import archive, sha256_file


@pytest.mark.parametrize("size,channels", [(16, 1), (28, 1), (32, 3), (48, 3), (64, 1)])
def test_onnx_matches_pytorch(size, channels, tmp_path, capsys):
    import torch

    from ganomaly_edge.train.export import checkpoint_to_bundle, scorer_from_checkpoint
    from ganomaly_edge.train.checkpoint import load_checkpoint

    ck_path = make_checkpoint(tmp_path / "m.pt", size=size, channels=channels, epochs=0)
    b = checkpoint_to_bundle(ck_path, str(tmp_path / "b"))
    printed = capsys.readouterr().out
    assert "parity ONNX Runtime vs PyTorch" in printed
    assert b.meta.export_parity["max_rel_score"] <= 1e-4
    eng = load(b.path, "onnxruntime")
    rng = np.random.default_rng(size)
    frames = rng.integers(0, 256, (5, size, size, channels), dtype=np.uint8)
    s, r = eng.infer(frames)
    with torch.no_grad():
        ts, tr = scorer_from_checkpoint(load_checkpoint(ck_path))(torch.from_numpy(frames))
    assert s.shape == (5,) and r.shape == (5, size, size)
    assert np.abs(s - ts.numpy()).max() <= 1e-4 * max(1.0, np.abs(ts.numpy()).max())
    assert np.abs(r - tr.numpy()).max() < 1e-4


@pytest.mark.parametrize("score", ["latent", "features", "knn", "fknn", "fknn+latent"])
def test_every_score_head_exports_with_parity(score, tmp_path):
    """Each component's head (second encoder, discriminator, both memory banks) in the graph. (Sums
    with peak are left out here: an untrained model's peak saturates near 1 with a spread of 1e-4,
    and standardising by it turns float32 rounding into 1e-3.)"""
    import torch

    from ganomaly_edge.train.export import checkpoint_to_bundle, scorer_from_checkpoint
    from ganomaly_edge.train.checkpoint import load_checkpoint

    ck_path = make_checkpoint(tmp_path / "m.pt", size=16, epochs=1, score=score)
    ck = load_checkpoint(ck_path)
    assert ck["fbank"].shape == (len(ck["bank"]), 2 * 16)  # encoder + discriminator features (width 8 x 2)
    b = checkpoint_to_bundle(ck_path, str(tmp_path / "b"))
    assert b.meta.export_parity["max_rel_score"] <= 1e-4
    eng = load(b.path, "onnxruntime")
    frames = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    with torch.no_grad():
        ts, _ = scorer_from_checkpoint(ck)(torch.from_numpy(frames))
    s, _ = eng.infer(frames)
    assert np.abs(s - ts.numpy()).max() <= 1e-4 * max(1.0, np.abs(ts.numpy()).max())


def test_bundle_round_trip_and_archive(tiny_bundle, tmp_path):
    b = open_bundle(tiny_bundle)
    assert b.input.shape == (16, 16, 1) and b.input.color_order == "BGR"
    assert b.meta.format_version == 4 and b.meta.score.name and b.meta.integrity
    assert set(b.meta.files) == {"model.onnx", "reference.npz"}
    assert b.meta.checkpoint["sha256"] and len(b.reference()["inputs"]) == 8
    arch = archive(tiny_bundle, str(tmp_path / "b.tar.gz"))
    b2 = open_bundle(arch)
    assert b2.meta.files == b.meta.files
    e1, e2 = load(b.path, "onnxruntime"), load(arch, "onnxruntime")
    x = b.reference()["inputs"]
    assert np.array_equal(e1.infer(x)[0], e2.infer(x)[0])


def test_reference_inputs_score_anomalies_higher(tiny_bundle):
    eng = load(tiny_bundle)
    ref = open_bundle(tiny_bundle).reference()
    s = eng.calibrated(eng.infer(ref["inputs"])[0])
    assert s[6:].mean() > s[:6].mean()  # the patched copies look anomalous


def _rewrite_meta(path, **changes):
    p = os.path.join(path, "bundle.json")
    meta = json.load(open(p))
    meta.update(changes)
    json.dump(meta, open(p, "w"))


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist: build one with"):
        load(str(tmp_path / "none"))


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no bundle.json"):
        load(str(tmp_path))
    (tmp_path / "junk.bin").write_bytes(b"hello")
    with pytest.raises(BundleError, match="neither a bundle directory"):
        load(str(tmp_path / "junk.bin"))


def test_missing_model_file(tiny_bundle):
    os.remove(os.path.join(tiny_bundle, "model.onnx"))
    with pytest.raises(BundleError, match="model.onnx is missing"):
        load(tiny_bundle)


def test_truncated_model_file(tiny_bundle):
    p = os.path.join(tiny_bundle, "model.onnx")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(BundleError, match="does not match its recorded hash"):
        load(tiny_bundle)


def test_newer_and_older_format_versions(tiny_bundle):
    from ganomaly_edge.engine.bundle import READABLE_VERSIONS

    _rewrite_meta(tiny_bundle, format_version=max(READABLE_VERSIONS) + 1)
    with pytest.raises(BundleError, match="newer than the version this ganomaly-edge reads.*upgrade"):
        load(tiny_bundle)
    _rewrite_meta(tiny_bundle, format_version=1)  # before bundle.json was hash-covered
    with pytest.raises(BundleError, match="older.*rebuild the bundle"):
        load(tiny_bundle)


def test_a_version_2_bundle_loads_as_untiled_and_a_tiled_one_needs_version_3(tiny_bundle):
    """Bundles built before tiles (format 2) keep working; a tiling in a format-2 file is refused
    (an agent of that version would have ignored it and scored the wrong input)."""
    from support.data import edit_bundle_meta

    edit_bundle_meta(tiny_bundle, lambda m: m.update(format_version=2))
    eng = load(tiny_bundle)
    assert not eng.tiling.tiled and eng.tiling.count == 1
    edit_bundle_meta(tiny_bundle, lambda m: m.update(tiling={"tile": 16, "stride": 8, "height": 32, "width": 32}))
    with pytest.raises(BundleError, match="format version 2.*tiling"):
        load(tiny_bundle)


def test_edited_calibration_is_refused(tiny_bundle):
    """bundle.json is hash-covered: a hand-edited threshold would silently stop every alarm."""
    p = os.path.join(tiny_bundle, "bundle.json")
    meta = json.load(open(p))
    meta["calibration"]["scale"] *= 100
    json.dump(meta, open(p, "w"))
    with pytest.raises(BundleError, match="does not match its integrity hash"):
        load(tiny_bundle)


def test_inverted_calibration_is_refused_even_when_signed(tiny_bundle):
    def invert(m):
        m["calibration"]["threshold_raw"] = m["calibration"]["median"] - 1.0

    edit_bundle_meta(tiny_bundle, invert)
    with pytest.raises(BundleError, match="calibration inverts"):
        load(tiny_bundle)


def test_corrupt_metadata(tiny_bundle):
    open(os.path.join(tiny_bundle, "bundle.json"), "w").write("{not json")
    with pytest.raises(BundleError, match="not JSON"):
        load(tiny_bundle)


def test_self_test_refuses_a_model_that_scores_differently(tiny_bundle):
    ref_path = os.path.join(tiny_bundle, "reference.npz")
    ref = dict(np.load(ref_path))
    ref["score"] = ref["score"] + 0.5 * open_bundle(tiny_bundle).calibration.scale
    np.savez(ref_path, **ref)
    edit_bundle_meta(tiny_bundle, lambda m: m["files"].__setitem__("reference.npz", sha256_file(ref_path)))
    with pytest.raises(SelfTestError, match=r"score differs from the reference by 0\.5"):
        load(tiny_bundle)
    eng = load(tiny_bundle, allow_mismatch=True)  # the explicit override
    assert not eng.selftest_report["passed"]


def test_wrong_frames_are_refused(tiny_bundle):
    eng = load(tiny_bundle)
    with pytest.raises(FrameError, match=r"uint8 \[N, 16, 16, 1\]"):
        eng.infer(np.zeros((1, 32, 32, 1), np.uint8))
    with pytest.raises(FrameError, match="float32"):
        eng.infer(np.zeros((1, 16, 16, 1), np.float32))
    s, r = eng.infer(np.zeros((16, 16, 1), np.uint8))  # a single frame is a batch of one
    assert s.shape == (1,)


def test_inference_from_worker_threads(tiny_bundle):
    eng = load(tiny_bundle)
    x = open_bundle(tiny_bundle).reference()["inputs"]
    want = eng.infer(x)[0]
    got = []
    ts = [threading.Thread(target=lambda: got.append(eng.infer(x)[0])) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert all(np.allclose(g, want, atol=1e-6) for g in got)


def test_a_batch_split_across_threads_scores_as_one_call(tiny_bundle):
    """With 2+ threads on the CPU a batch runs as one single-threaded run per core on its share of
    the inputs: the same scores and maps, in the same order, as one call on all threads; small
    batches and a closed engine take the one-call path."""
    from ganomaly_edge.engine.backends.onnxruntime import OnnxRuntimeEngine

    b = open_bundle(tiny_bundle)
    x = np.ascontiguousarray(np.resize(b.reference()["inputs"], (11, *b.input.shape)))
    x[::2] = 255 - x[::2]  # inputs that differ, so an order mix-up shows
    one = OnnxRuntimeEngine(b, threads=3, split=False)
    split = OnnxRuntimeEngine(b, threads=3)
    assert one.split == 0 and split.split == 3 and split.describe()["split"] == 3
    want_s, want_r = one.infer(x)
    calls = []
    real = split._single.run
    split._single = type("Spy", (), {"run": lambda self, o, f: calls.append(len(next(iter(f.values()))))
                                     or real(o, f)})()
    got_s, got_r = split.infer(x)
    assert sorted(calls) == [3, 4, 4]  # 11 inputs in three shares
    assert np.allclose(got_s, want_s, rtol=1e-5, atol=1e-6) and np.allclose(got_r, want_r, atol=1e-5)
    calls.clear()
    split.infer(x[:5])  # under 2 inputs a thread: one call on the main session
    assert calls == []
    split.self_test()
    calls.clear()
    split.close()
    assert np.allclose(split.infer(x)[0], want_s, rtol=1e-5, atol=1e-6) and calls == []
    assert OnnxRuntimeEngine(b, threads=1).split == 0


def test_fp16_graph_pass_keeps_scores(tiny_bundle):
    import onnxruntime as ort

    from ganomaly_edge.engine.onnx_fp16 import is_fp16_graph, to_fp16

    data = open(os.path.join(tiny_bundle, "model.onnx"), "rb").read()
    half = to_fp16(data)
    assert is_fp16_graph(half) and not is_fp16_graph(data)
    ref = open_bundle(tiny_bundle).reference()
    s, r = ort.InferenceSession(half, providers=["CPUExecutionProvider"]).run(None, {"images": ref["inputs"]})
    assert s.dtype == np.float32 and r.dtype == np.float32  # fp32 outputs
    scale = open_bundle(tiny_bundle).calibration.scale
    assert np.abs(s - ref["score"]).max() / scale < 0.05


BLOCK_TORCH = (
    "import sys, importlib.abc\n"
    "class _Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError('torch is blocked in this test', name='torch')\n"
    "sys.meta_path.insert(0, _Block())\n"
)


def test_agent_and_engine_run_without_torch(tiny_bundle):
    code = BLOCK_TORCH + (
        "import numpy as np, engine, agent, agent.pipeline, agent.mqtt, agent.store, agent.config\n"
        f"e = engine.load({tiny_bundle!r})\n"
        "s, r = e.infer(np.zeros((2, 16, 16, 1), np.uint8))\n"
        "assert s.shape == (2,) and 'torch' not in sys.modules\n"
        "print('ok', e.backend)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok onnxruntime" in r.stdout


def _build_cli(*args):
    return subprocess.run([sys.executable, "-m", "ganomaly_edge.train.build_engine", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_build_engine_cli_without_tensorrt(tiny_checkpoint, tmp_path):
    r = _build_cli(tiny_checkpoint, "--out", str(tmp_path / "b"), "--archive", str(tmp_path / "b.tar.gz"))
    assert r.returncode == 0, r.stderr
    assert "only the ONNX Runtime backend will be available" in r.stdout
    assert load(str(tmp_path / "b.tar.gz")).backend == "onnxruntime"
    # From a bundle, without torch (the Jetson case).
    code = BLOCK_TORCH + ("from ganomaly_edge.train.build_engine import main; import sys\n"
                          f"sys.exit(main([{str(tmp_path / 'b')!r}, '--out', {str(tmp_path / 'c')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert open_bundle(str(tmp_path / "c")).meta.files == open_bundle(str(tmp_path / "b")).meta.files


def test_build_engine_cli_errors(tmp_path):
    r = _build_cli(str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    r = _build_cli(str(tmp_path / "bad.pt"), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "cannot read checkpoint" in r.stderr
