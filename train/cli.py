"""``ganomaly-train`` and ``ganomaly-eval``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ganomaly_edge.engine.tiling import Tiling, default_stride, margin_for
from ganomaly_edge.engine.version import version

from .finetune import DEFAULT_BUDGET_MIN, DEFAULT_OVERSAMPLE

# Generators by default: the paper's for whole frames (every FMNIST/MNIST figure in docs/training.md), and
# Skip-GANomaly's for tiles, chosen on the high-resolution benchmark (docs/high-resolution.md).
DEFAULT_ARCH, DEFAULT_TILE_ARCH = "paper", "skip"
# Early-stopping patience: the tiled skip generator's held-out loss is noisy from epoch to epoch
# (foreign patches, the adversarial term), and on the parts benchmark it kept improving until
# epoch 17 after a spike at 7 that patience 3 stopped on (docs/high-resolution.md).
DEFAULT_PATIENCE, DEFAULT_TILE_PATIENCE = 3, 6
DEFAULT_TILE_EMA = 0.998  # the generator's weight average with tiles: about the last 500 steps

log = logging.getLogger("ganomaly")


def _setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _missing_train_extra() -> str | None:
    """What training and evaluation need that this Python lacks (a device with the core and the
    [cpu] extra only), said with what to install; None when all is there."""
    import importlib.util

    missing = [name for name, module in (("torch", "torch"), ("OpenCV", "cv2"), ("scikit-learn", "sklearn"))
               if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not installed: training and evaluation need the train extra, "
            "pip install 'ganomaly-edge[train]' (install torch first from the index that fits: "
            "docs/training.md, Installing torch)")


def _train_parser() -> argparse.ArgumentParser:
    from .choices import ARCHS, AUTO, AUTO_CANDIDATES, CANDIDATES, DEFAULT_SCORE, DEFAULT_TILE_SCORE, PRECISIONS

    ap = argparse.ArgumentParser(
        prog="ganomaly-train",
        description="Train GANomaly on a folder of normal images (searched recursively), "
                    "calibrate its score on held-out normal images and write a checkpoint.")
    ap.add_argument("--data", required=True, action="append",
                    help="folder of normal images (png, jpg, bmp, tiff); with --init-from, repeatable (e.g. the "
                         "original normal folder and exported false alarms)")
    _finetune_args(ap)
    ap.add_argument("--out", required=True, help="checkpoint file to write (rewritten every epoch)")
    _input_args(ap)
    ap.add_argument("--arch", choices=ARCHS,
                    help=f"generator: paper (GANomaly) or skip (U-Net skips, Skip-GANomaly); default "
                         f"{DEFAULT_ARCH}, with --tile {DEFAULT_TILE_ARCH}")
    ap.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 greyscale, 3 colour (BGR)")
    ap.add_argument("--epochs", type=int, default=50, help="at most this many epochs (default 50)")
    ap.add_argument("--patience", type=int,
                    help="stop after this many epochs without improvement on the held-out normal "
                         f"images (default {DEFAULT_PATIENCE}, with --tile {DEFAULT_TILE_PATIENCE}; 0 = run every epoch)")
    ap.add_argument("--time-budget", type=float, default=0.0, metavar="MINUTES",
                    help="stop training in time to finish, calibration included, within this many minutes")
    ap.add_argument("--select", choices=["last", "best-val"], default="best-val",
                    help="keep the epoch with the lowest held-out loss (default) or the last one")
    _recipe_args(ap)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of the images held out for model selection and calibration")
    ap.add_argument("--far", type=float, help="target false-alarm rate of the threshold, per frame (default 0.01; "
                                              "with --init-from, the checkpoint's)")
    ap.add_argument("--score", choices=[AUTO, *sorted(CANDIDATES)], metavar="SCORE",
                    help=f"anomaly score to deploy: one of {', '.join(sorted(CANDIDATES))}, or {AUTO!r}: the "
                         f"one of {', '.join(AUTO_CANDIDATES)} that best separates the held-out normal images "
                         f"from synthetic anomalies drawn on them (default {DEFAULT_SCORE}, with --tile "
                         f"{DEFAULT_TILE_SCORE})")
    ap.add_argument("--width", type=int, default=0, help="base channel width (paper: 64; default 64, 32 with --tile)")
    ap.add_argument("--latent-dim", type=int, default=100, help="latent size (paper: 100)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="arithmetic of the training steps: auto (default) = bf16 for model inputs of 64 px and "
                         "more on a CPU with bfloat16 instructions (AVX512-BF16 or AMX; 1.4-1.7x faster per "
                         "batch there), fp32 elsewhere and on CUDA. Validation, calibration and the bundle "
                         "are fp32 either way")
    ap.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return ap


def _input_args(ap: argparse.ArgumentParser) -> None:
    """How images become the model's input: 16-bit window, working resolution, tiles."""
    ap.add_argument("--window", default="", help="16-bit images (X-ray TIFF/PNG): the intensity window onto the "
                                                 "model's 8 bits, LO:HI in raw units (e.g. 20000:24000) or pLO:pHI "
                                                 "percentiles per image (e.g. p0.5:p99.5); recorded in the checkpoint "
                                                 "and bundle, and the agent reads images the same way. Default: the "
                                                 "top 8 of 16 bits")
    ap.add_argument("--image-size", help="without --tile: the square model input (default 64). With --tile: "
                                         "the working resolution frames are resized to before tiling, a side "
                                         "or WIDTHxHEIGHT (default: the images' native size)")
    ap.add_argument("--tile", type=int, default=0,
                    help="inspect at working resolution in tiles of this side (e.g. 64); 0 = resize whole frames")
    ap.add_argument("--stride", type=int, default=0,
                    help="tile stride when scoring (default and most: the scored interior, 3/4 of a tile, "
                         "so interiors abut; smaller strides overlap them at more tiles per frame)")


