"""Paths, real images and models for tests."""

import os

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def edit_bundle_meta(bundle_dir, edit):
    """Change bundle.json the way a tool of ours would (re-signing it), for tests of what comes after."""
    import json

    from ganomaly_edge.engine.bundle import meta_hash

    path = os.path.join(str(bundle_dir), "bundle.json")
    meta = json.load(open(path))
    edit(meta)
    meta["integrity"] = meta_hash(meta)
    json.dump(meta, open(path, "w"))


def calibration_folder(tmp_path, digits, n=24):
    """``n`` normal digits the tiny model was not trained on, in a folder: INT8 calibration data."""
    folder = tmp_path / "normal"
    folder.mkdir()
    x, _ = digits
    for i, img in enumerate(x[-n:]):  # frames the tiny model was not trained on (it takes the first 400)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return str(folder)
