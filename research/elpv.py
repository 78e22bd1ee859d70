"""Real defects: electroluminescence photographs of monocrystalline solar cells (ELPV).

The PyPI package ``elpv-dataset`` ships 2,624 cells of 300 x 300 (uint8 greyscale), each with a
defect probability given by experts (0, 1/3, 2/3, 1) and a type (mono- or polycrystalline):
cracks, broken fingers and dark inactive areas, photographed on a real production line.

Only the **monocrystalline** cells are used here (588 at probability 0, 313 at 1; the 173 at
1/3 or 2/3 are written apart under ``test/uncertain`` and reported separately). The
polycrystalline cells are never read: they are kept as a held-out check.

The split is fixed (seed 0): 80 % of the normal cells to train, the other 20 % and every cell
with probability 1 to test. There are no pixel masks: image-level figures only.

    python -m research.elpv --out runs/hires-data/elpv-mono
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

TRAIN_SHARE = 0.8


def mono_cells() -> tuple[np.ndarray, np.ndarray]:
    """The monocrystalline cells and their defect probabilities; the polycrystalline ones are
    dropped before anything else touches them."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise SystemExit("the ELPV benchmark needs the elpv-dataset package: pip install elpv-dataset") from e
    images, proba, types = load_dataset()
    mono = np.asarray(types) == "mono"
    return np.asarray(images)[mono], np.asarray(proba, dtype=np.float64)[mono]


def split(proba: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of the fixed split: train (80 % of the normal cells), test normal (the rest),
    test abnormal (probability 1) and uncertain (1/3 and 2/3)."""
    normal = np.flatnonzero(proba == 0)
    order = np.random.default_rng(seed).permutation(normal)
    n_train = int(round(TRAIN_SHARE * len(normal)))
    return {"train": np.sort(order[:n_train]), "normal": np.sort(order[n_train:]),
            "abnormal": np.flatnonzero(proba == 1),
            "uncertain": np.flatnonzero((proba > 0) & (proba < 1))}


def write_mono(out: str, seed: int = 0) -> str:
    """train/, test/normal/, test/abnormal/, test/uncertain/ as PNG, test/cells.csv (index in the
    package's list of mono cells, probability). Written once: an existing set is kept."""
    import cv2

    marker = os.path.join(out, "test", "cells.csv")
    if os.path.exists(marker):
        return out
    images, proba = mono_cells()
    parts = split(proba, seed)
    rows = []
    for key, sub in (("train", "train"), ("normal", "test/normal"), ("abnormal", "test/abnormal"),
                     ("uncertain", "test/uncertain")):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        for i in parts[key]:
            name = f"{i:04d}.png"
            if not cv2.imwrite(os.path.join(out, sub, name), images[i]):
                raise OSError(f"could not write {os.path.join(out, sub, name)}")
            rows.append({"file": f"{sub}/{name}", "mono_index": int(i), "probability": round(float(proba[i]), 4)})
    with open(marker + ".tmp", "w", newline="") as f:
        wr = csv.DictWriter(f, ["file", "mono_index", "probability"])
        wr.writeheader()
        wr.writerows(rows)
    os.replace(marker + ".tmp", marker)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.elpv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write the set to")
    ap.add_argument("--seed", type=int, default=0, help="split seed (the benchmark's is 0)")
    a = ap.parse_args(argv)
    write_mono(a.out, a.seed)
    counts = {sub: len(os.listdir(os.path.join(a.out, sub)))
              for sub in ("train", "test/normal", "test/abnormal", "test/uncertain")}
    print(f"{a.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
