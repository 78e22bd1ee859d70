"""``ganomaly-build-engine SOURCE --out B --precision int8``: an fp32 bundle made into an INT8 one.

Needs no torch: the held-out normal frames are the training run's own (the bundle records the data
folder, its fingerprint, the seed and the validation share, so ``train.data.split`` finds them
again), or a folder of normal frames given with ``--calibration-data``. Every other held-out frame
calibrates the activation ranges (at most MAX_CALIBRATION_FRAMES); the rest measure what INT8
changes: the self-test tolerance and the shift of the calibration (engine/int8.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ganomaly_edge.engine.bundle import INT8_VERSION, ONNX, Bundle, BundleError, sha256_file
from ganomaly_edge.engine.int8 import (CALIBRATION_FILE, DEFAULT_OPS, data_hash, derived_tolerance, nodes_to_quantize,
                                       quantize_graph, shifted_calibration, zero_points_nonzero)

log = logging.getLogger(__name__)

MAX_CALIBRATION_FRAMES = 16
CHUNK = 64  # model inputs per ONNX Runtime call while measuring


def heldout_frames(b: Bundle, calibration_data: str | None) -> tuple[np.ndarray, str]:
    """Normal frames at the bundle's working resolution, and where they came from."""
    from .data import DataError, load_folder, split

    t = b.tiling
    size = (t.height, t.width) if t.tiled else t.height
    ch = b.input.channels
    if calibration_data:
        try:
            return load_folder(calibration_data, size, ch).images, os.path.abspath(calibration_data)
        except DataError as e:
            raise BundleError(f"--calibration-data: {e}") from None
    data, cfg = b.meta.checkpoint.get("data") or {}, b.meta.checkpoint.get("config") or {}
    src = data.get("source")
    if not src or not os.path.isdir(src):
        raise BundleError(f"INT8 calibration needs the training run's normal frames, but the bundle's data folder "
                          f"{src!r} is not here: pass --calibration-data DIR (a folder of normal frames)")
    from ganomaly_edge.train.trainer import fingerprint

    images = load_folder(src, size, ch).images
    if data.get("fingerprint") and fingerprint(images) != data["fingerprint"]:
        raise BundleError(f"the images under {src} are not the ones the model was trained on (fingerprint "
                          "differs): pass --calibration-data DIR with normal frames instead")
    _, val = split(len(images), cfg.get("val_fraction", 0.1), cfg.get("seed", 0))
    return images[val], f"{src} (held-out split, {len(val)} frames)"


