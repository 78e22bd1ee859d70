"""``ganomaly-build-engine SOURCE --out BUNDLE``: checkpoint or bundle -> bundle with a TensorRT plan.

SOURCE may be a checkpoint (exported to ONNX first: needs torch) or a bundle (needs no torch:
the Jetson case, where the bundle is copied over and the plan is built on the device). Without
TensorRT the result is a valid bundle that the ONNX Runtime backend runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

from ganomaly_edge.engine.version import version

from .errors import TrainError


DESCRIPTION = """\
Turn a checkpoint or a bundle into a model bundle with a TensorRT plan for this GPU.

SOURCE may be a checkpoint from ganomaly-train (exported to ONNX first: needs torch) or a bundle
(needs no torch: on a Jetson, copy the bundle over and build the plan there). Without TensorRT
the result is a valid bundle that the ONNX Runtime backend runs.

examples:
  ganomaly-build-engine model.pt --out bundle/                 # on the training machine
  ganomaly-build-engine bundle/ --out bundle/ --precision fp16  # on the device, adds its plan"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ganomaly-build-engine", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="checkpoint (.pt) from ganomaly-train, or a bundle directory/archive")
    ap.add_argument("--out", required=True, help="bundle directory to write (may equal SOURCE)")
    ap.add_argument("--self-check", action="store_true",
                    help="run the on-device acceptance check instead (no SOURCE or --out; see "
                         "'ganomaly-build-engine --self-check --help'); exit 0 pass, 1 fail, 3 no TensorRT/GPU")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    ap.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                    help="TensorRT plan precision (default fp16; int8 for an INT8 bundle). int8 first quantises the bundle's graph (static "
                         "QDQ, calibrated on the training run's held-out normal frames: docs/int8-openvino.md), "
                         "for ONNX Runtime and OpenVINO on the CPU, and builds the INT8 plan from that graph")
    ap.add_argument("--calibration-data", metavar="DIR",
                    help="--precision int8: a folder of normal frames to calibrate on, instead of the training "
                         "run's held-out frames (needed when the training data is not on this machine)")
    ap.add_argument("--int8-ops", choices=["conv", "conv+deconv"], default="conv+deconv",
                    help="--precision int8: quantise the convolutions only, or the decoder's transposed ones too")
    ap.add_argument("--max-batch", type=int, default=8,
                    help="frames per inference call (default 8); for a tiled bundle the TensorRT profile "
                         "covers this many frames times the tiles of one frame")
    ap.add_argument("--dla", type=int, metavar="CORE",
                    help="build for this DLA core (Xavier, Jetson AGX Orin: 0 or 1) with GPU fallback for the "
                         "layers the DLA cannot run; needs --precision fp16. Refused where the device has no DLA")
    ap.add_argument("--workspace-mib", type=int, default=1024, metavar="MIB",
                    help="GPU memory TensorRT may use while it builds, in MiB (default 1024; less on a "
                         "small Jetson if the build runs out of memory)")
    ap.add_argument("--timing-cache", help="TensorRT timing cache file, read and updated")
    ap.add_argument("--name", help="model name recorded in the bundle")
    ap.add_argument("--no-tensorrt", action="store_true", help="write the bundle only (ONNX Runtime)")
    ap.add_argument("--archive", help="also pack the bundle as this .tar.gz")
    ap.add_argument("--sign-key", metavar="KEY.pem",
                    help="sign the bundle's manifest with this ed25519 private key (bundle.json.sig); agents "
                         "with [model] trusted_keys load only bundles signed by a key they trust")
    ap.add_argument("--new-signing-key", metavar="KEY.pem",
                    help="make an ed25519 key pair instead (no SOURCE or --out): KEY.pem (private, 0600) and "
                         "KEY.pub (public, for model.trusted_keys)")
    ap.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress")
    return ap


class _Failed(TrainError):
    pass


def _bundle_from(source: str, out: str, name: str | None):
    """The bundle to build into: a copy of a bundle (no torch needed), or a checkpoint exported."""
    from ganomaly_edge.engine.bundle import open_bundle

    is_bundle = os.path.isdir(source) or source.endswith((".tar", ".tar.gz", ".tgz"))
    if is_bundle:
        src = open_bundle(source)
        if os.path.abspath(src.path) != os.path.abspath(out):
            if os.path.exists(out):
                shutil.rmtree(out)
            shutil.copytree(src.path, out)
        return open_bundle(out)
    try:
        from .export import ExportError, checkpoint_to_bundle
    except ImportError as e:
        raise _Failed(f"exporting a checkpoint needs PyTorch and onnx ({e}); install "
                      "'ganomaly-edge[train]' or build from a bundle made elsewhere") from e
    try:
        return checkpoint_to_bundle(source, out, name=name)
    except (ExportError, ValueError, FileNotFoundError) as e:
        raise _Failed(str(e)) from e


