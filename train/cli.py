"""``ganomaly-train`` and ``ganomaly-eval``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ganomaly_edge.engine.version import version

log = logging.getLogger("ganomaly")


def _setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _train_parser() -> argparse.ArgumentParser:
    from .scoring import CANDIDATES, DEFAULT_SCORE

    ap = argparse.ArgumentParser(
        prog="ganomaly-train",
        description="Train GANomaly on a folder of normal images (searched recursively), "
                    "calibrate its score on held-out normal images and write a checkpoint.")
    ap.add_argument("--data", required=True, help="folder of normal images (png, jpg, bmp, tiff)")
    ap.add_argument("--out", required=True, help="checkpoint file to write (rewritten every epoch)")
    ap.add_argument("--image-size", type=int, default=64, help="square input size (default 64)")
    ap.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 greyscale, 3 colour (BGR)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of the images held out for model selection and calibration")
    ap.add_argument("--far", type=float, default=0.01, help="target false-alarm rate of the threshold")
    ap.add_argument("--score", choices=sorted(CANDIDATES), default=DEFAULT_SCORE,
                    help=f"anomaly score to deploy (default {DEFAULT_SCORE}; see README)")
    ap.add_argument("--select", choices=["last", "best-val"], default="last",
                    help="keep the last epoch, or the epoch with the lowest validation loss")
    ap.add_argument("--patience", type=int, default=0,
                    help="stop after this many epochs without validation improvement (0 = never)")
    ap.add_argument("--width", type=int, default=64, help="base channel width (paper: 64)")
    ap.add_argument("--latent-dim", type=int, default=100, help="latent size (paper: 100)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return ap


def train_main(argv: list[str] | None = None) -> int:
    ap = _train_parser()
    args = ap.parse_args(argv)
    _setup_logging(args.quiet)

    from .data import DataError, load_folder
    from .network import UnsupportedSizeError, check_image_size

    try:
        check_image_size(args.image_size)
        if args.epochs < 1 or args.batch_size < 2:
            return _fail("--epochs must be >= 1 and --batch-size >= 2 (BatchNorm needs a batch)")
        if not 0 < args.far < 0.5:
            return _fail("--far must be between 0 and 0.5, e.g. 0.01 for 1 %")
        data = load_folder(args.data, args.image_size, args.channels)
    except (UnsupportedSizeError, DataError) as e:
        return _fail(str(e))
    log.info("%d images loaded from %s (%d unreadable, skipped)", len(data.images), args.data, len(data.skipped))

    from .checkpoint import load_checkpoint
    from .trainer import Trainer, TrainConfig

    cfg = TrainConfig(image_size=args.image_size, channels=args.channels, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, device=args.device,
                      val_fraction=args.val_fraction, target_far=args.far, score=args.score,
                      select=args.select, patience=args.patience, threads=args.threads,
                      width=args.width, latent_dim=args.latent_dim)
    try:
        tr = Trainer(cfg, data.images, out_path=args.out, progress=not args.quiet,
                     data_info={"source": os.path.abspath(args.data), "n_images": len(data.images),
                                "skipped": len(data.skipped)})
        if args.resume and os.path.exists(args.out):
            tr.load_state(load_checkpoint(args.out))
        ck = tr.run()
    except (DataError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    c = ck["calibration"]
    print(f"checkpoint: {args.out}\nscore: {ck['score']['name']}  threshold (raw): {c['threshold_raw']:.6g} "
          f"for {100 * c['target_far']:.2g}% false alarms on {c['n']} held-out normal images")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ganomaly-eval",
        description="Score labelled folders with a checkpoint: report.json (ROC AUC and average "
                    "precision for each score, rates at the calibrated threshold), ROC curve, "
                    "score histograms and a grid of reconstructions.")
    ap.add_argument("checkpoint")
    ap.add_argument("--normal", required=True, help="folder of normal test images")
    ap.add_argument("--abnormal", required=True, help="folder of anomalous test images")
    ap.add_argument("--out", required=True, help="report folder")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = ap.parse_args(argv)
    _setup_logging()

    from .data import DataError, load_folder
    from .checkpoint import load_checkpoint

    try:
        ck = load_checkpoint(args.checkpoint)
        if not ck.get("complete"):
            return _fail(f"{args.checkpoint} is from an unfinished run (no calibration yet): "
                         "finish it with ganomaly-train --resume")
        size, ch = ck["config"]["image_size"], ck["config"]["channels"]
        normal = load_folder(args.normal, size, ch).images
        abnormal = load_folder(args.abnormal, size, ch).images
    except (FileNotFoundError, ValueError, DataError) as e:
        return _fail(str(e))
    from .evaluate import evaluate

    rep = evaluate(ck, normal, abnormal, args.out, device=args.device, plots=not args.no_plots)
    for name, s in rep["scores"].items():
        mark = "*" if name == rep["default_score"] else " "
        print(f"{mark} {name:<20} ROC AUC {s['roc_auc']:.3f}  AP {s['average_precision']:.3f}")
    t = rep["at_threshold"]
    print(f"at the calibrated threshold: TPR {t['true_positive_rate']:.3f}, false-alarm rate "
          f"{t['false_alarm_rate']:.3f} ({t['false_alarms']} of {rep['counts']['normal']} normal)")
    print(f"report: {os.path.join(args.out, 'report.json')}")
    return 0
