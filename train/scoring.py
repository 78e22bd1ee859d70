"""Anomaly scores of a trained GANomaly, and the scoring module that is exported to ONNX.

Components, each one number per image, all computed in eval mode (one image's score never
depends on the rest of its batch):

- ``latent``   the paper's score: mean squared difference of the two encodings z and z_hat.
- ``recon``    mean squared reconstruction residual |x - G(x)|^2 over pixels.
- ``features`` mean squared difference of the discriminator's penultimate features of x and
               G(x) (the feature-matching distance that drives the adversarial loss).
- ``peak``     the largest local mean of the residual map (a window of about 1/8 of the image):
               small defects that barely move an image-wide mean still make a peak.
- ``rpeak``    the same on the edge-tolerant residual (``range_residual``): how far each pixel
               lies outside the range of the reconstruction around it, so a reconstruction that
               draws an edge a pixel too soft or too far leaves nothing, while a pit or a spot
               on a surface the decoder redraws clean still does. A small window (2 px): at
               native resolution a defect may be a few pixels.
- ``knn``      mean squared distance of z to its k nearest encodings of the training images
               (a memory bank stored with the model).
- ``fknn``     the same nearest-neighbour distance on a richer description of x: the penultimate
               feature maps of the encoder and of the discriminator, each averaged over positions
               and scaled to unit length, side by side (``embed``). Class-level novelty (a new
               kind of object, not a scratch) shows there; reconstruction residuals miss it.

A score spec is a weighted sum of standardised components, ``sum w * (c - mean) / std``, whose
means and standard deviations come from the held-out normal images. The spec, the bank and
the networks make one ``Scorer`` module: uint8 [N, H, W, C] in, (score [N], residual [N, H, W])
out, preprocessing inside the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganomaly_edge.engine.meta import COMPONENTS

from .choices import AUTO, AUTO_CANDIDATES, CANDIDATES, DEFAULT_SCORE, DEFAULT_TILE_SCORE  # noqa: F401
from .errors import TrainError
from .network import Discriminator, Generator

KNN_K = 5
KNN_SPARE = 7  # knn_distance: candidates beyond k whose exact distances are compared
# Tiles compare each tile's encoding with its single nearest training tile, and the bank holds
# every training tile (up to checkpoint.BANK_MAX): on real solar-cell images (ELPV, mono) the
# nearest neighbour of a bank of all 20,727 tiles gave ROC AUC 0.862 where 5 neighbours of a
# random 8,192 gave 0.826, on the same network (docs: high-resolution benchmark).
KNN_K_TILES = 1
RANGE_NEIGHBOURHOOD = 3  # range_residual's tolerance: the reconstruction's range over 3 x 3 pixels
RPEAK_WINDOW = 2
# The residual map a bundle outputs: |x - G(x)|, or range_residual; "-knn": that map times the
# tile's nearest-neighbour distance, so where a tile's encoding raised the alarm its residual
# shows where in the tile, and the quiet tiles around it stay dark (boxes from what alarmed).
RESIDUALS = ("abs", "range", "abs-knn", "range-knn")


class ScoreError(TrainError, ValueError):
    """A score, component or residual map that is unknown or that this model cannot compute."""


def to_model_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [-1, 1] (the bundle's normalisation).

    The cast comes first: TensorRT takes a UINT8 network input only into a Cast, not even a
    Transpose (engine/trt_compat.py)."""
    return images_u8.float().permute(0, 3, 1, 2) / 127.5 - 1.0


