"""Checkpoint -> ONNX -> model bundle, with a parity check against PyTorch.

The graph takes the frame crop as uint8 [N, H, W, C]; cast, normalisation and the layout change
are inside it, so a GPU does them and the host copies 4x fewer bytes. Outputs: ``score`` [N]
(the raw value of the checkpoint's chosen score) and ``residual`` [N, H, W].
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from typing import Any

import numpy as np
import torch

from ganomaly_edge.engine.bundle import DEFAULT_TOLERANCE, Bundle, write_bundle
from ganomaly_edge.engine.window import Window

from .scoring import Scorer
from .checkpoint import load_checkpoint, models_from_checkpoint, versions
from .errors import TrainError

log = logging.getLogger(__name__)

OPSET = 17
INPUT, SCORE, RESIDUAL = "images", "score", "residual"
# The export fails if ONNX Runtime's score differs more than 1e-4 relative AND more than 1e-3
# calibrated units (a tenth of the fp32 self-test tolerance). The second figure is the one that
# matters for a decision; the first alone is ill-posed for standardised sums, whose scores sit
# near zero (an undertrained model's tiny component spread magnifies float rounding).
PARITY_REL = 1e-4
PARITY_CALIBRATED = 1e-3


RESIDUAL_MEANING = {
    "abs": "mean |x - G(x)| over channels, normalised units (0..2)",
    "range": "edge-tolerant residual: how far x lies outside the 3x3 range of G(x), mean over channels, "
             "normalised units (0..2)",
}
for _base in ("abs", "range"):
    RESIDUAL_MEANING[f"{_base}-knn"] = (RESIDUAL_MEANING[_base] + ", times the tile's distance to its nearest "
                                        "training tile (encodings), so quiet tiles stay dark")


class ExportError(TrainError, RuntimeError):
    pass


def scorer_from_checkpoint(ck: dict[str, Any]) -> Scorer:
    g, d = models_from_checkpoint(ck, "cpu")
    bank = torch.from_numpy(np.asarray(ck["bank"], np.float32)) if ck.get("bank") is not None else None
    fbank = torch.from_numpy(np.asarray(ck["fbank"], np.float32)) if ck.get("fbank") is not None else None
    return Scorer(g, d, ck["score"], bank, fbank).eval()


def export_onnx(scorer: Scorer, size: int, channels: int) -> bytes:
    dummy = torch.zeros(2, size, size, channels, dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer, (dummy,), buf, input_names=[INPUT], output_names=[SCORE, RESIDUAL],
            dynamic_axes={INPUT: {0: "N"}, SCORE: {0: "N"}, RESIDUAL: {0: "N"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def parity(onnx_bytes: bytes, scorer: Scorer, images: np.ndarray, scale: float) -> dict[str, float]:
    """ONNX Runtime vs PyTorch on the reference images (one batch and one at a time)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ts, tr = scorer(torch.from_numpy(images))
    ts, tr = ts.numpy().astype(np.float64), tr.numpy()
    os_, or_ = sess.run([SCORE, RESIDUAL], {INPUT: images})
    single = np.array([sess.run([SCORE], {INPUT: images[i:i + 1]})[0][0] for i in range(len(images))])
    d_score = float(max(np.abs(os_ - ts).max(), np.abs(single - ts).max()))
    return {
        "max_abs_score": d_score,
        "max_rel_score": d_score / max(float(np.abs(ts).max()), 1e-12),
        "max_calibrated_score": d_score / scale,
        "max_abs_residual": float(np.abs(or_ - tr).max()),
        "reference_scores": ts.tolist(),
    }


def checkpoint_to_bundle(ckpt_path: str, out_dir: str, name: str | None = None) -> Bundle:
    import onnx

    ck = load_checkpoint(ckpt_path)
    if not ck.get("complete"):
        raise ExportError(f"{ckpt_path} is from an unfinished training run (not calibrated yet): "
                          "finish it with 'ganomaly-train ... --resume'")
    cfg = ck["config"]
    size, ch = cfg["image_size"], cfg["channels"]
    scorer = scorer_from_checkpoint(ck)
    onnx_bytes = export_onnx(scorer, size, ch)
    model = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(model, full_check=True)
    refs = np.ascontiguousarray(ck["reference_images"])
    p = parity(onnx_bytes, scorer, refs, ck["calibration"]["scale"])
    print(f"parity ONNX Runtime vs PyTorch on {len(refs)} reference images: max |score diff| "
          f"{p['max_abs_score']:.3g} ({p['max_rel_score']:.3g} relative, {p['max_calibrated_score']:.3g} "
          f"in calibrated units), max |residual diff| {p['max_abs_residual']:.3g}")
    if (p["max_rel_score"] > PARITY_REL and p["max_calibrated_score"] > PARITY_CALIBRATED) \
            or p["max_abs_residual"] > 1e-4:
        raise ExportError(f"ONNX export does not score like PyTorch (score difference {p['max_rel_score']:.3g} "
                          f"relative, {p['max_calibrated_score']:.3g} calibrated units; residual "
                          f"{p['max_abs_residual']:.3g}); not writing a bundle")
    with torch.no_grad():
        ref_score, ref_res = scorer(torch.from_numpy(refs))
    reference = {"inputs": refs, "score": ref_score.numpy().astype(np.float32),
                 "residual": ref_res.numpy().astype(np.float32)}
    with open(ckpt_path, "rb") as f:
        ck_hash = hashlib.sha256(f.read()).hexdigest()
    meta = {
        "name": name or os.path.splitext(os.path.basename(ckpt_path))[0],
        "input": {"name": INPUT, "dtype": "uint8", "layout": "NHWC", "height": size, "width": size,
                  "channels": ch, "color_order": ck["preprocess"]["color_order"],
                  "normalisation": ck["preprocess"]["normalisation"]},
        "outputs": {SCORE: {"dtype": "float32", "shape": ["N"], "meaning": "raw anomaly score"},
                    RESIDUAL: {"dtype": "float32", "shape": ["N", size, size],
                               "meaning": RESIDUAL_MEANING[ck["score"].get("residual") or "abs"]}},
        "opset": OPSET,
        "tiling": ck.get("tiling"),
        "window": Window.parse(cfg["window"]).as_meta() if cfg.get("window") else None,
        "score": {"name": ck["score"]["name"], "terms": ck["score"]["terms"], "k": ck["score"].get("k"),
                  "margin": ck["score"].get("margin"), "residual": ck["score"].get("residual")},
        "calibration": ck["calibration"],
        "checkpoint": {"sha256": ck_hash, "epochs": ck["epoch"], "config": cfg, "data": ck.get("data", {}),
                       "versions": ck.get("versions", {}), "training_warnings": ck.get("training_warnings", [])},
        "export_parity": {k: v for k, v in p.items() if k != "reference_scores"},
        "tolerance": DEFAULT_TOLERANCE,
        "versions": dict(versions(), onnx=onnx.__version__, onnxruntime=_ort_version()),
    }
    b = write_bundle(out_dir, onnx_bytes, reference, meta)
    log.info("wrote bundle %s (model sha256 %s)", out_dir, b.model_hash)
    return b


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
