"""Make the self-check's tiled bundle: ``python -m research.selfcheck_tiled``.

The self-check (``ganomaly-build-engine --self-check``) builds, times and memory-checks what users
deploy: a bundle from ``ganomaly-train --tile 64`` with that option's defaults (generator,
stride, position statistics: whatever the recipe says when this runs; of the scores it may
choose, the one with every head, ``SCORE``), at a 300 x 300
working resolution, which 64 px tiles at the default stride cut into 49 per frame. Only what
sets the size in bytes is made small (channel width, latent size) and training is one short epoch
on crops of scikit-image's brick texture: the check is about the deployed graph's structure,
not about detection.

Re-run it whenever the ``--tile`` recipe changes; it rewrites engine/selfcheck-bundles/tiled.
Needs the train extra (torch) and scikit-image (the dev extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "engine", "selfcheck-bundles", "tiled")
FRAME = 300  # working resolution: 49 tiles of 64 px at the default stride of 48
SMALL = ["--width", "4", "--latent-dim", "8"]  # bytes, not recipe
# --tile 64 chooses its score per run among scoring.AUTO_CANDIDATES; the self-check builds the
# candidate whose graph holds every head that choice can deploy (the edge-tolerant residual, the
# nearest-neighbour search over the training tiles' bank, the knn-weighted map): the largest.
SCORE = "rpeak+knn"


def frames(n: int = 24, seed: int = 0) -> np.ndarray:
    """``n`` greyscale 300 x 300 crops of a real texture (scikit-image's brick photograph)."""
    import cv2
    from skimage import data

    brick = data.brick()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, brick.shape[0] - FRAME), rng.integers(0, brick.shape[1] - FRAME)
        out.append(cv2.GaussianBlur(brick[y:y + FRAME, x:x + FRAME], (3, 3), 0))
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
    import cv2

    from ganomaly_edge.train.build_engine import main as build
    from ganomaly_edge.train.cli import train_main

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT, help=f"bundle directory to (re)write (default {OUT})")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="selfcheck-tiled-") as work:
        folder = os.path.join(work, "normal")
        os.makedirs(folder)
        for i, f in enumerate(frames()):
            cv2.imwrite(os.path.join(folder, f"brick_{i:03d}.png"), f)
        ck = os.path.join(work, "tiled.pt")
        rc = train_main(["--data", folder, "--out", ck, "--tile", "64", "--channels", "1", "--epochs", "1",
                         "--position-stats", "on", "--threads", "2", "--quiet", "--score", SCORE, *SMALL])
        if rc:
            return rc
        staged = os.path.join(work, "bundle")
        rc = build([ck, "--out", staged, "--no-tensorrt", "--name", "selfcheck-tiled", "--quiet"])
        if rc:
            return rc
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        shutil.copytree(staged, args.out)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