def _finetune_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--init-from", metavar="CHECKPOINT",
                    help="fine-tune this finished checkpoint (its recipe, tiling and working resolution) on the "
                         "--data folders, for a short time budget (default %g min)" % DEFAULT_BUDGET_MIN)
    ap.add_argument("--oversample", type=float, default=DEFAULT_OVERSAMPLE, metavar="SHARE",
                    help="with --init-from: --data folders smaller than the largest are repeated in training until "
                         "each makes up this share of it (default %g)" % DEFAULT_OVERSAMPLE)


def _recipe_args(ap: argparse.ArgumentParser) -> None:
    """The training recipe's options: tiles drawn, augmentation, foreign patches, position statistics."""
    ap.add_argument("--tiles-per-image", type=int, default=16,
                    help="with --tile: random tiles drawn from each training image per epoch (default 16)")
    for name, what in (("flip", "mirroring"), ("rot90", "90-degree turns"),
                       ("shift", "small shifts"), ("brightness", "brightness changes")):
        ap.add_argument(f"--no-{name}", action="store_true", help=f"no {what} in training (where they matter)")
    ap.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    ap.add_argument("--corrupt", type=float,
                    help="share of training inputs shown with foreign patches that the generator must redraw "
                         "clean (default 0.5 with --tile, else 0; 0 = the paper's plain reconstruction)")
    ap.add_argument("--ema", type=float, metavar="DECAY",
                    help="validate, select and deploy a moving average of the generator's weights, updated "
                         "every step with this decay (default %g with --tile: about the last %d steps; 0 = the "
                         "live weights, as the paper)" % (DEFAULT_TILE_EMA, round(1 / (1 - DEFAULT_TILE_EMA))))
    ap.add_argument("--position-stats", choices=["auto", "on", "off"],
                    help="with --tile: standardise each tile position's score on the held-out frames before the "
                         "maximum (on), or take the maximum of raw tile scores (off). Default auto: on where the "
                         f"positions explain at least {100 * Tiling.MIN_POSITION_SHARE:.0f} %% of the normal tile "
                         "scores' variance (parts that sit in the same place), off for textures and objects "
                         "anywhere in the frame")
    ap.add_argument("--no-position-stats", action="store_true", help="the same as --position-stats off")


