"""The training's named choices (generators, scores, precisions), in a module without torch:
``ganomaly-train --help`` and ``--version`` build their parser from it on a device that has no
torch. The modules that use them (network.py, scoring.py, trainer.py) import them from here."""

from __future__ import annotations

ARCHS = ("paper", "skip")
PRECISIONS = ("auto", "fp32", "bf16")

# Candidate scores the benchmark reports; the default is chosen from its evidence (docs/training.md, docs/high-resolution.md).
CANDIDATES: dict[str, list[tuple[str, float]]] = {
    "latent": [("latent", 1.0)],
    "recon": [("recon", 1.0)],
    "features": [("features", 1.0)],
    "knn": [("knn", 1.0)],
    "recon+latent": [("recon", 1.0), ("latent", 1.0)],
    "recon+features": [("recon", 1.0), ("features", 1.0)],
    "knn+recon": [("knn", 1.0), ("recon", 1.0)],
    "knn+features": [("knn", 1.0), ("features", 1.0)],
    "knn+recon+features": [("knn", 1.0), ("recon", 1.0), ("features", 1.0)],
    "peak": [("peak", 1.0)],
    "peak+knn": [("peak", 1.0), ("knn", 1.0)],
    "fknn": [("fknn", 1.0)],
    "fknn+peak": [("fknn", 1.0), ("peak", 1.0)],
    "fknn+latent": [("fknn", 1.0), ("latent", 1.0)],
    "fknn+latent+peak": [("fknn", 1.0), ("latent", 1.0), ("peak", 1.0)],
    "knn+fknn+peak": [("knn", 1.0), ("fknn", 1.0), ("peak", 1.0)],
    "rpeak": [("rpeak", 1.0)],
    "rpeak+peak": [("rpeak", 1.0), ("peak", 1.0)],
    "rpeak+knn": [("rpeak", 1.0), ("knn", 1.0)],
    "rpeak+fknn": [("rpeak", 1.0), ("fknn", 1.0)],
}
DEFAULT_SCORE = "knn+fknn+peak"  # whole frames resized to the model input (docs/training.md: The score)
# Tiles at native resolution: chosen per run, without labels, among AUTO_CANDIDATES on the
# held-out normal frames against synthetic anomalies (train/selection.py). No single score held
# on every set: the edge-tolerant residual (rpeak) finds the cast parts' blowholes and burrs, and
# reads nothing on solar cells, whose cracks the tile encodings' nearest neighbour (knn) finds.
AUTO = "auto"
DEFAULT_TILE_SCORE = AUTO
AUTO_CANDIDATES = ("rpeak", "knn", "rpeak+knn", "peak", "peak+knn")
