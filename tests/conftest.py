import os

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits_u8(size: int = 16):
    """scikit-learn's 1,797 real 8x8 digits as uint8 [N, size, size, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    out = np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR) for i in imgs])
    return out[..., None], d.target


def write_images(folder, images, ext=".png"):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = os.path.join(str(folder), f"img_{i:05d}{ext}")
        assert cv2.imwrite(p, img)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def digits():
    return digits_u8(16)


def make_checkpoint(path, size=16, channels=1, epochs=2, width=8, latent=8, images=None, seed=0, score="recon"):
    """A real checkpoint: trained ``epochs`` (0 = calibrated at initialisation) on digits."""
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    if images is None:
        x, _ = digits_u8(size)
        images = np.repeat(x, 3, axis=3) if channels == 3 else x
        images = images[:400]
    cfg = TrainConfig(image_size=size, channels=channels, width=width, latent_dim=latent, epochs=epochs,
                      batch_size=32, threads=1, seed=seed, score=score)
    Trainer(cfg, images, out_path=str(path), progress=False).run()
    return str(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    # Plumbing, not detection quality: the image-wide residual suits a model this small.
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_bundle_src(tiny_checkpoint, tmp_path_factory):
    from ganomaly_edge.train.export import checkpoint_to_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    checkpoint_to_bundle(tiny_checkpoint, str(out))
    return str(out)


@pytest.fixture
def tiny_bundle(tiny_bundle_src, tmp_path):
    """A fresh copy per test, so tests may damage it."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_src, dst)
    return str(dst)


@pytest.fixture(scope="session", autouse=True)
def every_exported_graph_passes_the_tensorrt_check():
    """Every bundle any test exports must be one TensorRT would build, on every supported series,
    for fp32 and fp16 (engine/trt_compat.py)."""
    try:
        import ganomaly_edge.train.export as export
    except ImportError:  # no torch (pytest -m gpu on a device): nothing is exported
        yield []
        return
    from ganomaly_edge.engine.trt_compat import check_bundle_graph

    original = export.write_bundle
    checked = []

    def write_checked(out_dir, onnx_bytes, reference, meta):
        problems = {k: v for k, v in check_bundle_graph(onnx_bytes).items() if v}
        assert not problems, f"exported graph would fail in TensorRT: {problems}"
        checked.append(out_dir)
        return original(out_dir, onnx_bytes, reference, meta)

    export.write_bundle = write_checked
    yield checked
    export.write_bundle = original


def edit_bundle_meta(bundle_dir, edit):
    """Change bundle.json the way a tool of ours would (re-signing it), for tests of what comes after."""
    import json

    from ganomaly_edge.engine.bundle import meta_hash

    path = os.path.join(str(bundle_dir), "bundle.json")
    meta = json.load(open(path))
    edit(meta)
    meta["integrity"] = meta_hash(meta)
    json.dump(meta, open(path, "w"))