def _config(args, frames_shape: tuple[int, ...]):
    """The TrainConfig the arguments ask for, given the loaded frames' [N, H, W, C] shape."""
    from .choices import DEFAULT_SCORE, DEFAULT_TILE_SCORE
    from .trainer import TrainConfig

    off = args.no_augment
    tiled = bool(args.tile)
    return TrainConfig(
        image_size=args.tile if tiled else frames_shape[1], channels=args.channels, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, device=args.device, val_fraction=args.val_fraction,
        target_far=args.far if args.far is not None else 0.01, score=args.score or (DEFAULT_TILE_SCORE if tiled else DEFAULT_SCORE),
        select=args.select,
        patience=args.patience if args.patience is not None else (DEFAULT_TILE_PATIENCE if tiled else DEFAULT_PATIENCE),
        threads=args.threads, precision=args.precision, width=args.width or (32 if tiled else 64), latent_dim=args.latent_dim,
        arch=args.arch or (DEFAULT_TILE_ARCH if tiled else DEFAULT_ARCH), tile=args.tile, stride=args.stride if tiled else 0,
        frame_height=frames_shape[1] if tiled else 0, frame_width=frames_shape[2] if tiled else 0,
        tiles_per_image=args.tiles_per_image, flip=not (off or args.no_flip),
        rot90=not (off or args.no_rot90), shift=0 if off or args.no_shift else 4,
        brightness=0.0 if off or args.no_brightness else 0.1, time_budget_s=60.0 * args.time_budget,
        corrupt=args.corrupt if args.corrupt is not None else (0.5 if tiled else 0.0),
        ema=ema_decay(args), window=args.window,
        position_stats="off" if args.no_position_stats else (args.position_stats or "auto"))


def ema_decay(args) -> float:
    """The weight average's decay the arguments ask for (0: none)."""
    return args.ema if args.ema is not None else (DEFAULT_TILE_EMA if args.tile else 0.0)


def _check_args(args) -> str | None:
    if args.epochs < 1 or args.batch_size < 2:
        return "--epochs must be >= 1 and --batch-size >= 2 (BatchNorm needs a batch)"
    if args.far is not None and not 0 < args.far < 0.5:
        return "--far must be between 0 and 0.5, e.g. 0.01 for 1 %"
    if args.patience is not None and args.patience < 0:
        return "--patience must be >= 0 (0 = run every epoch)"
    if args.stride and not args.tile:
        return "--stride needs --tile"
    if (args.no_position_stats or args.position_stats) and not args.tile:
        return "--position-stats and --no-position-stats need --tile"
    if args.no_position_stats and args.position_stats not in (None, "off"):
        return f"--no-position-stats contradicts --position-stats {args.position_stats}"
    if args.tile and not 0 < (args.stride or default_stride(args.tile)) <= default_stride(args.tile):
        return (f"--stride must be between 1 and {default_stride(args.tile)}: the score reads each tile "
                f"{margin_for(args.tile)} px in from its border, and a longer stride would leave gaps between tiles")
    if args.corrupt is not None and not 0 <= args.corrupt <= 1:
        return "--corrupt must be a share between 0 and 1"
    if args.ema is not None and not 0 <= args.ema < 1:
        return "--ema must be a decay between 0 and 1, e.g. 0.998 (0 = no weight average)"
    if args.time_budget < 0:
        return "--time-budget must be positive (minutes)"
    if len(args.data) > 1 and not args.init_from:
        return ("several --data folders are for fine-tuning (--init-from CHECKPOINT); to train afresh, put the "
                "images in one folder")
    if args.init_from and args.resume:
        return "--init-from starts a new run from a finished checkpoint; --resume continues an unfinished one"
    if not 0 <= args.oversample < 1:
        return "--oversample must be a share between 0 and 1, e.g. 0.2"
    return None