def _session(onnx_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def run_graph(session, name: str, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outs = [session.run(["score", "residual"], {name: tiles[i:i + CHUNK]}) for i in range(0, len(tiles), CHUNK)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def measure(b: Bundle, fp32: bytes, int8: bytes, frames: np.ndarray) -> dict[str, Any]:
    """fp32 and INT8 on the held-out frames and on the reference inputs: raw tile and frame scores,
    the largest differences (raw score, residual), rank agreement of the frame scores."""
    t, name = b.tiling, b.input.name
    a, q = _session(fp32), _session(int8)
    tiles = t.split(frames)
    ref = b.reference()["inputs"]
    (sa, ra), (sq, rq) = run_graph(a, name, tiles), run_graph(q, name, tiles)
    (rsa, rra), (rsq, rrq) = run_graph(a, name, ref), run_graph(q, name, ref)
    fa, fq = t.frame_scores(sa), t.frame_scores(sq)
    return {"fp32_frames": fa, "int8_frames": fq,
            "d_score": float(max(np.abs(sa - sq).max(), np.abs(rsa - rsq).max())),
            "d_residual": float(max(np.abs(ra - rq).max(), np.abs(rra - rrq).max())),
            "spearman_frames": _spearman(fa, fq), "spearman_tiles": _spearman(sa, sq)}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 2 else 1.0


def make_int8(b: Bundle, calibration_data: str | None = None, ops: str = DEFAULT_OPS,
              source_label: str | None = None) -> Bundle:
    """Quantise bundle ``b`` (fp32, in place) into an INT8 bundle; returns it re-read.
    ``source_label`` replaces the calibration folder's path in the record (a temporary folder)."""
    if b.precision == "int8":
        raise BundleError(f"{b.path} is already an INT8 bundle: quantise from the checkpoint or an fp32 bundle")
    frames, source = heldout_frames(b, calibration_data)
    from ganomaly_edge.engine.calibration import MIN_VALIDATION_IMAGES

    if len(frames) < 2 * MIN_VALIDATION_IMAGES:
        raise BundleError(f"{len(frames)} normal frames are too few to calibrate INT8 (at least "
                          f"{2 * MIN_VALIDATION_IMAGES}: half calibrate the ranges, half measure the differences and "
                          "re-set the threshold); pass --calibration-data DIR with more")
    calib_frames, test_frames = frames[0::2][:MAX_CALIBRATION_FRAMES], frames[1::2]
    tiles = np.ascontiguousarray(b.tiling.split(calib_frames))
    with open(b.file(ONNX), "rb") as f:
        fp32 = f.read()
    int8 = quantize_graph(fp32, b.input.name, tiles, ops)
    bad = zero_points_nonzero(int8)
    if bad:
        raise BundleError(f"the quantised graph has non-zero zero points at {bad[:3]} (TensorRT refuses them)")
    m = measure(b, fp32, int8, test_frames)
    _write(b, fp32, int8, tiles, m, {"ops": ops, "source": source_label or source, "n_test": len(test_frames),
                                     "nodes": len(nodes_to_quantize(fp32, ops))})
    from ganomaly_edge.engine.bundle import open_bundle

    return open_bundle(b.path)


def _write(b: Bundle, fp32: bytes, int8: bytes, tiles: np.ndarray, m: dict[str, Any], info: dict[str, Any]) -> None:
    from ganomaly_edge.engine.meta import Calibration, QuantizationMeta

    with open(b.file(ONNX), "wb") as f:
        f.write(int8)
    np.savez_compressed(b.file(CALIBRATION_FILE), tiles=tiles)
    for p in list(b.meta.plans):  # compiled from the fp32 graph
        b.drop_plan(p)
    calib = shifted_calibration(b.meta.calibration.model_dump(exclude_none=True), m["fp32_frames"], m["int8_frames"])
    b.meta.calibration = Calibration(**calib)
    scale = b.meta.calibration.scale
    tol = dict(b.meta.tolerance)
    tol["int8"] = derived_tolerance(m["d_score"] / scale, m["d_residual"], tol.get("fp32", {"score": 2e-3,
                                                                                              "residual": 2e-3}))
    b.meta.tolerance = tol
    b.meta.quantization = QuantizationMeta(
        method="static QDQ (ONNX Runtime quantize_static): per-channel symmetric int8 weights, symmetric int8 "
               "activations (min-max); score head fp32", ops=info["ops"], quantized_nodes=info["nodes"],
        calibration_file=CALIBRATION_FILE, calibration_sha256=data_hash(tiles), calibration_n=len(tiles),
        calibration_source=info["source"], fp32_model_sha256=b.meta.files[ONNX], heldout_frames=info["n_test"],
        measured={"max_score_diff_calibrated": m["d_score"] / scale, "max_residual_diff": m["d_residual"],
                  "spearman_frames": m["spearman_frames"], "spearman_tiles": m["spearman_tiles"]})
    b.meta.files = dict(b.meta.files, **{ONNX: sha256_file(b.file(ONNX)),
                                         CALIBRATION_FILE: sha256_file(b.file(CALIBRATION_FILE))})
    b.meta.format_version = max(b.meta.format_version, INT8_VERSION)
    b.write_meta()
    log.info("INT8 bundle %s: %d nodes quantised; on %d held-out frames max score diff %.3g calibrated units, "
             "residual %.3g, rank agreement %.3f", b.path, info["nodes"], info["n_test"], m["d_score"] / scale,
             m["d_residual"], m["spearman_frames"])
