"""INT8 bundles: a static QDQ graph quantised from the fp32 one, calibrated on held-out normal tiles.

What an INT8 bundle holds beyond an fp32 one (docs/int8-openvino.md):

- ``model.onnx`` is the QDQ graph: QuantizeLinear/DequantizeLinear pairs around the networks'
  convolutions (per-channel int8 weights, per-tensor int8 activations, every zero point 0 as
  TensorRT's ONNX parser demands: onnx-tensorrt operators.md, "`y_zero_point` must be 0"). The
  preprocessing, the residual and the score head (kNN distances, TopK) stay fp32.
- ``int8-calibration.npz`` holds the tiles the activation ranges were calibrated on; bundle.json's
  ``quantization.calibration_sha256`` is the hash of their bytes, checked whenever the bundle is
  opened, so a bundle whose calibration data was swapped or damaged is refused.
- ``tolerance["int8"]`` is derived from the fp32-vs-int8 differences measured on held-out frames, and
  ``calibration`` is re-set on INT8 scores (the fp32 calibration moved by the shift INT8 makes in the
  median and the threshold of the same held-out frames).

The same QDQ graph feeds ONNX Runtime (CPU), OpenVINO (which runs QDQ graphs in int8) and
TensorRT (explicit quantization: on 8.6 with the INT8 builder flag, on 10.x/11 strongly typed as it is).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from .bundle import Bundle, BundleError

CALIBRATION_FILE = "int8-calibration.npz"
# Operators quantised (inside the networks only, never the score head): "conv" quantises the
# encoders' convolutions; "conv+deconv" also the decoder's transposed convolutions.
OP_SETS = {"conv": ("Conv",), "conv+deconv": ("Conv", "ConvTranspose")}
DEFAULT_OPS = "conv+deconv"
# The self-test tolerance of an INT8 bundle: this many times the largest difference measured on
# held-out frames (never below the fp32 tolerance).
TOLERANCE_MARGIN = 2.0


def data_hash(tiles: np.ndarray) -> str:
    """sha256 of the calibration tiles: dtype, shape and bytes."""
    h = hashlib.sha256(f"{tiles.dtype.str}{list(tiles.shape)}".encode())
    h.update(np.ascontiguousarray(tiles).tobytes())
    return h.hexdigest()


def check_calibration(b: Bundle) -> None:
    """BundleError unless an INT8 bundle's calibration data is present and matches its recorded hash."""
    q = b.meta.quantization
    if q is None:
        return
    path = b.file(CALIBRATION_FILE)
    if not os.path.exists(path):
        raise BundleError(f"INT8 bundle {b.path}: {CALIBRATION_FILE} is missing, so its quantisation cannot be "
                          "traced to the data it was calibrated on; copy the whole bundle again or rebuild it "
                          "with 'ganomaly-build-engine CHECKPOINT --out DIR --precision int8'")
    try:
        with np.load(path) as z:
            tiles = z["tiles"]
    except (OSError, KeyError, ValueError) as e:
        raise BundleError(f"INT8 bundle {b.path}: {CALIBRATION_FILE} is unreadable ({e}); copy the bundle again "
                          "or rebuild it with --precision int8") from None
    got = data_hash(tiles)
    if got != q.calibration_sha256:
        raise BundleError(f"INT8 bundle {b.path}: the calibration data hash does not match ({got[:12]} != recorded "
                          f"{q.calibration_sha256[:12]}): {CALIBRATION_FILE} is not the data this graph was "
                          "quantised on. Copy the bundle again, or rebuild it with 'ganomaly-build-engine "
                          "CHECKPOINT --out DIR --precision int8'")


def nodes_to_quantize(onnx_bytes: bytes, ops: str) -> list[str]:
    """The nodes of the chosen operator set. Convolutions only ever occur inside the networks;
    the score head (kNN MatMul, TopK, pooling) has none, so it stays fp32 whatever the exporter's
    scope names are."""
    import onnx

    if ops not in OP_SETS:
        raise ValueError(f"int8 operator set must be one of {sorted(OP_SETS)}, not {ops!r}")
    model = onnx.load_from_string(onnx_bytes)
    return [n.name for n in model.graph.node if n.op_type in OP_SETS[ops]]


