"""What the paper's full tables cost: FLOPs per training image, and hours at a given speed.

Counts the floating-point operations of one DRMM training step (bottom-up on both halves,
top-down on the unlabeled half, objective, backward) with torch's FlopCounterMode, for the
network of each table, then prices every table under the `paper` schedule (Appendix A: 500
epochs; an epoch is one pass over the unlabeled set, each step 50 labeled + 50 unlabeled
images, so 2 x N_U images an epoch). Speeds come from a measurement in this process (`--time`,
on --device) or are given (`--images-per-s table1=850 table4=30`, e.g. from a training log or
benchmarks/gpu/gpu_suite.sh), or, for a device not at hand, from an assumed sustained rate
(`--tflops 40`: an estimate, labelled as one). Prints the figures and writes JSON.

    python -m benchmarks.paper.table_cost --time --out results/table_cost.json
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import time_steps
from drmm.config import PAPER_SCHEDULE as PAPER
from drmm.config import preset
from drmm.files import write_json
from drmm.model import DRMM
from drmm.reproduce import TABLES
from drmm.step import Batch, make_optimizer, paper_step

# table -> (channels, image size, N_U: the unlabeled training set of the paper)
DATA = {"table1": (1, 28, 60000), "table3": (3, 32, 73257), "table4": (3, 32, 50000)}


def step_setup(table: str, batch: int, device: torch.device):
    """The table's network and optimiser, and one random batch (labeled half, labels, unlabeled
    half), in the order `benchmarks.common.time_steps` takes them."""
    cfg = paper_step(preset(TABLES[table].preset))  # the tables' runs: the paper's step,
    cfg.model.arch = TABLES[table].arch  # on the paper's network, whatever the preset trains
    channels, size, _ = DATA[table]
    cfg.model.in_channels, cfg.model.image_size = channels, size
    torch.manual_seed(0)
    model = DRMM(cfg.model).to(device, memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, cfg, 10**6)
    x = torch.rand(batch, channels, size, size, device=device)  # (B, C, H, W)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.model.num_classes, (batch // 2,), device=device)  # (B/2,)
    return model, cfg, opt, sched, Batch(x[: batch // 2], y, x[batch // 2:])


def flops_per_image(table: str, batch: int) -> float:
    with FlopCounterMode(display=False) as counter:
        time_steps(*step_setup(table, batch, torch.device("cpu")), steps=1)
    return counter.get_total_flops() / batch


def measure_images_per_s(table: str, batch: int, device: torch.device, steps: int) -> float:
    setup = step_setup(table, batch, device)
    time_steps(*setup, steps=1)  # warm-up
    return batch / time_steps(*setup, steps=steps)


def table_speed(text: str) -> tuple[str, float]:
    """argparse type of one --images-per-s item: TABLE=SPEED."""
    table, _, speed = text.partition("=")
    try:
        value = float(speed)
    except ValueError:
        value = 0.0
    if table not in DATA or not value > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write TABLE=SPEED, TABLE one of {sorted(DATA)}, SPEED > 0")
    return table, value


def main(args) -> dict:
    given = dict(args.images_per_s)
    device = torch.device(args.device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "tables": {}}
    if args.speeds_from:  # FLOPs are counted here; the given speeds were measured elsewhere
        result["speeds_from"] = args.speeds_from
    for table, (_, _, n_unlabeled) in DATA.items():
        t = TABLES[table]
        runs = len(t.rows) * len(t.labels) * args.seeds
        images_per_run = PAPER["epochs"] * 2 * n_unlabeled
        flops = flops_per_image(table, args.batch)
        if table in given:
            speed, source = given[table], "given"
        elif args.time:
            steps = 3 if table != "table1" and device.type == "cpu" else 20
            speed, source = measure_images_per_s(table, args.batch, device, steps), "measured"
        elif args.tflops:  # a device not at hand: an assumed sustained rate, said so
            speed, source = args.tflops * 1e12 / flops, f"assumed {args.tflops:g} TFLOP/s"
        else:
            speed, source = None, None
        row = {"model": t.model, "runs": runs, "images_per_run": images_per_run,
               "gflops_per_image": flops / 1e9,
               "pflops_per_run": flops * images_per_run / 1e15,
               "images_per_s": speed, "speed_source": source}
        if speed:
            row["achieved_tflops"] = flops * speed / 1e12
            row["hours_per_run"] = images_per_run / speed / 3600
            row["hours_per_table"] = row["hours_per_run"] * runs
        result["tables"][table] = row
        print(f"{table}: {t.model}, {flops / 1e9:.3f} GFLOP per training image, "
              f"{row['pflops_per_run']:.1f} PFLOP per 500-epoch run, {runs} runs"
              + (f"; at {speed:.0f} images/s ({source}): {row['hours_per_run']:.1f} h a run, "
                 f"{row['hours_per_table']:.0f} h the table" if speed else ""), flush=True)
    if args.out:
        write_json(args.out, result)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100, help="images per step (half labeled)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per table cell")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--time", action="store_true", help="measure images/s here (CPU: ~2 min)")
    p.add_argument("--images-per-s", nargs="*", default=[], type=table_speed, metavar="TABLE=SPEED",
                   help="known training speeds, e.g. table1=850 table4=30")
    p.add_argument("--speeds-from", help="where the given speeds were measured (kept in the JSON)")
    p.add_argument("--tflops", type=float,
                   help="else: price the tables at this assumed sustained TFLOP/s")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
