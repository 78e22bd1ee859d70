"""``ganomaly-train --init-from model.pt --data normal/ --data exported/ --out new.pt``.

Fine-tuning the deployed model with frames the line showed it were normal (false alarms
exported from the console). The recipe, tiling and working resolution are the checkpoint's;
only the schedule is new: a short time budget by default. Each ``--data`` folder is split on its
own into training and held-out frames, so the exported frames are in both: they teach the
network, and the threshold is calibrated with some of them in the held-out set. Folders smaller
than the largest are repeated in training until each makes up ``--oversample`` of it, so a few
dozen exported frames count against thousands of normal ones.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import fields, replace

import numpy as np

from .errors import TrainError

log = logging.getLogger("ganomaly")

DEFAULT_BUDGET_MIN = 3.0  # minutes: fine-tuning is a short job at the device, not the original run
DEFAULT_OVERSAMPLE = 0.2


class FineTuneError(TrainError, ValueError):
    """A fine-tune that cannot start from this checkpoint or these folders; the message says why."""


def base_checkpoint(path: str) -> dict:
    """The checkpoint to start from; FineTuneError naming the fix when it cannot be."""
    from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint

    try:
        ck = load_checkpoint(path)
    except FileNotFoundError:
        raise FineTuneError(f"--init-from {path}: no such file; give the checkpoint (.pt) the deployed bundle "
                            "was exported from") from None
    except ValueError as e:
        raise FineTuneError(_version_fix(path, e, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)) from None
    if not ck.get("complete"):
        raise FineTuneError(f"--init-from {path} is from an unfinished run: finish it first "
                            f"(ganomaly-train ... --out {path} --resume)")
    return ck


def _version_fix(path: str, e: Exception, fmt: str, version: int) -> str:
    msg = str(e)
    if "format version" in msg:
        return (f"--init-from {path}: {msg}. Fine-tuning starts from a checkpoint of format {version}: fine-tune "
                "with the ganomaly-edge release that wrote it, or train afresh with this one on the normal and "
                "the exported frames together (copy both into one folder: ganomaly-train --data all/ --out new.pt)")
    return f"--init-from {path}: {msg}"


def config_from(ck: dict, args) -> "object":
    """The checkpoint's TrainConfig with this run's schedule (epochs, budget, patience, seed, device)."""
    from .trainer import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in ck["config"].items() if k in known})
    budget = args.time_budget if args.time_budget else DEFAULT_BUDGET_MIN
    over = {"time_budget_s": 60.0 * budget, "seed": args.seed, "device": args.device, "threads": args.threads,
            "val_fraction": args.val_fraction, "epochs": args.epochs,
            "precision": args.precision}
    if args.patience is not None:
        over["patience"] = args.patience
    if args.far is not None:
        over["target_far"] = args.far
    from .scoring import CANDIDATES

    chosen = ck.get("score", {}).get("name")
    if cfg.score not in CANDIDATES and chosen in CANDIDATES:  # "auto" chose once: keep its choice
        over["score"] = chosen
    return replace(cfg, **over)


def folders(cfg, paths: list[str], val_fraction: float, seed: int, share: float):
    """(training frames, held-out frames, description): each folder loaded at the checkpoint's
    working resolution and split on its own; smaller folders repeated in training to ``share``."""
    from .data import DataError, load_folder

    from ganomaly_edge.engine.window import Window

    size = (cfg.frame_height, cfg.frame_width) if cfg.tile else cfg.image_size
    window = Window.parse(cfg.window) if getattr(cfg, "window", "") else None  # 16-bit: as the base was trained
    parts = []
    for p in paths:
        try:
            imgs = load_folder(p, size, cfg.channels, window).images
        except DataError as e:
            raise FineTuneError(str(e)) from None
        n_val = max(1, int(round(len(imgs) * val_fraction))) if len(imgs) >= 2 else 0
        perm = np.random.default_rng(seed).permutation(len(imgs))
        parts.append((p, imgs[np.sort(perm[n_val:])], imgs[np.sort(perm[:n_val])]))
    largest = max(len(tr) for _, tr, _ in parts)
    train, held, info = [], [], []
    for p, tr, va in parts:
        reps = 1 if len(tr) == largest or not len(tr) else max(1, math.ceil(share * largest / len(tr)))
        train.append(np.concatenate([tr] * reps) if len(tr) else tr)
        held.append(va)
        info.append({"source": os.path.abspath(p), "n_images": len(tr) + len(va), "n_train": len(tr),
                     "n_val": len(va), "repeats": reps})
        log.info("%s: %d images, %d to train on (x%d), %d held out", p, len(tr) + len(va), len(tr), reps, len(va))
    train_x, held_x = np.concatenate(train), np.concatenate(held)
    if len(held_x) < 10 or len(train_x) < 10:
        raise FineTuneError(f"{len(train_x)} training and {len(held_x)} held-out frames are too few: the folders "
                            "need 20 images at least (10 held out to calibrate the threshold)")
    return train_x, held_x, info


def finetune(args) -> dict:
    """The fine-tuned checkpoint (also written to ``args.out``)."""
    from .trainer import Trainer

    ck = base_checkpoint(args.init_from)
    cfg = config_from(ck, args)
    train_x, held_x, info = folders(cfg, args.data, args.val_fraction, args.seed, args.oversample)
    log.info("fine-tuning %s: %s at %s, time budget %.1f min", args.init_from, cfg.arch,
             f"{cfg.frame_width}x{cfg.frame_height} in {cfg.tile} px tiles" if cfg.tile else f"{cfg.image_size} px",
             cfg.time_budget_s / 60)
    tr = Trainer(cfg, train_x, out_path=args.out, progress=not args.quiet, held_out=held_x,
                 data_info={"source": [i["source"] for i in info], "folders": info,
                            "n_images": int(sum(i["n_images"] for i in info)),
                            "init_from": os.path.abspath(args.init_from)})
    tr.init_from(ck)
    return tr.run()
