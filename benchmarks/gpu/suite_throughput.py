"""The GPU suite's part 2, throughput: the DRMM step against the supervised (DCN) step,
ConvSmall and ConvLarge, batch 100 and 500, fp32 and bf16, channels-last and NCHW; images/s,
their ratio and peak memory (benchmarks/speed/step_throughput.py's timing, interleaved)."""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path

from benchmarks.common import SIZES, device_and_name, time_steps
from benchmarks.gpu.suite_base import finish, left, paper_schedule, record

NOTE = ("images/s count all B images of a step (DRMM: B/2 labeled + B/2 unlabeled; supervised:"
        " B labeled); best round counts; peak_mib: peak CUDA memory while building the model"
        " and running its warm-up steps, beyond what was allocated before (the batch, earlier"
        " variants)")


def warmed_up_variants(cfg, x, y, device, warmup: int) -> dict[str, tuple]:
    """Every variant (step x precision x layout) built and stepped `warmup` times (cuDNN
    autotuning, allocator): name -> (model, cfg, optimiser, scheduler, batch, autocast,
    peak MiB)."""
    import torch

    from drmm.model import DRMM
    from drmm.step import Batch, make_optimizer

    half = len(x) // 2
    runs = {}
    for step, precision, layout in itertools.product(("drmm", "supervised"),
                                                     ("fp32", "bf16"), ("cl", "nchw")):
        vcfg = copy.deepcopy(cfg)
        vcfg.train.supervised_only = step == "supervised"
        fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
        xv = x.contiguous(memory_format=fmt)
        b = (Batch(xv, y, None) if step == "supervised"
             else Batch(xv[:half], y[:half], xv[half:]))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        model = DRMM(vcfg.model).to(device, memory_format=fmt)
        opt, sched = make_optimizer(model, vcfg, 10**6)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                  enabled=precision == "bf16")
        with autocast:
            time_steps(model, vcfg, opt, sched, b, warmup)  # cuDNN autotuning, allocator
        peak = ((torch.cuda.max_memory_allocated() - base) / 2**20
                if device.type == "cuda" else None)
        runs[f"{step}_{precision}_{layout}"] = (model, vcfg, opt, sched, b, autocast, peak)
    return runs


def time_group(arch: str, batch: int, device, warmup: int, steps: int, rounds: int) -> dict:
    """One network at one batch size: each variant's best round, and DRMM / DCN step time."""
    import torch

    from drmm.config import preset

    t_group = time.time()
    channels, size = SIZES[arch]
    cfg = paper_schedule(preset("mnist"), device, batch)
    cfg.model.arch, cfg.model.in_channels, cfg.model.image_size = arch, channels, size
    torch.manual_seed(0)
    x = torch.rand(batch, channels, size, size, device=device)  # (B, C, H, W)
    y = torch.randint(0, 10, (batch,), device=device)  # (B,)
    runs = warmed_up_variants(cfg, x, y, device, warmup)
    seconds = {k: [] for k in runs}
    for _ in range(rounds):  # interleaved: every variant sees the same machine state
        for k, (model, vcfg, opt, sched, b, autocast, _) in runs.items():
            with autocast:
                seconds[k].append(time_steps(model, vcfg, opt, sched, b, steps))
    best = {k: min(v) for k, v in seconds.items()}
    variants = {k: {"images_per_s": batch / s, "ms_per_step": 1e3 * s,
                    "peak_mib": runs[k][-1]} for k, s in best.items()}
    ratio = {f"{p}_{lay}": best[f"drmm_{p}_{lay}"] / best[f"supervised_{p}_{lay}"]
             for p in ("fp32", "bf16") for lay in ("cl", "nchw")}
    del runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"arch": arch, "batch": batch, "variants": variants,
            "time_ratio_drmm_over_supervised": ratio, "seconds": time.time() - t_group}


def summary_line(groups: list[dict]) -> str:
    parts = []
    for g in groups:
        if "skipped" in g:
            parts.append(f"{g['arch']} b{g['batch']} skipped")
            continue
        speed = {k: f"{v['images_per_s']:.0f}" for k, v in g["variants"].items()}
        ratio = g["time_ratio_drmm_over_supervised"]
        parts.append(f"{g['arch']} b{g['batch']} DRMM img/s fp32 {speed['drmm_fp32_cl']}/"
                     f"{speed['drmm_fp32_nchw']} bf16 {speed['drmm_bf16_cl']}/"
                     f"{speed['drmm_bf16_nchw']} (NHWC/NCHW), DRMM/DCN step time"
                     f" {ratio['fp32_cl']:.1f}x fp32 {ratio['bf16_cl']:.1f}x bf16")
    return "; ".join(parts)


def part_throughput(a) -> None:
    import torch

    out = Path(a.out)
    device, name = device_and_name(a.smoke)
    big = 8 if a.smoke else 500
    small = 4 if a.smoke else 100
    # The most wanted first: if time runs out, the later groups are the ones left out.
    groups = [("conv_large", small), ("conv_small", small), ("conv_large", big),
              ("conv_small", big)]
    warmup, steps, rounds = (1, 1, 1) if a.smoke else (5, 10, 3)
    if a.smoke:  # the same code on a toy network: bf16 is emulated on most CPUs, and slow
        groups = [("conv_tiny", small), ("conv_tiny", big)]
    rec = {"status": "running", "device": name, "torch": torch.__version__,
           "optimizer": "sgd (the paper's)", "warmup_steps": warmup, "steps_per_round": steps,
           "rounds": rounds, "groups": [], "note": NOTE}
    for arch, batch in groups:
        if left(a) < 5:
            rec["groups"].append({"arch": arch, "batch": batch, "skipped": "out of time"})
            continue
        rec["groups"].append(time_group(arch, batch, device, warmup, steps, rounds))
        record(out, "throughput", rec)
    finish(out, "throughput", rec, summary_line(rec["groups"]))
