"""The checkpoint format ganomaly-train writes, and what the final checkpoint adds to the
trained networks: the nearest-neighbour banks, the score, its calibration on held-out normal
images, and the reference images every bundle carries."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

import numpy as np
import torch

from ganomaly_edge.engine.calibration import calibrate

from .network import Discriminator, Generator
from .scoring import apply_spec, components, embed, encode, make_spec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ganomaly-edge-checkpoint"
CHECKPOINT_VERSION = 1
BANK_MAX = 8192


def versions() -> dict[str, str]:
    import cv2

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__}


def atomic_save(obj: Any, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def finalise(g: Generator, d: Discriminator, train_images: np.ndarray, val_images: np.ndarray, score: str,
             target_far: float, device: torch.device, seed: int) -> dict[str, Any]:
    """Encode the training images (knn banks), score the held-out images, calibrate."""
    rng = np.random.default_rng(seed)
    bank_src = train_images
    if len(bank_src) > BANK_MAX:
        bank_src = bank_src[np.sort(rng.choice(len(bank_src), BANK_MAX, replace=False))]
    bank = encode(g, bank_src, device).astype(np.float32)
    fbank = embed(g, d, bank_src, device).astype(np.float32)
    val_comps = components(g, d, val_images, device, bank=bank, fbank=fbank)
    spec = make_spec(score, val_comps)
    calib = calibrate(apply_spec(spec, val_comps), target_far)
    log.info("calibrated score %r on %d held-out normal images: threshold %.5g (raw) for a %.2g%% "
             "false-alarm rate", spec["name"], calib["n"], calib["threshold_raw"], 100 * target_far)
    return {"bank": bank, "fbank": fbank, "reference_images": reference_images(val_images), "score": spec,
            "calibration": calib, "val_components": {k: v.astype(np.float32) for k, v in val_comps.items()}}


def reference_images(val: np.ndarray, n_normal: int = 6) -> np.ndarray:
    """A few held-out normal images plus copies with an inverted square patch: inputs whose
    expected outputs the bundle stores, so every backend can prove itself on normal and
    anomalous-looking frames alike."""
    normal = val[:n_normal]
    patched = normal[:2].copy()
    s = val.shape[1]
    a, b = s // 4, s // 4 + max(s // 3, 2)
    patched[:, a:b, a:b] = 255 - patched[:, a:b, a:b]
    return np.ascontiguousarray(np.concatenate([normal, patched]))


def check_checkpoint(ck: Any) -> None:
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not a ganomaly-edge checkpoint (written by ganomaly-train)")
    v = ck.get("format_version")
    if v != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint format version {v} is not supported by this version "
                         f"(which reads version {CHECKPOINT_VERSION}); use the matching ganomaly-edge release")


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a damaged file
        raise ValueError(f"cannot read checkpoint {path!r}: {e} (truncated or not a checkpoint?)") from e
    check_checkpoint(ck)
    if "opt_g" not in ck and "resume_state" in ck:
        ck["opt_g"] = ck["resume_state"]["opt_g"]
        ck["opt_d"] = ck["resume_state"]["opt_d"]
    return ck


def models_from_checkpoint(ck: dict[str, Any], device: str | torch.device = "cpu") -> tuple[Generator, Discriminator]:
    c = ck["config"]
    g = Generator(c["image_size"], c["channels"], c["latent_dim"], c["width"])
    d = Discriminator(c["image_size"], c["channels"], c["width"])
    g.load_state_dict(ck["generator"])
    d.load_state_dict(ck["discriminator"])
    return g.to(device).eval(), d.to(device).eval()
