"""The GANomaly training loop: checkpoints every epoch, resume, validation on normal images only,
then calibration of the chosen score on the held-out normal images."""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ganomaly_edge.engine.preprocess import COLOR_ORDER, NORMALISATION
from ganomaly_edge.engine.tiling import Tiling, default_stride, margin_for

from .checkpoint import BANK_MAX, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_save, check_checkpoint, finalise, versions
from .adequacy import training_warnings
from .augment import Augment, Sampler, corrupt
from .data import split
from .errors import DeviceUnavailable, TrainConfigError
from .loss import LossWeights, contextual_loss, discriminator_loss, generator_loss
from .network import Discriminator, Generator, check_image_size, init_weights
from .choices import PRECISIONS
from .scoring import AUTO, DEFAULT_SCORE, to_model_input
from .synthetic import FAMILIES

log = logging.getLogger(__name__)

D_COLLAPSE = 1e-5


@dataclass
class TrainConfig:
    image_size: int = 32
    channels: int = 1
    latent_dim: int = 100
    width: int = 64
    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.1
    target_far: float = 0.01
    score: str = DEFAULT_SCORE
    select: str = "last"  # "last" or "best-val": model selection on normal validation images
    patience: int = 0  # early stopping on the validation loss; 0 = off
    threads: int = 0  # torch CPU threads; 0 = torch's default
    arch: str = "paper"  # generator: "paper" (GANomaly) or "skip" (U-Net skips, Skip-GANomaly)
    tile: int = 0  # 0: whole frames of image_size; else tiles of this side (image_size == tile)
    stride: int = 0  # tile stride at scoring time (0: default_stride(tile), the interior)
    frame_height: int = 0  # working resolution of the frames when tiling
    frame_width: int = 0
    tiles_per_image: int = 16  # random tiles drawn from every training frame per epoch
    flip: bool = False
    rot90: bool = False
    shift: int = 0
    brightness: float = 0.0
    time_budget_s: float = 0.0  # stop training in time to finish within this (0 = no limit)
    corrupt: float = 0.0  # share of training inputs shown with foreign patches, to be redrawn clean
    position_stats: str = "auto"  # tiled: standardise each tile position's score on held-out frames
    # ("auto": where the positions explain enough of the normal scores' variance; "on"; "off")
    precision: str = "auto"  # training arithmetic: "auto" (bf16 where the CPU has it, 64 px and up), "fp32", "bf16"
    window: str = ""  # 16-bit intensity window the images were read with (engine/window.py text form; "" = none)
    ema: float = 0.0  # decay per step of the generator's weight average, validated and deployed (0 = off)

    def weights(self) -> LossWeights:
        return LossWeights(self.w_adv, self.w_con, self.w_enc)

    def augment(self) -> Augment:
        return Augment(self.flip, self.rot90, self.shift, self.brightness)

    def tiling(self) -> Tiling:
        """How frames are cut at scoring time (one tile per frame when untiled)."""
        if not self.tile:
            return Tiling.single(self.image_size)
        return Tiling(self.tile, self.stride or default_stride(self.tile), self.frame_height, self.frame_width,
                      margin_for(self.tile))

    def frame_shape(self) -> tuple[int, int, int]:
        if not self.tile:
            return (self.image_size, self.image_size, self.channels)
        return (self.frame_height, self.frame_width, self.channels)


@dataclass
class TrainResult:
    checkpoint: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise TrainConfigError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)




def native_bf16() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there oneDNN's bf16
    training steps ran 1.4-1.7x faster than fp32 (docs/high-resolution.md); elsewhere oneDNN emulates them."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume no
        return False


BF16_MIN_SIZE = 64  # measured: 1.5-1.6x per step at 64 px, nothing at 32 px (steps too small to pay)


def resolve_precision(name: str, device: torch.device, image_size: int = BF16_MIN_SIZE) -> torch.dtype | None:
    """The autocast type of the training steps (None: plain fp32). ``auto`` takes bf16 on a CPU
    that has it in hardware for model inputs of BF16_MIN_SIZE px and more, fp32 elsewhere (CUDA
    included: not measured here). Validation, calibration and the exported graph are fp32
    whatever this says."""
    if name not in PRECISIONS:
        raise TrainConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    if name == "fp32" or (name == "auto" and (device.type != "cpu" or image_size < BF16_MIN_SIZE
                                              or not native_bf16())):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailable("--precision bf16 was asked for but this GPU has no bfloat16; use --precision fp32")
    if name == "bf16" and device.type == "cpu" and not native_bf16():
        log.warning("--precision bf16 on a CPU without bfloat16 instructions (AVX512-BF16, AMX): oneDNN "
                    "emulates it, which is usually slower than fp32; --precision fp32 is the better choice here")
    return torch.bfloat16