def _build_plan(bundle, args) -> None:
    from ganomaly_edge.engine.bundle import BundleError
    from ganomaly_edge.engine.loader import tensorrt_status

    trt_version, gpu, reason = tensorrt_status()
    if args.dla is not None and (args.no_tensorrt or gpu is None):
        raise _Failed(f"--dla needs TensorRT and a GPU with a DLA here ({'--no-tensorrt' if args.no_tensorrt else reason})")
    if args.no_tensorrt or gpu is None:
        why = "--no-tensorrt" if args.no_tensorrt else reason
        print(f"no TensorRT plan built ({why}): only the ONNX Runtime backend will be available "
              f"for {args.out}. Build the plan on the device: ganomaly-build-engine {args.out} --out {args.out}")
        return
    from ganomaly_edge.engine.trt_build import BuildError, BuildOptions, build_into_bundle

    try:
        entry = build_into_bundle(bundle, BuildOptions(
            precision=args.precision or ("int8" if bundle.precision == "int8" else "fp16"),
            max_batch=args.max_batch, workspace_mib=args.workspace_mib,
            timing_cache=args.timing_cache, progress=not args.quiet, dla_core=args.dla))
    except (BuildError, BundleError) as e:
        raise _Failed(str(e)) from e
    p = entry.parity
    dla = f", DLA core {entry.dla_core} with GPU fallback" if entry.dla_core is not None else ""
    print(f"TensorRT {entry.tensorrt_version} {entry.precision} plan for {entry.gpu_name} "
          f"(sm {entry.compute_capability}{dla}): {entry.file}, parity vs reference: score "
          f"{p['max_score_diff_calibrated']:.3g} calibrated units, residual {p['max_residual_diff']:.3g}")


def _quantise(bundle, args):
    from .int8_build import make_int8

    b = make_int8(bundle, args.calibration_data, args.int8_ops)
    q = b.meta.quantization
    print(f"INT8 bundle: {q.quantized_nodes} {args.int8_ops} node(s) quantised on {q.calibration_n} tiles "
          f"(sha256 {q.calibration_sha256[:12]}) of {q.calibration_source}; on {q.heldout_frames} other held-out "
          f"frames: max score diff {q.measured['max_score_diff_calibrated']:.3g} calibrated units, rank agreement "
          f"{q.measured['spearman_frames']:.3f}; self-test tolerance {b.meta.tolerance['int8']}")
    return b


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--self-check" in argv:  # on the device: needs neither torch nor a model of the user's
        from ganomaly_edge.engine.selfcheck import main as self_check

        return self_check([a for a in argv if a != "--self-check"])
    if "--new-signing-key" in argv:
        return _new_key(argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ganomaly_edge.engine.bundle import BundleError, archive

    if not os.path.exists(args.source):
        return _fail(f"{args.source!r} does not exist: pass a checkpoint from ganomaly-train or a bundle")
    from ganomaly_edge.engine.signing import SIGNATURE, SigningError, load_private_key, sign_bundle, stale_signature

    try:
        if args.sign_key:
            load_private_key(args.sign_key)  # a bad key fails before the build, not after it
        bundle = _bundle_from(args.source, args.out, args.name)
        if args.precision == "int8" and bundle.precision != "int8":
            bundle = _quantise(bundle, args)
        _build_plan(bundle, args)
        if args.sign_key:
            kid = sign_bundle(args.out, args.sign_key)
            print(f"signed by key {kid}: {os.path.join(args.out, SIGNATURE)}")
        elif stale_signature(args.out):
            os.remove(os.path.join(args.out, SIGNATURE))  # it signed another manifest: say so, not fail later
            print(f"the bundle's old signature no longer matches and was removed: pass --sign-key KEY.pem to "
                  f"sign {args.out} again (agents with model.trusted_keys refuse it unsigned)")
    except (_Failed, BundleError, SigningError) as e:
        return _fail(str(e))
    if args.archive:
        archive(args.out, args.archive)
        print(f"archive: {args.archive}")
    print(f"bundle: {args.out}")
    return 0


def _new_key(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ganomaly-build-engine --new-signing-key")
    ap.add_argument("--new-signing-key", metavar="KEY.pem", required=True)
    args = ap.parse_args(argv)
    from ganomaly_edge.engine.signing import SigningError, generate_key_pair, key_id, load_public_key

    try:
        private, public = generate_key_pair(args.new_signing_key)
    except (SigningError, OSError) as e:
        return _fail(str(e))
    print(f"private key {private} (keep it secret; sign with --sign-key {private})\n"
          f"public key  {public} (key {key_id(load_public_key(public))}; list it in [model] trusted_keys)")
    return 0


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