class _Reader:
    """ONNX Runtime's CalibrationDataReader over uint8 tiles, a few at a time."""

    def __init__(self, name: str, tiles: np.ndarray, batch: int = 16):
        self.name, self.tiles, self.batch, self.i = name, tiles, batch, 0

    def get_next(self):
        if self.i >= len(self.tiles):
            return None
        x = self.tiles[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: np.ascontiguousarray(x)}

    def rewind(self) -> None:
        self.i = 0


def quantize_graph(onnx_bytes: bytes, input_name: str, tiles: np.ndarray, ops: str = DEFAULT_OPS) -> bytes:
    """The static QDQ graph of ``onnx_bytes``: per-channel symmetric int8 weights, symmetric int8
    activations calibrated (min-max) on ``tiles``; only ``nodes_to_quantize`` are quantised."""
    import tempfile

    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as e:
        raise BundleError(f"INT8 quantisation needs ONNX Runtime's quantisation tools ({e}): pip install "
                          "'ganomaly-edge[cpu,onnx]'") from None
    nodes = nodes_to_quantize(onnx_bytes, ops)
    if not nodes:
        raise BundleError("the bundle's graph has no network convolutions to quantise (not a ganomaly-edge export?)")
    with tempfile.TemporaryDirectory(prefix="ganomaly-int8-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(onnx_bytes)
        quantize_static(src, dst, _Reader(input_name, tiles), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_quantize=nodes, calibrate_method=CalibrationMethod.MinMax,
                        # biases stay fp32: TensorRT dequantises INT8 only, never ONNX Runtime's int32 biases
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False})
        with open(dst, "rb") as f:
            return f.read()


def zero_points_nonzero(onnx_bytes: bytes) -> list[str]:
    """Q/DQ nodes whose zero point is not 0 (TensorRT refuses them); empty for a graph it takes."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(onnx_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    bad = []
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zp = inits.get(n.input[2])
            if zp is None or np.any(zp != 0):
                bad.append(n.name or n.output[0])
    return bad


def derived_tolerance(d_score: float, d_residual: float, fp32: dict[str, float]) -> dict[str, float]:
    """The INT8 self-test tolerance from the largest differences measured on held-out frames."""
    return {"score": float(max(fp32["score"], TOLERANCE_MARGIN * d_score)),
            "residual": float(max(fp32["residual"], TOLERANCE_MARGIN * d_residual))}


def shifted_calibration(calib: dict[str, Any], fp32_frames: np.ndarray, int8_frames: np.ndarray) -> dict[str, Any]:
    """The fp32 calibration re-set on INT8 scores, from the paired differences of the same held-out
    frames scored by both graphs: the median moves by their median, the raw threshold by their
    median over the frames fp32 scores in its upper half (the ones nearest the threshold); the
    scale follows the new threshold. Keeps the training's careful (leave-one-out) calibration and
    adds what INT8 changes where alarms are decided.

    Paired, not a second calibration: refitting the tail on INT8 scores and moving the threshold
    by the difference of two fits (the first way) let a change at the low end move the threshold.
    On a 20-epoch ELPV network with position statistics, INT8 raised the lowest frame scores by up
    to 1.0 and the highest by 0.05-0.16; the two tail fits moved the threshold down by 1.4, and 3
    of 118 normal test cells alarmed where fp32's threshold let 1 through."""
    a, q = np.asarray(fp32_frames, np.float64), np.asarray(int8_frames, np.float64)
    d = q - a
    upper = a >= np.median(a)
    out = dict(calib)
    out["median"] = float(calib["median"] + np.median(d))
    thr = calib.get("threshold_raw")
    if thr is not None:
        out["threshold_raw"] = float(max(thr + np.median(d[upper]), out["median"] + 1e-9))
        out["scale"] = float(out["threshold_raw"] - out["median"])
    for k in ("mean", "std"):
        out.pop(k, None)
    thr_new = out.get("threshold_raw", out["median"] + out["scale"])
    out["val_far"] = float(np.mean(q > thr_new))
    out["method"] = f"{calib.get('method', 'calibrated')}, int8-shifted"
    return out