@contextmanager
def frozen(module: torch.nn.Module):
    """``module``'s parameters take no gradient inside (its input still does)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def fingerprint(images: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes()).hexdigest()[:16]


def build_models(cfg: TrainConfig, device: torch.device) -> tuple[Generator, Discriminator]:
    check_image_size(cfg.image_size)
    g = Generator(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.width, cfg.arch).to(device)
    d = Discriminator(cfg.image_size, cfg.channels, cfg.width).to(device)
    g.apply(init_weights)
    d.apply(init_weights)
    return g, d


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict that later steps and loads do not change (``state_dict()`` shares storage)."""
    return {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()}


class WeightAverage:
    """An exponential moving average of a network's weights (Polyak averaging), updated after each
    optimiser step: ``avg = d * avg + (1 - d) * live`` with ``d = min(decay, (1 + n) / (10 + n))``
    after n updates, so that the first steps are not held back by the random initial weights.

    The adversarial game moves the generator's weights back and forth from batch to batch; its
    held-out loss then jumps from epoch to epoch (x2 between neighbours measured on the parts
    stand-in), and early stopping and selection judge noise. The average follows the trend.
    BatchNorm's running statistics are averaged like the weights; integer buffers are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise TrainConfigError(f"the weight average's decay must be between 0 and 1, got {decay}")
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self.decay, self.updates = decay, 0
        self._pairs: tuple[torch.nn.Module, list, list, list] | None = None

    def _tensors(self, live: torch.nn.Module) -> tuple[list, list, list]:
        """The average's tensors and the live network's, matched once: optimiser steps and
        ``load_state_dict`` change them in place, so the lists stay valid."""
        if self._pairs is None or self._pairs[0] is not live:
            mine, theirs = self.model.state_dict(), live.state_dict()
            floats = [k for k, v in mine.items() if v.is_floating_point()]
            self._pairs = (live, [mine[k] for k in floats], [theirs[k] for k in floats],
                           [(mine[k], theirs[k]) for k, v in mine.items() if not v.is_floating_point()])
        return self._pairs[1:]

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, live: torch.nn.Module) -> None:
        self.updates += 1
        mine, theirs, other = self._tensors(live)
        torch._foreach_lerp_(mine, theirs, 1.0 - self.current_decay())
        for a, b in other:
            a.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["weights"])
        self.updates = int(st["updates"])


@torch.no_grad()
def validation_loss(g: Generator, val: np.ndarray, device: torch.device, batch: int = 256,
                    shown: np.ndarray | None = None) -> float:
    """Mean contextual (L1) loss on held-out normal images, eval mode: the selection criterion.
    With ``shown`` (the same images with foreign patches), G sees those and is scored against
    the clean ones: the criterion then also asks that it not copy what is not normal."""
    was_training = g.training
    g.eval()
    total, n = 0.0, 0
    for i in range(0, len(val), batch):
        x = to_model_input(torch.from_numpy(val[i:i + batch]).to(device))
        x_in = x if shown is None else to_model_input(torch.from_numpy(shown[i:i + batch]).to(device))
        x_hat, _, _ = g(x_in)
        total += contextual_loss(x, x_hat).item() * len(x)
        n += len(x)
    g.train(was_training)
    return total / max(n, 1)


class Trainer:
    """Trains on uint8 [N, H, W, C] normal frames (whole model inputs, or frames cut into tiles);
    ``run`` returns the final checkpoint."""

    def __init__(self, cfg: TrainConfig, images: np.ndarray, out_path: str | None = None,
                 data_info: dict[str, Any] | None = None, progress: bool = True,
                 on_epoch: Callable[[int, "Trainer"], None] | None = None, held_out: np.ndarray | None = None):
        """``held_out``: the held-out frames, when the caller split them (fine-tuning splits each
        folder on its own); ``images`` are then the training frames only."""
        if images.ndim != 4 or images.dtype != np.uint8:
            raise TrainConfigError(f"training images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
        if cfg.tile and cfg.image_size != cfg.tile:
            raise TrainConfigError(f"with tiles the model input is the tile: image_size {cfg.image_size} != tile {cfg.tile}")
        if images.shape[1:] != cfg.frame_shape():
            raise TrainConfigError(f"images are {images.shape[1:]}, config expects {cfg.frame_shape()}")
        self.tiling = cfg.tiling()
        self.cfg, self.out_path, self.progress, self.on_epoch = cfg, out_path, progress, on_epoch
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if held_out is None:
            tr_idx, val_idx = split(len(images), cfg.val_fraction, cfg.seed)
            self.train_images, self.val_images = images[tr_idx], images[val_idx]
        else:
            self.train_images, self.val_images = images, held_out
        self.sampler = Sampler(self.train_images, cfg.image_size, cfg.augment(), cfg.seed, self.tiling.margin)
        self.val_tiles = self._val_tiles()
        # Held-out tiles with foreign patches, drawn once: every epoch is judged on the same ones.
        self.val_shown = (corrupt(self.val_tiles, cfg.corrupt, np.random.default_rng((cfg.seed, 1 << 20)))
                          if cfg.corrupt else None)
        per_epoch = len(self.train_images) * (cfg.tiles_per_image if self.tiling.tiled else 1)
        self.batch_size = min(cfg.batch_size, per_epoch)
        if self.batch_size < cfg.batch_size:
            log.warning("only %d training images for batch size %d: using batch size %d",
                        per_epoch, cfg.batch_size, self.batch_size)
        self.n_batches = max(per_epoch // self.batch_size, 1)  # the ragged last batch is dropped
        self.data_info = dict(data_info or {})
        self.data_info.update({"n_train": int(len(self.train_images)), "n_val": int(len(self.val_images)),
                               "fingerprint": fingerprint(images)})
        torch.manual_seed(cfg.seed)
        self.g, self.d = build_models(cfg, self.device)
        self.autocast_dtype = resolve_precision(cfg.precision, self.device, cfg.image_size)
        if self.device.type == "cpu":  # oneDNN's convolutions run faster on NHWC (about 1.1x here)
            self.g.to(memory_format=torch.channels_last)
            self.d.to(memory_format=torch.channels_last)
        # The generator validated, selected and deployed: the weight average, or the live one.
        self.g_avg = WeightAverage(self.g, cfg.ema) if cfg.ema else None
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None
        self.d_reinits = 0
        self.started = time.monotonic()
        self.live: dict[str, Any] = {}  # the weights training ended with (run), kept for --resume
        self.reserve_s: float | None = None  # seconds the budget keeps for validation and calibration
        self.bar = None
        self.stopped_by_time = False

    def _val_tiles(self, most: int = 2048) -> np.ndarray:
        """The held-out frames' tiles (at most ``most``, a seeded choice) for the validation loss."""
        tiles = self.tiling.split(self.val_images)
        if len(tiles) > most:
            tiles = tiles[np.sort(np.random.default_rng(self.cfg.seed).choice(len(tiles), most, replace=False))]
        return tiles

    # -- one optimisation step -------------------------------------------------------------
    def step(self, x: torch.Tensor, clean: torch.Tensor | None = None) -> dict[str, float]:
        """One G and one D update on a normalised batch, as the official optimize_params does.

        D(x) is run once and reused: its features are detached for the generator's loss (they do
        not depend on G) and its prediction feeds the discriminator's loss. The official code
        runs D four times per step for the same result. G's loss flows through D(x_hat) to G
        only: D's own gradients from it were discarded, so they are not computed. Under
        ``--precision bf16`` the networks run in bfloat16 and the losses in fp32.
        """
        w = self.cfg.weights()
        clean = x if clean is None else clean  # with --corrupt, G sees x and must give back clean
        with self._autocast():
            x_hat, z, z_hat = self.g(x)
            p_real, f_real = self.d(clean)
            with frozen(self.d):
                _, f_fake = self.d(x_hat)
        err_g, parts = generator_loss(f_real.detach().float(), f_fake.float(), clean, x_hat.float(),
                                      z.float(), z_hat.float(), w)
        self.opt_g.zero_grad(set_to_none=True)
        err_g.backward()
        self.opt_g.step()

        with self._autocast():
            p_fake, _ = self.d(x_hat.detach())
        err_d = discriminator_loss(p_real.float(), p_fake.float())
        self.opt_d.zero_grad(set_to_none=True)
        err_d.backward()
        self.opt_d.step()
        if self.g_avg is not None:
            self.g_avg.update(self.g)
        d_val = err_d.item()
        if d_val < D_COLLAPSE:
            self.reinit_discriminator()
        parts.update({"g": err_g.item(), "d": d_val})
        return parts

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def reinit_discriminator(self) -> None:
        """The paper's remedy when D wins outright (its loss collapses): start D afresh."""
        self.d.apply(init_weights)
        self.d_reinits += 1
        log.info("discriminator loss below %g: re-initialised D (%d so far)", D_COLLAPSE, self.d_reinits)

    # -- epochs ------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, float]:
        self.g.train()
        self.d.train()
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000003 + self.epoch)
        self.sampler.reseed(self.cfg.seed, self.epoch)  # tiles and augmentations: --resume stays exact
        # Each frame once per pass, as many passes as the epoch's batches need (one untiled;
        # ``tiles_per_image`` with tiles, a random tile of the frame each time).
        n_frames, need = len(self.train_images), self.n_batches * self.batch_size
        order = torch.cat([torch.randperm(n_frames, generator=gen)
                           for _ in range(-(-need // n_frames))]).numpy()[:need]
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        done = 0
        for b in range(self.n_batches):
            if self.out_of_time(self._reserve(b, time.perf_counter() - t0)):
                break  # a partial epoch: validated and selectable like any other
            x = self.sampler.batch(order[b * self.batch_size:(b + 1) * self.batch_size])
            clean = to_model_input(torch.from_numpy(x).to(self.device, non_blocking=True))
            if self.cfg.corrupt:
                shown = corrupt(x, self.cfg.corrupt, self.sampler.rng)
                parts = self.step(to_model_input(torch.from_numpy(shown).to(self.device, non_blocking=True)), clean)
            else:
                parts = self.step(clean)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            done += 1
            if self.bar is not None:
                self.bar.update(1)
                if b % 20 == 19:
                    elapsed = time.perf_counter() - t0
                    self._fit_bar(elapsed / done, self._reserve(done, elapsed))
                if b % 5 == 0:
                    self.bar.set_postfix({"epoch": self.epoch + 1, **{k: f"{parts[k]:.3g}" for k in ("g_con", "d")}})
        secs = time.perf_counter() - t0
        rec = {k: v / max(done, 1) for k, v in sums.items()}
        t1 = time.perf_counter()
        rec.update({"epoch": self.epoch + 1, "seconds": secs, "batches": done,
                    "s_per_batch": secs / max(done, 1),
                    "val_con": validation_loss(self.g_judged, self.val_tiles, self.device, shown=self.val_shown),
                    "val_seconds": time.perf_counter() - t1, "d_reinits": self.d_reinits})
        self.reserve_s = rec["val_seconds"] + self.finish_estimate(rec)
        if done:  # a validation pass per epoch, spread over its batches
            self._fit_bar((rec["seconds"] + rec["val_seconds"]) / done, self.reserve_s)
        return rec

    @property
    def g_judged(self) -> Generator:
        """The generator the held-out images judge and the bundle gets: the weight average if on."""
        return self.g if self.g_avg is None else self.g_avg.model

    def _reserve(self, batches: int, seconds: float) -> float:
        """Seconds to keep for this epoch's validation and the calibration: measured once an
        epoch has run; in the first, estimated from the training steps (G's fp32 forward pass is
        about a sixth of an fp32 step, which also runs D three times and both backward, and a
        third of a bf16 one)."""
        if self.reserve_s is not None:
            return self.reserve_s
        if batches < 3:
            return 0.0
        per_tile = seconds / batches / self.batch_size / (6.0 if self.autocast_dtype is None else 3.0)
        return per_tile * (len(self.val_tiles) + 3.0 * self.finish_inputs())

    def _fit_bar(self, per_batch: float, reserve: float) -> None:
        """Set the bar's total to the batches the time budget leaves room for (never more than
        the epochs ask), so the time left it shows is the training's."""
        if self.bar is None or not self.cfg.time_budget_s or per_batch <= 0:
            return
        left = self.cfg.time_budget_s - (time.monotonic() - self.started) - reserve
        fits = min(self.bar.n + max(int(left / per_batch), 0), self.cfg.epochs * self.n_batches)
        if fits != self.bar.total:
            self.bar.total = fits
            self.bar.refresh()

    def out_of_time(self, reserve: float = 0.0) -> bool:
        """True when the time budget (less ``reserve`` seconds) is spent."""
        b = self.cfg.time_budget_s
        return bool(b) and time.monotonic() - self.started + reserve > b

    def state(self, complete: bool = False) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "complete": complete,
            "config": asdict(self.cfg),
            "preprocess": {"image_size": self.cfg.image_size, "channels": self.cfg.channels,
                           "color_order": COLOR_ORDER, "normalisation": NORMALISATION,
                           "layout": "NHWC uint8"},
            "tiling": asdict(self.tiling) if self.tiling.tiled else None,
            "generator": self.g.state_dict(),
            "generator_average": None if self.g_avg is None or complete else self.g_avg.state_dict(),
            "discriminator": self.d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best": self.best,
            "d_reinits": self.d_reinits,
            "train_precision": self.precision_used(),
            "data": self.data_info,
            "versions": versions(),
        }

    def init_from(self, ck: dict[str, Any]) -> None:
        """Fine-tuning: start from a finished checkpoint's networks (the generator it selected),
        with fresh optimisers and epoch count."""
        check_checkpoint(ck)
        self.g.load_state_dict(ck["generator"])
        self.d.load_state_dict(ck["discriminator"])
        if self.g_avg is not None:
            self.g_avg.model.load_state_dict(ck["generator"])
        self.data_info["init_from"] = ck.get("data", {}).get("fingerprint")

    def load_state(self, ck: dict[str, Any]) -> None:
        check_checkpoint(ck)
        if ck["data"].get("fingerprint") != self.data_info["fingerprint"]:
            raise TrainConfigError("cannot resume: the training images differ from those the checkpoint "
                                   "was trained on (different folder or contents); start a new run")
        saved = {k: v for k, v in ck["config"].items()
                 if k not in ("epochs", "device", "patience", "threads", "time_budget_s", "precision")}
        saved.setdefault("ema", 0.0)  # checkpoints from before the weight average trained without it
        now = {k: v for k, v in asdict(self.cfg).items() if k in saved}
        if saved != now:
            diff = {k: (saved[k], now[k]) for k in saved if saved[k] != now.get(k)}
            raise TrainConfigError(f"cannot resume with different settings (checkpoint vs now): {diff}")
        # A finished checkpoint's generator is the one selected; training goes on from where it ended.
        live = {**ck, **(ck.get("resume_state") or {})}
        self.g.load_state_dict(live["generator"])
        self.d.load_state_dict(live["discriminator"])
        if self.g_avg is not None:
            if live.get("generator_average"):
                self.g_avg.load_state_dict(live["generator_average"])
            else:  # a checkpoint from before the weight average: start it from here
                self.g_avg.model.load_state_dict(live["generator"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.epoch = int(ck["epoch"])
        self.history = list(ck["history"])
        self.best = ck.get("best")
        self.d_reinits = int(ck.get("d_reinits", 0))
        log.info("resumed from epoch %d", self.epoch)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        log.info("training GANomaly (%s generator) on %s tiles of %s, %s, %s: %d train / %d held-out "
                 "images, at most %d epochs of %d batches of %d%s; augmentation: %s; foreign patches: %s",
                 cfg.arch, f"{cfg.image_size}x{cfg.image_size}x{cfg.channels}", self.tiling.describe(),
                 self.device, self.precision_used(), len(self.train_images), len(self.val_images), cfg.epochs, self.n_batches,
                 self.batch_size, f", time budget {cfg.time_budget_s / 60:.1f} min" if cfg.time_budget_s else "",
                 cfg.augment().describe(), f"{100 * cfg.corrupt:.0f} % of inputs" if cfg.corrupt else "none")
        self._open_bar()
        stale = 0
        while self.epoch < cfg.epochs:
            rec = self.run_epoch()
            if rec["batches"] == 0:
                self.stopped_by_time = True
                break
            self.epoch += 1
            self.history.append(rec)
            stale = 0 if self._keep_if_best(rec) else stale + 1
            log.info("epoch %d/%d  g %.4f (adv %.4f con %.4f enc %.4f)  d %.4f  val_con %.4f  %.1fs (%.3f s/batch)",
                     self.epoch, cfg.epochs, rec["g"], rec["g_adv"], rec["g_con"], rec["g_enc"], rec["d"],
                     rec["val_con"], rec["seconds"], rec["s_per_batch"])
            if self.out_path:
                atomic_save(self.state(), self.out_path)
            if self.on_epoch:
                self.on_epoch(self.epoch, self)
            if cfg.patience and stale >= cfg.patience:
                log.info("early stop: the held-out images' loss has not improved for %d epochs (best epoch %d)",
                         stale, self.best["epoch"])
                break
            if self.out_of_time(reserve=self.reserve_s + rec["s_per_batch"]):
                log.info("time budget: stopping after epoch %d (%d batches of it); the calibration fits in "
                         "what is left of %.1f min", self.epoch, rec["batches"], cfg.time_budget_s / 60)
                self.stopped_by_time = True
                break
        self._close_bar()
        # The weights training ended with, for --resume: the checkpoint's generator is the one selected.
        self.live = {"generator": _copy(self.g.state_dict()), "discriminator": _copy(self.d.state_dict()),
                     "generator_average": None if self.g_avg is None else _copy(self.g_avg.state_dict())}
        if cfg.select == "best-val" and self.best and "generator" in self.best:
            self.g.load_state_dict(self.best.pop("generator"))
            self.d.load_state_dict(self.best.pop("discriminator"))
            log.info("selected epoch %d (lowest loss on the held-out normal images)", self.best["epoch"])
        elif self.g_avg is not None:
            self.g.load_state_dict(self.g_avg.model.state_dict())
        if self.g_avg is not None:
            log.info("the generator is the average of its weights over about the last %d steps (decay %g)",
                     round(1 / (1 - cfg.ema)), cfg.ema)
        ck = self.finish()
        if self.out_path:
            atomic_save(ck, self.out_path)
            log.info("wrote %s (%.1f min in all)", self.out_path, (time.monotonic() - self.started) / 60)
        return ck

    def precision_used(self) -> str:
        return "fp32" if self.autocast_dtype is None else "bf16"

    def _keep_if_best(self, rec: dict[str, float]) -> bool:
        """Remember the epoch if its held-out loss is the lowest so far; True if it was."""
        if self.best is not None and rec["val_con"] >= self.best["val_con"]:
            return False
        self.best = {"epoch": self.epoch, "val_con": rec["val_con"]}
        if self.cfg.select == "best-val":
            self.best["generator"] = _copy(self.g_judged.state_dict())
            self.best["discriminator"] = _copy(self.d.state_dict())
        return True

    def finish_estimate(self, rec: dict[str, float]) -> float:
        """Seconds the calibration will take: every held-out tile and the bank scored, at most
        about twice the cost per tile of the validation loss (D and the banks come in; measured
        here: 32 s for 16,292 tiles where this says 50-100 s)."""
        per_tile = rec.get("val_seconds", 0.0) / max(len(self.val_tiles), 1)
        return 2.0 * per_tile * self.finish_inputs()

    def finish_inputs(self) -> int:
        """Model inputs the calibration scores: every held-out tile and the bank's."""
        held_out = len(self.val_images) * self.tiling.count
        if self.cfg.score == AUTO:  # the score's choice scores synthetic anomalies on every held-out frame
            held_out *= 1 + len(FAMILIES)
        return held_out + min(len(self.train_images) * self.tiling.count, BANK_MAX)

    def _open_bar(self) -> None:
        """One bar over the whole run; its total shrinks to what the time budget allows once the
        speed is known, so the time left it shows holds."""
        from tqdm import tqdm

        self.bar = tqdm(total=self.cfg.epochs * self.n_batches, desc="training", unit="batch",
                        disable=not self.progress, dynamic_ncols=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self) -> dict[str, Any]:
        """The final checkpoint: banks, score and calibration on the held-out images (checkpoint.finalise)."""
        ck = self.state(complete=True)
        ck.update(finalise(self.g, self.d, self.train_images, self.val_images, self.cfg.score,
                           self.cfg.target_far, self.device, self.cfg.seed, self.tiling,
                           position_stats=self.cfg.position_stats))
        ck["resume_state"] = {"opt_g": ck.pop("opt_g"), "opt_d": ck.pop("opt_d"), **self.live}
        ck["training_warnings"] = training_warnings(self.history, len(self.train_images), self.stopped_by_time)
        for w in ck["training_warnings"]:
            log.warning("THIS MODEL IS NOT READY: %s", w)
        return ck
