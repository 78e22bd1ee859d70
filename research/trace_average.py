"""The held-out loss of the generator's weight average and of its live weights, epoch by epoch.

``ganomaly-train`` logs the loss of the network it judges (the average, with ``--ema``); this runs
the same training (the same arguments, the same checkpoint) and also scores the live weights after
every epoch, at the cost of one more validation pass each. The figures in docs/high-resolution.md's "The weight
average" come from it:

    python -m research.trace_average --data runs/hires-data/parts/train --out model.pt \\
        --channels 1 --tile 64 --time-budget 25 --seed 1

It prints one line per epoch and writes ``OUT.trace.csv`` (epoch, average, live).
"""

from __future__ import annotations

import csv
import sys


def main(argv: list[str] | None = None) -> int:
    from ganomaly_edge.train import cli
    from ganomaly_edge.train.trainer import Trainer, validation_loss

    args = cli._train_parser().parse_args(argv)
    if not cli.ema_decay(args):
        return cli._fail("no weight average to trace: --ema is 0 (tiles have it by default)")
    rows: list[tuple[int, float, float]] = []

    def on_epoch(epoch: int, tr: Trainer) -> None:
        live = validation_loss(tr.g, tr.val_tiles, tr.device, shown=tr.val_shown)
        rows.append((epoch, tr.history[-1]["val_con"], live))
        print(f"epoch {epoch}: held-out loss of the average {rows[-1][1]:.4f}, of the live weights {live:.4f}",
              flush=True)

    rc = cli.train_main(argv, on_epoch=on_epoch)  # the same training, checks and messages as ganomaly-train
    if rc == 0:
        with open(args.out + ".trace.csv", "w", newline="") as f:
            csv.writer(f).writerows([("epoch", "average", "live"), *rows])
    return rc


if __name__ == "__main__":
    sys.exit(main())
