"""Images/s of a DRMM training step against the supervised (DCN) step of the same network.

Every variant (supervised or DRMM step; NCHW or channels_last; fp32 or bf16; thread counts)
runs in one process on the same random batch, in many short interleaved rounds, each round in
a new random order, so machine noise hits all alike. Reported: the median images/s over rounds
with its 95 % bootstrap interval and the 10th-90th percentile range of single rounds, and ratios
taken inside each round (the same); a warning names every figure whose single rounds range
wider than --wide of its median. Prints the figures and writes JSON.

    python -m benchmarks.speed.step_throughput --arch conv_small --batch 100 --channels-last \
        --threads 1 2 --out results/step_throughput.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import numpy as np
import torch

from benchmarks.common import SIZES, cpu_name, time_steps
from drmm.config import preset
from drmm.files import write_json
from drmm.losses import StepContext, drmm_objective
from drmm.model import DRMM
from drmm.step import Batch, make_optimizer, paper_step, step_weights


def phase_times(model, cfg, opt, batch: Batch, steps: int) -> dict[str, float]:
    """Seconds per DRMM step spent in each phase (the phases of `step_terms`, timed apart)."""
    x_lab, y_lab, x_unl = batch.x_lab, batch.y_lab, batch.x_unl
    weights = step_weights(cfg, 0, 1)
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
        ctx = StepContext(bu_lab.logits, y_lab, logits_unsup=bu_unl.logits, images=x_unl,
                          rendered=td.image, templates=td.templates, loss_cfg=cfg.loss)
        terms = drmm_objective(ctx, weights)
        mark()
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        mark()
        opt.step()
        mark()
        for name, t0, t1 in zip(totals, marks[:-1], marks[1:], strict=True):
            totals[name] += (t1 - t0) / steps
    return totals


def spread(values: list[float]) -> dict[str, float]:
    """Median over rounds with a 95 % bootstrap interval (how well the median is known), the
    10th and 90th percentiles of single rounds, and their distance over the median."""
    v = np.asarray(values, dtype=np.float64)
    p10, median, p90 = np.quantile(v, [0.1, 0.5, 0.9])
    resampled = np.random.default_rng(0).choice(v, size=(2000, len(v)))  # (2000, rounds)
    lo, hi = np.quantile(np.median(resampled, axis=1), [0.025, 0.975])
    return {"median": float(median), "median_ci95": [float(lo), float(hi)], "p10": float(p10),
            "p90": float(p90), "relative_spread": float((p90 - p10) / median)}


def variants_of(args, threads: list[int]) -> dict[str, tuple]:
    """variant name -> (supervised step?, channels_last?, bf16 autocast?, torch threads)."""
    kinds = {"supervised": (True, False, False), "drmm": (False, False, False)}
    if args.channels_last:
        kinds |= {"supervised_channels_last": (True, True, False),
                  "drmm_channels_last": (False, True, False)}
    if args.bf16:
        kinds |= {"supervised_bf16": (True, False, True), "drmm_bf16": (False, False, True)}
    return {(name if len(threads) == 1 else f"{name}_{n}t"): (*kind, n)
            for n in threads for name, kind in kinds.items()}


def warmed_up(cfg, variants: dict[str, tuple], device, args) -> dict[str, tuple]:
    """Each variant's model, optimiser, batch and autocast, after --warmup untimed steps."""
    channels, size = SIZES[args.arch]
    torch.manual_seed(0)
    half = args.batch // 2
    x = torch.rand(args.batch, channels, size, size, device=device)  # (B, C, H, W)
    y = torch.randint(0, 10, (args.batch,), device=device)  # (B,)
    # The supervised step takes all B images with labels; the DRMM step B/2 labeled + B/2 not.
    runs = {}
    for name, (supervised, channels_last, bf16, n) in variants.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xv = x.contiguous(memory_format=fmt)
        batch = Batch(xv, y, None) if supervised else Batch(xv[:half], y[:half], xv[half:])
        model = DRMM(cfg.model).to(device, memory_format=fmt)
        opt, sched = make_optimizer(model, cfg, 10**6)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        runs[name] = (model, opt, sched, supervised, batch, autocast, n)
        cfg.train.supervised_only = supervised
        torch.set_num_threads(n)
        with autocast:
            time_steps(model, cfg, opt, sched, batch, args.warmup)
    return runs


