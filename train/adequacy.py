"""Did a run train enough? A run stopped by a short time budget (or few epochs on few images)
calibrates and exports like any other, and its model is useless: a flat grey reconstruction that
no score separates. The judgement below is recorded in the checkpoint (``training_warnings``)
and carried into the bundle (``bundle.json``: ``checkpoint.training_warnings``), where
``ganomaly-eval``, ``ganomaly-agent --check-config`` and the agent at start repeat it. No torch.
"""

from __future__ import annotations

from typing import Any

# At least this many optimisation steps and epochs: below them every model trained for the
# figures in docs/ (FMNIST, the conveyor, the castings) still reconstructed a blur.
MIN_STEPS = 300
MIN_EPOCHS = 3
# The held-out reconstruction loss must fall below this share of the first epoch's at some epoch.
MUST_FALL_TO = 0.98


def training_warnings(history: list[dict[str, Any]], n_train: int, stopped_by_time: bool = False) -> list[str]:
    """What is wrong with a run that ended with ``history`` (one record per epoch: ``batches``,
    ``val_con``), each said with what to do; empty when it trained enough."""
    out = []
    steps = int(sum(r.get("batches", 0) for r in history))
    epochs = len(history)
    if steps < MIN_STEPS or epochs < MIN_EPOCHS:
        why = "its --time-budget ran out" if stopped_by_time else "it ran out of epochs"
        out.append(f"trained too little: {steps} optimisation steps in {epochs} epoch(s) on {n_train} images "
                   f"({why}); a usable model needs at least {MIN_STEPS} steps and {MIN_EPOCHS} epochs. The model "
                   "is likely useless: train longer (a larger --time-budget, more --epochs, or ganomaly-train "
                   "--resume with them) and check it with ganomaly-eval before deploying it")
    losses = [float(r["val_con"]) for r in history if "val_con" in r]
    if len(losses) >= 2 and min(losses[1:]) > MUST_FALL_TO * losses[0]:
        out.append(f"the held-out normal images' reconstruction loss never fell (epoch 1: {losses[0]:.4g}, the "
                   f"best after it: {min(losses[1:]):.4g}): the generator learnt little. Train longer, check that "
                   "the training folder holds many varied normal images, or try --patience 0 to run every epoch")
    return out

