"""``ganomaly-calibrate model.pt|bundle/ --normal DIR [--normal DIR ...] [--far 0.01] --out DIR``.

When the network is fine and the threshold is not: the threshold set again from more normal
frames (exported false alarms, a folder of recent frames from the line), scored by the bundle
on ONNX Runtime exactly as the agent scores them. The new bundle has the same graph (and keeps
its TensorRT plans, which stay valid) with a new calibration, so a new ``model.hash``. Without
torch when the input is a bundle: it runs on the device.

The frames given are the calibration set: they should be normal frames the network was not
trained on (a recent stretch of the line, with the false alarms the operators marked), enough of
them for the rate asked (``--far 0.01`` wants a few hundred; fewer fall back to a fitted tail).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile

import numpy as np

from ganomaly_edge.engine.bundle import BundleError, meta_hash, open_bundle
from ganomaly_edge.engine.calibration import calibrate
from ganomaly_edge.engine.version import version

log = logging.getLogger("ganomaly")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ganomaly-calibrate",
        description="Set a model's alarm threshold again from more normal frames and write a new bundle "
                    "(same network, new calibration) for the agent to hot-swap.")
    ap.add_argument("model", help="a bundle (folder or .tar.gz) or a checkpoint (.pt, needs torch)")
    ap.add_argument("--normal", action="append", required=True, metavar="DIR",
                    help="folder of normal frames the model was not trained on (repeatable): exported false "
                         "alarms (ganomaly-agent export), recent frames of the line")
    ap.add_argument("--far", type=float, default=0.01, help="target false-alarm rate per frame (default 0.01)")
    ap.add_argument("--out", required=True, help="the new bundle folder (must not exist, or be empty)")
    ap.add_argument("--name", help="the new bundle's name (default: the old name + '-recal')")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 < args.far < 0.5:
        return _fail("--far must be between 0 and 0.5, e.g. 0.01 for 1 %")
    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        return _fail(f"--out {args.out} exists and is not empty: give a new folder (the old bundle stays for "
                     "rollback)")
    with tempfile.TemporaryDirectory(prefix="ganomaly-calibrate-") as tmp:
        try:
            src = _bundle_of(args.model, tmp)
            report = recalibrate(src, args.normal, args.far, args.out, args.name, args.threads)
        except (BundleError, ValueError, OSError) as e:
            if os.path.isdir(args.out) and not os.listdir(args.out):
                os.rmdir(args.out)
            return _fail(str(e))
    print(describe(report))
    return 0


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _bundle_of(model: str, tmp: str) -> str:
    """The bundle to recalibrate: ``model`` itself, or a checkpoint exported into ``tmp``."""
    if not os.path.exists(model):
        raise ValueError(f"{model} does not exist: give a bundle folder, a bundle archive or a checkpoint (.pt)")
    if os.path.isdir(model) or model.endswith((".tar.gz", ".tgz")):
        return model
    from .export import checkpoint_to_bundle  # torch: only for a checkpoint

    return checkpoint_to_bundle(model, os.path.join(tmp, "bundle")).path


def frames_for(bundle, folders: list[str]) -> tuple[np.ndarray, list[str]]:
    """Every readable image under ``folders`` at the bundle's working resolution and channels."""
    from .data import DataError, load_folder

    t, ch = bundle.tiling, bundle.input.channels
    images, paths = [], []
    for folder in folders:
        try:
            data = load_folder(folder, (t.height, t.width), ch, bundle.window)  # 16-bit: the bundle's window
        except DataError as e:
            raise ValueError(str(e)) from None
        images.append(data.images)
        paths += data.paths
    return np.concatenate(images), paths


def recalibrate(src: str, folders: list[str], far: float, out: str, name: str | None = None,
                threads: int = 0) -> dict:
    """Score the frames with the bundle (ONNX Runtime, self-tested), calibrate, write ``out``."""
    from ganomaly_edge.engine import load

    engine = load(src, "onnxruntime", threads=threads)
    try:
        b = engine.bundle
        frames, paths = frames_for(b, folders)
        raw = np.concatenate([engine.score_frames(frames[i:i + 32], b.tiling)[0] for i in range(0, len(frames), 32)])
        old = b.calibration
        calib = calibrate(raw, far)
        old_thr = old.threshold_raw if old.threshold_raw is not None else old.median + old.scale * old.threshold
        report = {"source": src, "out": out, "frames": len(raw), "folders": folders, "target_far": far,
                  "old": {"threshold_raw": old_thr, "median": old.median, "far_on_these": float(np.mean(raw > old_thr)),
                          "target_far": old.target_far, "hash": b.model_hash},
                  "new": {"threshold_raw": calib.threshold_raw, "median": calib.median,
                          "far_on_these": calib.val_far, "method": calib.method}}
        new = _write(b, out, calib, name or f"{b.name}-recal", report)
        report["new"]["hash"] = new.model_hash
    finally:
        engine.close()
    return report


def _write(b, out: str, calib, name: str, report: dict):
    """A copy of bundle ``b`` with the new calibration; a signature, now stale, is left out."""
    from ganomaly_edge.engine.signing import SIGNATURE

    shutil.copytree(b.path, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(SIGNATURE, SIGNATURE + ".tmp"))
    path = os.path.join(out, "bundle.json")
    with open(path) as f:
        meta = json.load(f)
    meta["calibration"] = calib.model_dump()  # the typed Calibration (engine/meta.py)
    meta["name"] = name
    meta["checkpoint"] = {**meta.get("checkpoint", {}),
                          "recalibrated": {"from": report["old"]["hash"], "frames": report["frames"]}}
    meta["integrity"] = meta_hash(meta)
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(path + ".tmp", path)
    if os.path.exists(os.path.join(b.path, SIGNATURE)):
        log.warning("the source bundle was signed; the new one is not: sign it with ganomaly-build-engine "
                    "%s --out %s --sign-key KEY.pem before a device with model.trusted_keys loads it", out, out)
    return open_bundle(out)


def describe(r: dict) -> str:
    o, n = r["old"], r["new"]
    return (f"bundle: {r['out']} (model.hash {n['hash']}, was {o['hash']})\n"
            f"calibrated on {r['frames']} normal frame(s) from {', '.join(r['folders'])}\n"
            f"threshold (raw): {o['threshold_raw']:.6g} -> {n['threshold_raw']:.6g} ({n['method']})\n"
            f"false alarms on these frames: {100 * o['far_on_these']:.2f} % with the old threshold -> "
            f"{100 * n['far_on_these']:.2f} % with the new one (target {100 * r['target_far']:.2g} %)\n"
            f"swap it in: mosquitto_pub -t <prefix>/model/set -m '{{\"bundle\": \"{os.path.abspath(r['out'])}\"}}'")


if __name__ == "__main__":
    sys.exit(main())
