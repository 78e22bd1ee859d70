"""Write the tiny bundles that ``ganomaly-build-engine --self-check`` ships with (one per score
component, 16x16 greyscale, width 8), trained briefly on scikit-learn's digits. Needs torch and
scikit-learn; the device that runs the check needs neither.

    python -m research.make_selfcheck_bundles [OUT_DIR]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import cv2
import numpy as np

from ganomaly_edge.engine.meta import COMPONENTS
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR


def digits(size: int = 16) -> np.ndarray:
    from sklearn.datasets import load_digits

    imgs = (load_digits().images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR) for i in imgs])[..., None]


def main(argv: list[str] | None = None) -> int:
    from ganomaly_edge.train.export import checkpoint_to_bundle
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    out = (argv or sys.argv[1:] or [BUNDLE_DIR])[0]
    images = digits()[:400]
    with tempfile.TemporaryDirectory() as tmp:
        for head in COMPONENTS:  # the tiled one: research/selfcheck_tiled.py
            cfg = TrainConfig(image_size=16, channels=1, width=8, latent_dim=8, epochs=2, batch_size=32,
                              threads=1, seed=0, score=head)
            ck = os.path.join(tmp, f"{head}.pt")
            Trainer(cfg, images, out_path=ck, progress=False).run()
            dst = os.path.join(out, head)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            checkpoint_to_bundle(ck, dst, name=f"selfcheck-{head}")
            print(f"wrote {dst}")
    write_int8(out)
    return 0


def write_int8(out: str) -> str:
    """The "int8" bundle: the peak bundle quantised on 40 digits it was not trained on."""
    from ganomaly_edge.engine.bundle import open_bundle
    from ganomaly_edge.train.int8_build import make_int8

    dst = os.path.join(out, "int8")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(os.path.join(out, "peak"), dst)
    with tempfile.TemporaryDirectory() as tmp:
        for i, img in enumerate(digits()[400:440]):
            cv2.imwrite(os.path.join(tmp, f"{i:03d}.png"), img)
        make_int8(open_bundle(dst), tmp, source_label="scikit-learn digits 400-439 (not trained on)")
    print(f"wrote {dst}")
    return dst


if __name__ == "__main__":
    sys.exit(main())