def timed_rounds(cfg, runs: dict[str, tuple], args) -> dict[str, list[float]]:
    """Seconds per step of each variant, one figure per round.

    Many short rounds, each timing every variant once in a new random order: a slow spell of
    the machine hits one round of each variant, not all the rounds of one. Each figure is the
    median over rounds; each ratio is taken inside a round (the same machine state), then the
    median over rounds."""
    order = random.Random(0)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in order.sample(list(runs), len(runs)):
            model, opt, sched, supervised, batch, autocast, n = runs[name]
            cfg.train.supervised_only = supervised
            torch.set_num_threads(n)
            with autocast:
                seconds[name].append(time_steps(model, cfg, opt, sched, batch, args.steps))
    return seconds


def main(args) -> dict:
    device = torch.device(args.device)
    channels, size = SIZES[args.arch]
    # the paper's DRMM step, as the GPU suite times it (the mnist preset's consistency term adds
    # a bottom-up pass: 35 against 26 min a 14-epoch MNIST run here)
    cfg = paper_step(preset("mnist"))
    cfg.model.arch, cfg.model.in_channels, cfg.model.image_size = args.arch, channels, size
    threads = args.threads or [torch.get_num_threads()]
    variants = variants_of(args, threads)
    runs = warmed_up(cfg, variants, device, args)
    seconds = timed_rounds(cfg, runs, args)
    ips = {k: spread([args.batch / t for t in v]) for k, v in seconds.items()}
    ratios = {f"{k}_over_{base}": spread([a / b for a, b in zip(seconds[k], seconds[base],
                                                                strict=True)])
              for k, base in ratio_pairs(variants)}
    # Wide: single rounds scatter more than --wide around the median. The medians' intervals
    # say whether two figures still differ.
    wide = sorted(k for k, v in {**ips, **ratios}.items()
                  if v["relative_spread"] > args.wide)
    model, opt, _, _, batch, _, n = runs[next(k for k in runs if k.startswith("drmm"))]
    torch.set_num_threads(n)
    cfg.train.supervised_only = False
    breakdown = phase_times(model, cfg, opt, batch, args.steps)
    result = {
        "arch": args.arch,
        "batch": args.batch,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": threads,
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        # images/s of each variant: median over rounds (its 95 % interval), p10, p90 of rounds
        "images_per_s": ips,
        # seconds-per-step ratios inside each round (DRMM / supervised: the cost of the E-step)
        "ratios": ratios,
        "wide_spread": wide,  # figures whose p10-p90 range exceeds --wide of their median
        "seconds_per_step_by_round": seconds,  # the raw timings, variant -> one per round
        "drmm_step_breakdown_seconds": breakdown,
    }
    print(json.dumps(result, indent=2))
    for k in wide:
        print(f"step_throughput: warning: {k} varies by"
              f" {100 * {**ips, **ratios}[k]['relative_spread']:.0f} % (p10-p90) over the"
              " rounds: the machine is busy; compare figures with care", file=sys.stderr)
    if args.out:
        write_json(args.out, result)
    return result


def ratio_pairs(variants: dict[str, tuple]) -> list[tuple[str, str]]:
    """(variant, baseline) pairs to compare, from the variants' (supervised, channels_last,
    bf16, threads): each DRMM step against the supervised step of the same layout, precision
    and threads; each channels_last or bf16 step against the plain step of its kind; each step
    with more threads against the same step with the fewest."""
    name = {v: k for k, v in variants.items()}
    fewest = min(n for *_, n in variants.values())
    pairs = []
    for k, (supervised, channels_last, bf16, n) in variants.items():
        baselines = [(True, channels_last, bf16, n)] if not supervised else []
        if channels_last or bf16:
            baselines.append((supervised, False, False, n))
        if n != fewest:
            baselines.append((supervised, channels_last, bf16, fewest))
        pairs += [(k, name[b]) for b in baselines if b in name]
    return pairs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="conv_small", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=100, help="images per step (half labeled)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds; medians count")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--threads", type=int, nargs="+",
                   help="torch thread counts to time each variant with (default: torch's)")
    p.add_argument("--wide", type=float, default=0.10,
                   help="warn when a figure's p10-p90 range exceeds this fraction of its median")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
