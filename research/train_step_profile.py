"""How fast a training step of the high-resolution recipe runs on this machine, and why.

    python -m research.train_step_profile [--threads 2] [--steps 10]

Prints, for the recommended ``--tile 64`` recipe (skip generator, width 32, one channel, batch
64, foreign patches, weight average; the arithmetic ``--precision auto`` would take here):

- the median seconds of a full G + D step (``Trainer.step``) and its GFLOP (PyTorch's flop
  counter), hence GFLOP/s;
- each convolution of the generator alone (found in the trainer's own generator, with the input
  shape it sees there), forward and backward on the batch, in NCHW and NHWC (the trainer uses NHWC
  on a CPU), with its GFLOP/s: what the kernels can give.

Random frames: the step's cost does not depend on the pixels. Nothing is written.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np


def _median_s(fn, reps: int, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc:
        fn()
    return float(fc.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch import nn

    from ganomaly_edge.train.scoring import to_model_input
    from ganomaly_edge.train.trainer import Trainer, TrainConfig

    ap = argparse.ArgumentParser(prog="python -m research.train_step_profile", description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = TrainConfig(image_size=64, channels=1, width=32, arch="skip", tile=64, frame_height=300, frame_width=300,
                      corrupt=0.5, ema=0.998, threads=a.threads)
    frames = np.random.default_rng(0).integers(0, 256, (60, 300, 300, 1), dtype=np.uint8)
    tr = Trainer(cfg, frames, progress=False)
    x = to_model_input(torch.from_numpy(tr.sampler.batch(np.arange(64) % len(tr.train_images))))
    step_s = _median_s(lambda: tr.step(x), a.steps)
    gflop = _flops(lambda: tr.step(x)) / 1e9
    out = {"threads": a.threads, "precision": tr.precision_used(), "batch": 64,
           "step_s_median": round(step_s, 3), "step_gflop": round(gflop, 1), "step_gflops": round(gflop / step_s, 1),
           "layers": {}}
    # every convolution of the generator, with the input shape it sees in the step
    shapes: dict[str, tuple[int, ...]] = {}
    convs = {name: m for name, m in tr.g.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output stays as it is
            shapes.setdefault(name, tuple(inputs[0].shape))
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in convs.items()]
    with torch.no_grad():
        tr.g(x)
    for h in hooks:
        h.remove()
    for name, conv in convs.items():
        row = {"in": list(shapes[name][1:])}
        for layout, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
            mod = copy.deepcopy(conv).float().to(memory_format=fmt)
            inp = torch.randn(shapes[name]).to(memory_format=fmt).requires_grad_(shapes[name][1] != 1)

            def fwd_bwd():
                mod(inp).sum().backward()

            t = _median_s(fwd_bwd, 15)
            row[f"{layout}_ms"] = round(t * 1e3, 2)
            row[f"{layout}_gflops"] = round(_flops(fwd_bwd) / t / 1e9, 1)
        out["layers"][name] = row
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