def _load(args):
    """The training frames: resized to the square model input, or kept at working resolution for tiles."""
    from .data import DataError, load_folder, parse_size
    from .network import check_image_size

    size = parse_size(args.image_size) if args.image_size else None
    if not args.tile:
        if size is None:
            size = 64
        if not isinstance(size, int):
            raise DataError("without --tile the model input is square: pass --image-size N, or add --tile "
                            "to inspect a WIDTHxHEIGHT working resolution in tiles")
        check_image_size(size)
    else:
        check_image_size(args.tile)
    from ganomaly_edge.engine.window import Window, WindowError

    try:
        window = Window.parse(args.window) if args.window else None
    except WindowError as e:
        raise DataError(f"--window: {e}") from None
    data = load_folder(args.data[0], size, args.channels, window)
    if args.tile and min(data.images.shape[1:3]) < args.tile:
        raise DataError(f"the working resolution {data.images.shape[2]}x{data.images.shape[1]} is smaller "
                        f"than one {args.tile} px tile: use a smaller --tile or a larger --image-size")
    return data


def train_main(argv: list[str] | None = None, on_epoch=None) -> int:
    """``ganomaly-train``; ``on_epoch(epoch, trainer)`` runs after each epoch (research/trace_average)."""
    ap = _train_parser()
    args = ap.parse_args(argv)
    _setup_logging(args.quiet)
    bad = _check_args(args) or _missing_train_extra()
    if bad:
        return _fail(bad)

    from .data import DataError
    from .network import UnsupportedSizeError

    bad = _check_args(args)
    if bad:
        return _fail(bad)
    if args.init_from:
        return _finetune(args)
    try:
        data = _load(args)
    except (UnsupportedSizeError, DataError) as e:
        return _fail(str(e))
    log.info("%d images loaded from %s (%d unreadable, skipped)", len(data.images), args.data[0], len(data.skipped))

    from .checkpoint import load_checkpoint
    from .trainer import Trainer

    try:
        cfg = _config(args, data.images.shape)
        tr = Trainer(cfg, data.images, out_path=args.out, progress=not args.quiet, on_epoch=on_epoch,
                     data_info={"source": os.path.abspath(args.data[0]), "n_images": len(data.images),
                                "skipped": len(data.skipped)})
        if args.resume and os.path.exists(args.out):
            tr.load_state(load_checkpoint(args.out))
        ck = tr.run()
    except (DataError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    _summary(args, ck)
    return 0


def _finetune(args) -> int:
    from .data import DataError
    from .finetune import finetune

    try:
        ck = finetune(args)
    except (DataError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    _summary(args, ck)
    # Measured (docs/feedback.md): after the line changed, this threshold, set mostly on the original
    # folder's frames, gave a fine-tuned parts model 49 % false alarms on the line as it now is.
    print("the threshold was set on held-out frames of the --data folders; if the line has changed since the "
          "first of them, set it on recent frames before deploying: ganomaly-calibrate "
          f"{args.out} --normal <history>/samples/<camera> (docs/feedback.md)")
    return 0


def _summary(args, ck) -> None:
    c = ck["calibration"]
    print(f"checkpoint: {args.out}\nscore: {ck['score']['name']}  threshold (raw): {c['threshold_raw']:.6g} "
          f"for {100 * c['target_far']:.2g}% false alarms per frame on {c['n']} held-out normal images")
    _say_training_warnings(ck)


def _say_training_warnings(ck: dict) -> None:
    """The run's training warnings (train/adequacy.py), loud, on stderr: repeated by ganomaly-eval
    and the agent from the checkpoint and the bundle."""
    for w in ck.get("training_warnings") or []:
        print(f"\nWARNING: THIS MODEL IS NOT READY: {w}", file=sys.stderr)


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
    ap.add_argument("--masks", help="folder of defect masks named like the anomalous images (non-zero = "
                                    "defect): adds pixel-level localisation (ROC AUC of the residual map)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = ap.parse_args(argv)
    _setup_logging()
    if _missing_train_extra():
        return _fail(_missing_train_extra())

    from .data import DataError, load_folder
    from .checkpoint import load_checkpoint

    try:
        ck = load_checkpoint(args.checkpoint)
        if not ck.get("complete"):
            return _fail(f"{args.checkpoint} is from an unfinished run (no calibration yet): "
                         "finish it with ganomaly-train --resume")
        from .evaluate import evaluate, tiling_of

        t, ch = tiling_of(ck), ck["config"]["channels"]
        size = (t.height, t.width)
        normal = load_folder(args.normal, size, ch)
        abnormal = load_folder(args.abnormal, size, ch)
        masks = _masks(args.masks, abnormal.paths, size) if args.masks else None
    except (FileNotFoundError, ValueError, DataError) as e:
        return _fail(str(e))
    names = [os.path.relpath(p, args.normal) for p in normal.paths] + \
            [os.path.relpath(p, args.abnormal) for p in abnormal.paths]
    rep = evaluate(ck, normal.images, abnormal.images, args.out, device=args.device, plots=not args.no_plots,
                   masks=masks, names=names)
    _print_report(rep)
    print(f"report: {os.path.join(args.out, 'report.json')}")
    _say_training_warnings(ck)
    return 0


def _print_report(rep: dict) -> None:
    """ganomaly-eval's summary on stdout: every score, the threshold's rates, the tiles' other
    combination and the localisation."""
    for name, s in rep["scores"].items():
        mark = "*" if name == rep["default_score"] else " "
        print(f"{mark} {name:<20} ROC AUC {s['roc_auc']:.3f}  AP {s['average_precision']:.3f}")
    t = rep["at_threshold"]
    print(f"at the calibrated threshold: TPR {t['true_positive_rate']:.3f}, false-alarm rate "
          f"{t['false_alarm_rate']:.3f} ({t['false_alarms']} of {rep['counts']['normal']} normal)")
    if "position_share" in rep:
        print(f"tile positions explain {100 * rep['position_share']:.0f}% of the held-out tile scores' variance "
              f"({'a fixed layout' if rep['position_share'] >= Tiling.MIN_POSITION_SHARE else 'no fixed layout'})")
    for key, what in (("raw_tile_max", "with the maximum of raw tile scores instead"),
                      ("position_stats", "with each tile position standardised (not in this checkpoint)")):
        if key in rep:
            p = rep[key]
            print(f"{what}: ROC AUC {p['roc_auc']:.3f}, TPR {p['true_positive_rate']:.3f}, "
                  f"false-alarm rate {p['false_alarm_rate']:.3f}")
    if "score_selection" in rep:
        sel = rep["score_selection"]
        print(f"score chosen without labels (synthetic anomalies on held-out normal frames): {sel['chosen']}; "
              f"these labels rank {sel['best_by_labels']} first among the candidates "
              f"({'the same' if sel['agrees'] else 'a different choice'}):")
        for name, c in sel["candidates"].items():
            print(f"  {name:<12} synthetic ROC AUC {c['synthetic_roc_auc']:.3f}  ROC AUC here {c['roc_auc']:.3f}")
    if "localisation" in rep:
        loc = rep["localisation"]
        other = "".join(f", {k[len('pixel_roc_auc_'):]} map {v:.3f}" for k, v in loc.items()
                        if k.startswith("pixel_roc_auc_") and v is not None)
        print(f"pixel-level ROC AUC of the residual map ({loc['map']}): {loc['pixel_roc_auc']:.3f}{other}")


def _masks(folder: str, paths: list[str], size: tuple[int, int]):
    """One mask per anomalous image (same relative name; a missing mask is an error), at the
    working resolution."""
    import numpy as np

    from ganomaly_edge.engine.preprocess import read_image, resize_to

    from .data import DataError

    out = []
    for p in paths:
        m = os.path.join(folder, os.path.basename(p))
        img = read_image(m, 1) if os.path.exists(m) else None
        if img is None:
            raise DataError(f"no readable mask {m} for {p}: every anomalous image needs one for --masks")
        out.append(resize_to(img, size)[:, :, 0])
    return np.stack(out)
