"""The checkpoint format ganomaly-train writes, and what the final checkpoint adds to the
trained networks: the nearest-neighbour banks, the score, its calibration on held-out normal
images, and the reference images every bundle carries."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ganomaly_edge.engine.calibration import calibrate
from ganomaly_edge.engine.tiling import Tiling

from .errors import TrainError
from .network import Discriminator, Generator
from .scoring import AUTO, AUTO_CANDIDATES, KNN_K, KNN_K_TILES, apply_spec, components, embed, encode, make_spec
from .selection import select_score

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ganomaly-edge-checkpoint"
CHECKPOINT_VERSION = 1
# Every training tile up to this many (the nearest-neighbour score wants all of them: ELPV's 423
# training frames are 20,727 tiles, 8 MB of encodings; one frame's 49 tiles against 65,536 is
# 0.6 GFLOP).
BANK_MAX = 65536
POSITION_STATS = ("auto", "on", "off")  # finalise: standardise tile positions where the layout is fixed, always, never


class CheckpointError(TrainError, ValueError):
    """A file that is not a checkpoint this version reads, or settings it cannot hold."""


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
             target_far: float, device: torch.device, seed: int, tiling: Tiling | None = None,
             position_stats: bool | str = "auto") -> dict[str, Any]:
    """Encode the training tiles (knn banks), choose the score if asked to, score the held-out
    frames, calibrate per frame.

    Components are standardised over the held-out tiles. With more than one tile, each tile
    position's score is standardised by its mean and scale on the held-out frames
    (Tiling.standardised) when ``position_stats`` is "on", or "auto" (True) and the positions
    explain at least Tiling.MIN_POSITION_SHARE of the held-out tile scores' variance (a fixed
    layout); "off" (False) never. A frame's raw score is the maximum over its tiles, and the
    threshold is set on those frame scores, so the false-alarm target holds per frame however
    many tiles it has; with position statistics, each held-out frame is scored by those of the
    others (Tiling.held_out_frame_scores), as a new frame would be.

    ``score="auto"`` picks among scoring.AUTO_CANDIDATES the one that best separates the held-out
    frames from synthetic anomalies drawn on them (selection.py); the choice and every
    candidate's figures are recorded under "score_selection"."""
    tiling = tiling or Tiling.single(train_images.shape[1])
    k = KNN_K_TILES if tiling.tiled else KNN_K
    rng = np.random.default_rng(seed)
    bank_src = bank_tiles(train_images, tiling, rng)
    bank = encode(g, bank_src, device).astype(np.float32)
    fbank = embed(g, d, bank_src, device).astype(np.float32)
    del bank_src
    val_tiles = tiling.split(val_images)

    def components_of(frames: np.ndarray) -> dict[str, np.ndarray]:
        return components(g, d, tiling.split(frames), device, bank=bank, fbank=fbank, margin=tiling.margin, k=k)

    val_comps = components_of(val_images)
    position_rule = _position_rule(position_stats)
    selection = None
    if score == AUTO:
        selection = select_score(AUTO_CANDIDATES, tiling, tiling.margin, k, val_images, val_comps,
                                 components_of, position_rule, seed)
        score = selection["chosen"]
    spec = make_spec(score, val_comps, tiling.margin, k, tiled=tiling.tiled)
    tile_scores = apply_spec(spec, val_comps)
    share = tiling.position_share(tile_scores)
    tiling = position_rule(tiling, tile_scores)
    if tiling.count > 1 and not tiling.position_standardised and position_rule.mode == "auto":
        log.info("tile positions explain %.0f%% of the held-out tile scores' variance (under %.0f%%: no fixed "
                 "layout, as on a texture), so each frame's score is the maximum of raw tile scores, without "
                 "position statistics (--position-stats on forces them)", 100 * share,
                 100 * tiling.MIN_POSITION_SHARE)
    calib = calibrate(tiling.held_out_frame_scores(tile_scores), target_far)
    log.info("calibrated score %r on %d held-out normal frames (%s): threshold %.5g (raw) "
             "for a %.2g%% false-alarm rate per frame", spec["name"], calib.n, tiling.describe(),
             calib.threshold_raw, 100 * target_far)
    out = {"bank": bank, "fbank": fbank, "reference_images": reference_images(val_tiles), "score": spec,
           "calibration": calib.model_dump(), "val_components": {k: v.astype(np.float32) for k, v in val_comps.items()},
           "position_share": share}
    if selection is not None:
        out["score_selection"] = selection
    if tiling.tiled:
        out["tiling"] = asdict(tiling)
    return out


