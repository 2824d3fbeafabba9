"""torch.compile against eager for the paper's DRMM training step (ConvSmall, batch 100), in
one process.

    python -m benchmarks.speed.compile_check

Eager is timed before and after the compiled step, so machine noise shows up as a gap between
the two eager figures.
"""

import time

import torch

from benchmarks.common import time_steps
from drmm.config import preset
from drmm.model import DRMM
from drmm.step import Batch, Objective, make_optimizer, paper_step

WARMUP, STEPS, BATCH = 3, 10, 100


def images_per_s(stepper, model, cfg, x, y) -> float:
    opt, sched = make_optimizer(model, cfg, 10**6)
    half = BATCH // 2
    batch = Batch(x[:half], y[:half], x[half:])
    time_steps(model, cfg, opt, sched, batch, WARMUP, stepper)  # compilation happens here
    return BATCH / time_steps(model, cfg, opt, sched, batch, STEPS, stepper)


def main() -> None:
    cfg = paper_step(preset("mnist"))  # the DRMM step as it was checked
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)  # (B,1,28,28)
    y = torch.randint(0, 10, (BATCH,))  # (B,)
    eager = DRMM(cfg.model).to(memory_format=torch.channels_last)
    print("eager img/s", round(images_per_s(Objective(eager, cfg), eager, cfg, x, y)), flush=True)
    model = DRMM(cfg.model).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    compiled = torch.compile(Objective(model, cfg))
    rate = images_per_s(compiled, model, cfg, x, y)
    print("compiled img/s", round(rate), "(compile + run", round(time.perf_counter() - t0), "s)")
    print("eager again img/s", round(images_per_s(Objective(eager, cfg), eager, cfg, x, y)))


if __name__ == "__main__":
    main()
