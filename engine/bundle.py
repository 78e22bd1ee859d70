"""The model bundle: the contract between training and every runtime.

A bundle is a directory (or a .tar / .tar.gz archive of one)::

    bundle.json      metadata, format "ganomaly-edge-bundle", version FORMAT_VERSION
    model.onnx       uint8 images [N, H, W, C] -> score [N] (raw), residual [N, H, W]
    reference.npz    inputs (uint8) and the outputs PyTorch produced for them
    plans/*.plan     zero or more TensorRT plans, each valid only on the GPU model and
                     TensorRT version that built it (recorded per plan)

bundle.json holds: ``input`` (name, layout, size, channels, colour order, normalisation),
``outputs``, ``score`` (which score and its terms), ``calibration`` (median, scale, raw
threshold, target false-alarm rate; the calibrated score is (raw - median) / scale and alarms
at 1.0), ``checkpoint`` (sha256 of the source checkpoint, epochs, training settings),
``files`` (sha256 of every file), ``tolerance`` (per precision, for the self-test), ``plans``
(per plan: file, sha256, tensorrt_version, gpu_name, compute_capability, precision,
max_batch, parity figures), ``versions`` (of the libraries that wrote it).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from .errors import EngineError
from .meta import BundleMeta, Calibration, InputMeta, PlanMeta, describe_errors
from .tiling import Tiling, TilingError

log = logging.getLogger(__name__)

FORMAT = "ganomaly-edge-bundle"
FORMAT_VERSION = 4  # 2: bundle.json carries an integrity hash of itself; 3: tiling; 4: tile position statistics
# 5: a plan records its GPU's multiprocessor count and DLA core. Exports stay at FORMAT_VERSION; a
# bundle becomes version 5 when a plan with those fields is added, so an older agent says "newer:
# upgrade" instead of refusing an unknown field.
PLAN_FIELDS_VERSION = 5
# 6: an INT8 bundle (a QDQ graph, its calibration data and record: engine/int8.py); fp32 bundles stay older.
INT8_VERSION = 6
READABLE_VERSIONS = (2, 3, 4, 5, 6)  # a version-2 bundle is an untiled version 3, a version 3 one has no position statistics
META = "bundle.json"
ONNX = "model.onnx"
REFERENCE = "reference.npz"
PLANS = "plans"

# Self-test tolerances: the score in calibrated units (1.0 = distance from a typical normal
# image to the threshold), the residual map in normalised pixel units (range 0..2).
DEFAULT_TOLERANCE = {
    "fp32": {"score": 2e-3, "residual": 2e-3},
    "fp16": {"score": 5e-2, "residual": 3e-2},
}
# An INT8 bundle records its own, measured tolerance (engine/int8.derived_tolerance); this is only
# the fallback for one that lacks it.
INT8_FALLBACK_TOLERANCE = {"score": 0.25, "residual": 0.1}


class BundleError(EngineError, RuntimeError):
    """A bundle cannot be used; the message names the problem and the fix."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def meta_hash(meta: dict[str, Any]) -> str:
    """sha256 of the metadata (all but its own ``integrity`` field), canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "integrity"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


InputSpec = InputMeta  # the model's input, as recorded in the bundle


@dataclass
class Bundle:
    path: str
    meta: BundleMeta
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    signed_by: str | None = None  # the trusted key that signed it (engine/signing.py), when checked

    @property
    def input(self) -> InputMeta:
        return self.meta.input

    @property
    def name(self) -> str:
        return self.meta.name or os.path.basename(self.path.rstrip("/"))

    @property
    def tiling(self) -> Tiling:
        """How frames are cut into model inputs; one input per frame when the bundle is untiled."""
        t = self.meta.tiling
        if t is None:
            return Tiling.single(self.meta.input.height)
        return _tiling(t)

    @property
    def window(self):
        """The 16-bit intensity window the model was trained with (engine/window.py), or None."""
        from .window import Window

        w = self.meta.window
        return Window.from_meta(w.model_dump(exclude_none=True)) if w is not None else None

    @property
    def model_hash(self) -> str:
        """What scores a frame: the ONNX graph with the tiling and calibration around it (a
        recalibrated bundle has the same graph and another hash; a TensorRT plan added to it does
        not change it). 16 hex digits, on every alarm as model.hash."""
        m = self.meta
        scoring = {"onnx": m.files[ONNX], "calibration": m.calibration.model_dump(mode="json"),
                   "tiling": m.tiling.model_dump(mode="json") if m.tiling else None}
        return hashlib.sha256(json.dumps(scoring, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def training_warnings(self) -> list[str]:
        """What ganomaly-train found wrong with the run this bundle's model came from (trained too
        little, a held-out loss that never fell); empty when nothing was, or for older bundles."""
        return [str(w) for w in self.meta.checkpoint.get("training_warnings") or []]

    @property
    def calibration(self) -> Calibration:
        return self.meta.calibration

    @property
    def plans(self) -> list[PlanMeta]:
        return list(self.meta.plans)

    def file(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def reference(self) -> dict[str, np.ndarray]:
        with np.load(self.file(REFERENCE)) as z:
            return {k: z[k] for k in z.files}

    def tolerance(self, precision: str) -> dict[str, float]:
        tol = self.meta.tolerance or DEFAULT_TOLERANCE
        if precision == "int8":
            return tol.get("int8", INT8_FALLBACK_TOLERANCE)
        if precision == "bf16":  # OpenVINO's bf16: 8 mantissa bits, tested like fp16
            precision = "fp16"
        return tol.get(precision, DEFAULT_TOLERANCE.get(precision, DEFAULT_TOLERANCE["fp32"]))

    @property
    def precision(self) -> str:
        """The graph's precision: "int8" for a QDQ bundle (engine/int8.py), else "fp32"."""
        return "int8" if self.meta.quantization is not None else "fp32"

    def verify_file(self, rel: str, expected: str | None = None) -> None:
        """Raise BundleError if ``rel`` is missing or its hash differs from the metadata."""
        path = self.file(rel)
        if not os.path.exists(path):
            raise BundleError(f"bundle {self.path}: {rel} is missing; copy the whole bundle directory again")
        want = expected or self.meta.files.get(rel)
        if want is None:
            raise BundleError(f"bundle {self.path}: {rel} has no recorded hash; rebuild the bundle")
        got = sha256_file(path)
        if got != want:
            raise BundleError(
                f"bundle {self.path}: {rel} does not match its recorded hash (sha256 {got[:12]} != "
                f"{want[:12]}): the file is truncated, corrupt or was replaced; copy it again or rebuild "
                "with ganomaly-build-engine")

    def write_meta(self) -> None:
        data = self.meta.model_dump(mode="json", exclude_none=True)
        data["integrity"] = self.meta.integrity = meta_hash(data)
        tmp = self.file(META + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.file(META))

    def add_plan(self, plan_bytes: bytes, info: dict[str, Any]) -> PlanMeta:
        """Store a plan and its metadata, replacing any plan for the same GPU, compute capability,
        TensorRT, precision and DLA core."""
        os.makedirs(self.file(PLANS), exist_ok=True)
        safe_gpu = "".join(ch if ch.isalnum() else "-" for ch in info["gpu_name"]).strip("-")
        dla = f"_dla{info['dla_core']}" if info.get("dla_core") is not None else ""
        rel = (f"{PLANS}/{safe_gpu}_sm{info.get('compute_capability', '')}_trt{info['tensorrt_version']}_"
               f"{info['precision']}{dla}.plan")
        with open(self.file(rel + ".tmp"), "wb") as f:
            f.write(plan_bytes)
        os.replace(self.file(rel + ".tmp"), self.file(rel))
        entry = PlanMeta(**info, file=rel, sha256=sha256_file(self.file(rel)), size=len(plan_bytes), built=now_iso())
        self.put_plan(entry)
        return entry

    def put_plan(self, entry: PlanMeta) -> None:
        if entry.multiprocessors is not None or entry.dla_core is not None:
            self.meta.format_version = max(self.meta.format_version, PLAN_FIELDS_VERSION)
        self.meta.plans = [p for p in self.meta.plans if p.file != entry.file] + [entry]
        self.write_meta()

    def drop_plan(self, entry: PlanMeta) -> None:
        self.meta.plans = [p for p in self.meta.plans if p.file != entry.file]
        self.write_meta()
        if os.path.exists(self.file(entry.file)):
            os.remove(self.file(entry.file))


