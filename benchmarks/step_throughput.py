"""Images/s of a DRMM training step against the supervised (DCN) step of the same network.

Both steps run in one process, interleaved in rounds, on the same random batch, so machine
noise hits both alike. Prints the figures and writes JSON.

    python benchmarks/step_throughput.py --arch conv_small --batch 100 \
        --out results/step_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from drmm.config import preset
from drmm.losses import drmm_objective
from drmm.model import DRMM
from drmm.train import Objective, make_optimizer, train_step

SIZES = {"conv_small": (1, 28), "conv_large": (3, 32), "conv_tiny": (1, 12)}


def time_steps(model, cfg, opt, sched, batch, steps: int) -> float:
    """Seconds per optimisation step, averaged over `steps` steps."""
    stepper = Objective(model, cfg)
    t0 = time.perf_counter()
    for _ in range(steps):  # the training loop's own step, without its NaN check (a host sync)
        train_step(stepper, model, opt, sched, batch, check=False)
    if batch[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def phase_times(model, cfg, opt, batch, steps: int) -> dict[str, float]:
    """Seconds per DRMM step spent in each phase (the phases of `step_terms`, timed apart)."""
    x_lab, y_lab, x_unl = batch
    sync = torch.cuda.synchronize if x_lab.is_cuda else (lambda: None)
    totals = dict.fromkeys(["bottom_up", "top_down", "objective", "backward", "optimizer"], 0.0)
    marks: list[float] = []

    def mark():
        sync()
        marks.append(time.perf_counter())

    for _ in range(steps):
        marks.clear()
        mark()
        bu_lab, bu_unl = model.bottom_up(x_lab), model.bottom_up(x_unl)
        mark()
        td = model.top_down(bu_unl)
        mark()
        terms = drmm_objective(cfg.loss, bu_lab.logits, y_lab, bu_unl.logits, x_unl, td.image,
                               td.templates)
        mark()
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        mark()
        opt.step()
        mark()
        for name, t0, t1 in zip(totals, marks[:-1], marks[1:], strict=True):
            totals[name] += (t1 - t0) / steps
    return totals


def main(args) -> dict:
    device = torch.device(args.device)
    channels, size = SIZES[args.arch]
    cfg = preset("mnist")
    cfg.model.arch, cfg.model.in_channels, cfg.model.image_size = args.arch, channels, size
    torch.manual_seed(0)
    half = args.batch // 2
    x = torch.rand(args.batch, channels, size, size, device=device)  # (B, C, H, W)
    y = torch.randint(0, 10, (args.batch,), device=device)  # (B,)
    # The supervised step takes all B images with labels; the DRMM step B/2 labeled + B/2 not.
    # variant name -> (supervised step?, channels_last?, bf16 autocast?)
    variants = {"supervised": (True, False, False), "drmm": (False, False, False)}
    if args.channels_last:
        variants |= {"supervised_channels_last": (True, True, False),
                     "drmm_channels_last": (False, True, False)}
    if args.bf16:
        variants |= {"supervised_bf16": (True, False, True), "drmm_bf16": (False, False, True)}
    runs = {}
    for name, (supervised, channels_last, bf16) in variants.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xv = x.contiguous(memory_format=fmt)
        batch = (xv, y, None) if supervised else (xv[:half], y[:half], xv[half:])
        model = DRMM(cfg.model).to(device, memory_format=fmt)
        opt, sched = make_optimizer(model, cfg, 10**6)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        runs[name] = (model, opt, sched, supervised, batch, autocast)
        cfg.train.supervised_only = supervised
        with autocast:
            time_steps(model, cfg, opt, sched, batch, args.warmup)
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):  # interleaved, so all see the same machine state
        for name, (model, opt, sched, supervised, batch, autocast) in runs.items():
            cfg.train.supervised_only = supervised
            with autocast:
                seconds[name].append(time_steps(model, cfg, opt, sched, batch, args.steps))
    best = {k: min(v) for k, v in seconds.items()}  # least-disturbed round
    model, opt, _, _, batch, _ = runs["drmm"]
    cfg.train.supervised_only = False
    breakdown = phase_times(model, cfg, opt, batch, args.steps)
    result = {
        "arch": args.arch,
        "batch": args.batch,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "images_per_s": {k: args.batch / v for k, v in best.items()},
        "supervised_images_per_s": args.batch / best["supervised"],
        "drmm_images_per_s": args.batch / best["drmm"],
        "ratio_drmm_over_supervised": best["drmm"] / best["supervised"],
        "seconds_per_step": best,
        "drmm_step_breakdown_seconds": breakdown,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="conv_small", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=100, help="images per step (half labeled)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best counts")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