def _position_rule(position_stats: bool | str):
    """finalise's rule as a function (tiling, held-out tile scores) -> the tiling to deploy: each
    position standardised "on", never "off", and with "auto" (True) where the positions explain
    at least Tiling.MIN_POSITION_SHARE of the scores' variance. Its ``mode`` says which."""
    mode = {True: "auto", False: "off"}.get(position_stats, position_stats)  # type: ignore[arg-type]
    if mode not in POSITION_STATS:
        raise CheckpointError(f"position_stats must be one of {POSITION_STATS}, got {position_stats!r}")

    def rule(t: Tiling, tile_scores: np.ndarray) -> Tiling:
        share = t.position_share(tile_scores)
        if t.count > 1 and (mode == "on" or (mode == "auto" and share >= t.MIN_POSITION_SHARE)):
            return t.standardised(tile_scores)
        return t

    rule.mode = mode  # type: ignore[attr-defined]
    return rule


def bank_tiles(train_images: np.ndarray, tiling: Tiling, rng: np.random.Generator) -> np.ndarray:
    """At most BANK_MAX tiles of the training frames, a seeded random choice over all of them."""
    per = tiling.count
    total = len(train_images) * per
    pick = np.sort(rng.choice(total, min(total, BANK_MAX), replace=False))
    frames = pick // per
    out = []
    for f in np.unique(frames):
        out.append(tiling.split(train_images[f:f + 1])[pick[frames == f] % per])
    return np.ascontiguousarray(np.concatenate(out))


def reference_images(val: np.ndarray, n_normal: int = 6) -> np.ndarray:
    """A few held-out normal images (tiles, when tiling) plus copies with an inverted square
    patch: inputs whose expected outputs the bundle stores, so every backend can prove itself
    on normal and anomalous-looking inputs alike."""
    normal = val[np.unique(np.linspace(0, len(val) - 1, n_normal).astype(int))]  # spread over frames and tiles
    patched = normal[:2].copy()
    s = val.shape[1]
    a, b = s // 4, s // 4 + max(s // 3, 2)
    patched[:, a:b, a:b] = 255 - patched[:, a:b, a:b]
    return np.ascontiguousarray(np.concatenate([normal, patched]))


def check_checkpoint(ck: Any) -> None:
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not a ganomaly-edge checkpoint (written by ganomaly-train)")
    v = ck.get("format_version")
    if v != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint format version {v} is not supported by this version "
                              f"(which reads version {CHECKPOINT_VERSION}); use the matching ganomaly-edge release")


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e} (truncated or not a checkpoint?)") from e
    check_checkpoint(ck)
    if "opt_g" not in ck and "resume_state" in ck:
        ck["opt_g"] = ck["resume_state"]["opt_g"]
        ck["opt_d"] = ck["resume_state"]["opt_d"]
    return ck


def models_from_checkpoint(ck: dict[str, Any], device: str | torch.device = "cpu") -> tuple[Generator, Discriminator]:
    c = ck["config"]
    g = Generator(c["image_size"], c["channels"], c["latent_dim"], c["width"], c.get("arch", "paper"))
    d = Discriminator(c["image_size"], c["channels"], c["width"])
    g.load_state_dict(ck["generator"])
    d.load_state_dict(ck["discriminator"])
    return g.to(device).eval(), d.to(device).eval()