def _open_archive(path: str) -> tuple[str, tempfile.TemporaryDirectory]:
    tmp = tempfile.TemporaryDirectory(prefix="ganomaly-bundle-")
    try:
        with tarfile.open(path) as tar:
            tar.extractall(tmp.name, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        tmp.cleanup()
        raise BundleError(f"cannot unpack bundle archive {path}: {e}; copy it again") from e
    entries = os.listdir(tmp.name)
    root = tmp.name
    if META not in entries and len(entries) == 1 and os.path.isdir(os.path.join(tmp.name, entries[0])):
        root = os.path.join(tmp.name, entries[0])
    return root, tmp


def open_bundle(path: str, verify: bool = True, trusted_keys: list[str] | None = None) -> Bundle:
    """Open and check a bundle: format version, metadata, file hashes (ONNX and reference); with
    ``trusted_keys`` (public key files), first its signature by one of them (engine/signing.py)."""
    if not os.path.exists(path):
        raise BundleError(f"model bundle {path!r} does not exist: build one with "
                          "'ganomaly-build-engine CHECKPOINT --out DIR' or fix the path in the config")
    tmp = None
    root = path
    if os.path.isfile(path):
        if not tarfile.is_tarfile(path):
            raise BundleError(f"{path!r} is neither a bundle directory nor a .tar/.tar.gz archive of one")
        root, tmp = _open_archive(path)
    meta_path = os.path.join(root, META)
    try:
        meta, signed_by = _read_meta(path, root, trusted_keys)
    except BundleError:
        if tmp is not None:
            tmp.cleanup()
        raise
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path} is not a ganomaly-edge bundle (format "
                          f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    v = meta.get("format_version")
    if v not in READABLE_VERSIONS:
        newer = isinstance(v, int) and v > max(READABLE_VERSIONS)
        raise BundleError(
            f"bundle format version {v} is {'newer' if newer else 'older'} than the version this "
            f"ganomaly-edge reads ({max(READABLE_VERSIONS)}): "
            + ("upgrade ganomaly-edge on this device" if newer else
               "rebuild the bundle with 'ganomaly-build-engine CHECKPOINT --out DIR'"))
    for key in ("input", "outputs", "calibration", "files", "score"):
        if key not in meta:
            raise BundleError(f"{meta_path} lacks {key!r}: the bundle is incomplete; rebuild it")
    if meta.get("integrity") != meta_hash(meta):
        raise BundleError(f"{meta_path} does not match its integrity hash: it was edited or damaged after "
                          "ganomaly-build-engine wrote it (calibration, files or plans changed). Copy the bundle "
                          "again, or rebuild it; to recalibrate, retrain or re-export")
    try:
        meta = BundleMeta.model_validate(meta)
    except ValidationError as e:
        raise BundleError(f"{meta_path}: {describe_errors(e)}; rebuild the bundle") from e
    _check_fields(meta, meta_path)
    b = Bundle(root, meta, tmp, signed_by)
    if verify:
        b.verify_file(ONNX)
        b.verify_file(REFERENCE)
        if meta.quantization is not None:
            from .int8 import check_calibration

            b.verify_file(meta.quantization.calibration_file)
            check_calibration(b)
    return b


def _check_fields(meta: BundleMeta, meta_path: str) -> None:
    """Fields that need a newer format version than the file says, and an inconsistent tiling."""
    if meta.tiling is not None:
        if meta.format_version < 3:
            raise BundleError(f"{meta_path}: format version {meta.format_version} with a tiling (tiles came "
                              "in version 3); the file was edited: rebuild the bundle")
        if meta.tiling.position_mean is not None and meta.format_version < 4:
            raise BundleError(f"{meta_path}: format version {meta.format_version} with tile position statistics "
                              "(they came in version 4); the file was edited: rebuild the bundle")
        try:
            _tiling(meta.tiling)
        except TilingError as e:
            raise BundleError(f"{meta_path}: invalid tiling ({e}); rebuild the bundle") from e
        if meta.tiling.tile != meta.input.height or meta.input.height != meta.input.width:
            raise BundleError(f"{meta_path}: the tiling's {meta.tiling.tile} px tile is not the model's "
                              f"{meta.input.width}x{meta.input.height} input; rebuild the bundle")
    if meta.quantization is not None and meta.format_version < INT8_VERSION:
        raise BundleError(f"{meta_path}: format version {meta.format_version} with an INT8 record (INT8 came in "
                          f"version {INT8_VERSION}); the file was edited: rebuild the bundle")


def _read_meta(path: str, root: str, trusted_keys: list[str] | None) -> tuple[Any, str | None]:
    """bundle.json parsed, and the trusted key that signed it (checked first, when keys are given)."""
    meta_path = os.path.join(root, META)
    if not os.path.exists(meta_path):
        raise BundleError(f"{path!r} has no {META}: not a ganomaly-edge bundle (build one with ganomaly-build-engine)")
    try:
        with open(meta_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BundleError(f"{meta_path} is unreadable ({e}): copy the bundle again") from e
    signed_by = None
    if trusted_keys:  # before anything in it is believed
        from .signing import SIGNATURE, SigningError, verify_manifest

        try:
            signed_by = verify_manifest(raw, os.path.join(root, SIGNATURE), trusted_keys, path)
        except (ValueError, SigningError) as e:
            raise BundleError(str(e)) from None
        log.info("bundle %s: signed by trusted key %s", path, signed_by)
    try:
        return json.loads(raw), signed_by
    except ValueError as e:
        raise BundleError(f"{meta_path} is unreadable or not JSON ({e}): copy the bundle again") from e


def _tiling(t) -> Tiling:
    return Tiling(t.tile, t.stride, t.height, t.width, t.margin, t.position_mean, t.position_scale)


def write_bundle(out_dir: str, onnx_bytes: bytes, reference: dict[str, np.ndarray], meta: dict[str, Any]) -> Bundle:
    """Write a new bundle directory (replacing ONNX, reference and metadata; plans are dropped
    because they were compiled from the previous ONNX)."""
    os.makedirs(out_dir, exist_ok=True)
    if os.path.isdir(os.path.join(out_dir, PLANS)):
        shutil.rmtree(os.path.join(out_dir, PLANS))
    with open(os.path.join(out_dir, ONNX), "wb") as f:
        f.write(onnx_bytes)
    np.savez(os.path.join(out_dir, REFERENCE), **reference)
    meta = dict(meta)
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "created": now_iso(), "plans": []})
    meta.setdefault("tolerance", DEFAULT_TOLERANCE)
    meta["files"] = {ONNX: sha256_file(os.path.join(out_dir, ONNX)),
                     REFERENCE: sha256_file(os.path.join(out_dir, REFERENCE))}
    meta["integrity"] = ""
    meta = BundleMeta.model_validate(meta)
    b = Bundle(out_dir, meta)
    b.write_meta()
    return b


def archive(bundle_dir: str, out_path: str) -> str:
    """Pack a bundle directory as .tar.gz for copying to a device."""
    with tarfile.open(out_path, "w:gz") as tar:
        tar.add(bundle_dir, arcname=os.path.basename(os.path.abspath(bundle_dir)))
    return out_path