def peak_residual(residual: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """Max over positions of the residual map averaged in a window of ~1/8 of the image side,
    ``margin`` pixels in from each side (a tile's border reconstructs worse: engine/tiling.py)."""
    return window_peak(residual, max(3, residual.shape[-1] // 8), margin)


def range_residual(x: torch.Tensor, x_hat: torch.Tensor, n: int = RANGE_NEIGHBOURHOOD) -> torch.Tensor:
    """[N, C, H, W] -> [N, H, W]: how far each pixel of x lies outside [min, max] of x_hat over
    its n x n neighbourhood, mean over channels (0 inside the range)."""
    hi = F.max_pool2d(x_hat, n, 1, n // 2)
    lo = -F.max_pool2d(-x_hat, n, 1, n // 2)
    return torch.relu(torch.maximum(x - hi, lo - x)).mean(1)


def window_peak(residual: torch.Tensor, window: int, margin: int = 0) -> torch.Tensor:
    """Max over positions ``margin`` px in from each side of the residual's mean in a window."""
    if margin:
        residual = residual[:, margin:-margin, margin:-margin]
    if window > 1:
        residual = F.avg_pool2d(residual[:, None], window, stride=1)[:, 0]
    return torch.amax(residual, dim=(1, 2))


def knn_distance(z: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Mean squared distance (per dimension) of each row of z to its k nearest bank rows.

    Candidates are found with |z|^2 - 2 z.b + |b|^2 (one matrix product), but their distances
    are then recomputed from the differences and the k nearest taken among those: for near
    neighbours the expanded form cancels catastrophically (unit-length features: 2 - 2 cos), so
    two runtimes may rank near-equal neighbours differently; KNN_SPARE more candidates than k
    make the exact nearest be among them whichever ranking a runtime's rounding gives."""
    d2 = (z * z).sum(1, keepdim=True) - 2.0 * z @ bank.t() + (bank * bank).sum(1)[None, :]
    m = min(k + KNN_SPARE, bank.shape[0])
    idx = torch.topk(d2, m, dim=1, largest=False).indices
    diff = z[:, None, :] - bank[idx]
    exact = (diff * diff).sum(2)
    if m > k:
        exact = torch.topk(exact, k, dim=1, largest=False).values
    return exact.mean(1) / z.shape[1]


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / (torch.sqrt((v * v).sum(1, keepdim=True)) + 1e-8)


def embedding(e_features: torch.Tensor, d_features: torch.Tensor) -> torch.Tensor:
    """[N, Fe + Fd]: the encoder's and the discriminator's penultimate feature maps of x,
    averaged over positions, each scaled to unit length, side by side."""
    return torch.cat([unit(e_features.mean((2, 3))), unit(d_features.mean((2, 3)))], 1)


class Scorer(nn.Module):
    """Exportable scoring graph: uint8 frames -> (score, residual)."""

    def __init__(self, generator: Generator, discriminator: Discriminator, spec: dict[str, Any],
                 bank: torch.Tensor | None = None, fbank: torch.Tensor | None = None):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.terms = [(t["component"], float(t["weight"]), float(t["mean"]), float(t["std"]))
                      for t in spec["terms"]]
        needed = {t[0] for t in self.terms}
        unknown = needed - set(COMPONENTS)
        if unknown:
            raise ScoreError(f"unknown score components {sorted(unknown)}; known: {COMPONENTS}")
        self.k = int(spec.get("k", KNN_K))
        self.margin = int(spec.get("margin") or 0)
        self.residual = spec.get("residual") or "abs"
        if self.residual not in RESIDUALS:
            raise ScoreError(f"unknown residual map {self.residual!r}; known: {RESIDUALS}")
        if "knn" in needed:
            if bank is None:
                raise ScoreError("the knn component needs the training encodings (bank)")
            self.register_buffer("bank", bank.float())
        else:
            self.bank = None
        if "fknn" in needed:
            if fbank is None:
                raise ScoreError("the fknn component needs the training images' embeddings (fbank)")
            self.register_buffer("fbank", fbank.float())
        else:
            self.fbank = None
        self.needed = needed

    def forward(self, images_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_model_input(images_u8)
        comps, residual, _ = score_components(self.generator, self.discriminator, x, self.needed,
                                              self.bank, self.fbank, self.k, self.margin, self.residual)
        score = None
        for name, w, m, s in self.terms:
            term = (comps[name] - m) * (w / s)
            score = term if score is None else score + term
        return score, residual


def score_components(g: Generator, d: Discriminator, x: torch.Tensor, needed: set[str],
                     bank: torch.Tensor | None, fbank: torch.Tensor | None, k: int = KNN_K, margin: int = 0,
                     residual_map: str = "abs"):
    """The one definition of every component: ({name: [N]}, residual [N, H, W], x_hat), computing
    only what ``needed`` asks for; the residual is |x - G(x)| or, for ``residual_map="range"``,
    the edge-tolerant one. The exported graph and the evaluation both call it."""
    # Submodules are called as modules (not their parts), so exported node names keep their
    # scopes (/encoder1/..., /discriminator/...): the FP16 pass selects layers by them.
    z, feat, x_hat = g.reconstruct(x)
    comps: dict[str, torch.Tensor] = {}
    fr = None
    if "latent" in needed:  # the second encoder is a third of the FLOPs: only when scored
        comps["latent"] = torch.mean((z - g.encoder2(x_hat)) ** 2, dim=(1, 2, 3))
    if "recon" in needed:
        comps["recon"] = torch.mean((x - x_hat) ** 2, dim=(1, 2, 3))
    if "features" in needed or "fknn" in needed:
        _, fr = d(x)
    if "features" in needed:
        _, ff = d(x_hat)
        comps["features"] = torch.mean((fr - ff) ** 2, dim=(1, 2, 3))
    if "knn" in needed:
        comps["knn"] = knn_distance(z.flatten(1), bank, k)
    if "fknn" in needed:
        comps["fknn"] = knn_distance(embedding(feat, fr), fbank, k)
    residual = torch.mean(torch.abs(x - x_hat), dim=1)
    if "peak" in needed:
        comps["peak"] = peak_residual(residual, margin)
    if "rpeak" in needed or residual_map.startswith("range"):
        tolerant = range_residual(x, x_hat)
        if "rpeak" in needed:
            comps["rpeak"] = window_peak(tolerant, RPEAK_WINDOW, margin)
        if residual_map.startswith("range"):
            residual = tolerant
    if residual_map.endswith("-knn"):
        residual = residual * comps["knn"][:, None, None]
    return comps, residual, x_hat


@torch.no_grad()
def encode(generator: Generator, images_u8: np.ndarray, device: torch.device,
           batch_size: int = 256) -> np.ndarray:
    """Training-set encodings z [N, nz] for the knn bank (eval mode)."""
    generator.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = to_model_input(torch.from_numpy(images_u8[i:i + batch_size]).to(device))
        out.append(generator.encoder1(x).flatten(1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed(generator: Generator, discriminator: Discriminator, images_u8: np.ndarray, device: torch.device,
          batch_size: int = 256) -> np.ndarray:
    """Training-set embeddings [N, Fe + Fd] for the fknn bank (eval mode)."""
    generator.eval()
    discriminator.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = to_model_input(torch.from_numpy(images_u8[i:i + batch_size]).to(device))
        _, e = generator.encoder1(x, True)
        out.append(embedding(e, discriminator.features(x)).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def components(generator: Generator, discriminator: Discriminator, images_u8: np.ndarray,
               device: torch.device, bank: np.ndarray | None = None, batch_size: int = 256,
               with_images: bool = False, fbank: np.ndarray | None = None, margin: int = 0,
               residual_map: str = "abs", k: int = KNN_K) -> dict[str, np.ndarray]:
    """Every score component for every image (eval mode), plus reconstructions and the
    ``residual_map`` if asked."""
    generator.eval()
    discriminator.eval()
    bank_t = torch.from_numpy(bank).to(device) if bank is not None else None
    fbank_t = torch.from_numpy(fbank).to(device) if fbank is not None else None
    needed = {c for c in COMPONENTS if not (c == "knn" and bank_t is None) and not (c == "fknn" and fbank_t is None)}
    acc: dict[str, list[np.ndarray]] = {c: [] for c in needed}
    recons: list[np.ndarray] = []
    maps: dict[str, list[np.ndarray]] = {"abs": [], "range": []}
    for i in range(0, len(images_u8), batch_size):
        x = to_model_input(torch.from_numpy(images_u8[i:i + batch_size]).to(device))
        comps, res, x_hat = score_components(generator, discriminator, x, needed, bank_t, fbank_t, k=k,
                                             margin=margin, residual_map=residual_map)
        for name, v in comps.items():
            acc[name].append(v.cpu().numpy())
        if with_images:
            recons.append(((x_hat.permute(0, 2, 3, 1) + 1.0) * 127.5).clamp(0, 255).byte().cpu().numpy())
            maps["abs"].append(torch.mean(torch.abs(x - x_hat), dim=1).cpu().numpy())
            maps["range"].append(range_residual(x, x_hat).cpu().numpy())
    out = {k: np.concatenate(v).astype(np.float64) for k, v in acc.items() if v}
    if with_images:
        out["reconstruction"] = np.concatenate(recons)
        for kind, parts in maps.items():  # both maps, for evaluation; "residual" is the bundle's
            out[f"residual_{kind}"] = np.concatenate(parts)
        base = residual_map.removesuffix("-knn")
        out["residual"] = out[f"residual_{base}"] * (out["knn"][:, None, None] if base != residual_map else 1.0)
    return out


# The candidate scores and the defaults live in choices.py, which ganomaly-train --help reads without torch.


def residual_map_for(name: str, tiled: bool = False) -> str:
    """The residual map a bundle with score ``name`` outputs: the one its score reads, so boxes
    come from what raised the alarm; on tiles, weighted by each tile's nearest-neighbour
    distance where the score reads it (a whole frame has one distance: it would only rescale)."""
    used = {c for c, _ in CANDIDATES[name]}
    return ("range" if "rpeak" in used else "abs") + ("-knn" if tiled and "knn" in used else "")


def make_spec(name: str, val_components: dict[str, np.ndarray], margin: int = 0, k: int = KNN_K,
              tiled: bool = False) -> dict[str, Any]:
    """Score spec for candidate ``name``, standardised on the validation images' components."""
    if name not in CANDIDATES:
        raise ScoreError(f"unknown score {name!r}; choose one of {sorted(CANDIDATES)}")
    terms = []
    single = len(CANDIDATES[name]) == 1
    for comp, w in CANDIDATES[name]:
        v = val_components[comp]
        # A single component keeps its raw scale; sums need a common one.
        mean = 0.0 if single else float(np.mean(v))
        std = 1.0 if single else float(max(np.std(v), 1e-12))
        terms.append({"component": comp, "weight": w, "mean": mean, "std": std})
    return {"name": name, "terms": terms, "k": int(k), "margin": margin, "residual": residual_map_for(name, tiled)}


def apply_spec(spec: dict[str, Any], comps: dict[str, np.ndarray]) -> np.ndarray:
    """The spec's raw score from precomputed components (numpy mirror of ``Scorer``)."""
    total = None
    for t in spec["terms"]:
        term = (comps[t["component"]] - t["mean"]) * (t["weight"] / t["std"])
        total = term if total is None else total + term
    return total
