"""What the GPU suite's parts share: the results file every part writes its record into, the
part's deadline, and the paper's schedule the parts train and time with."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESULTS = "gpu_suite.json"
PARTS = ("correctness", "throughput", "mnist", "cifar10")

# ----------------------------------------------------------------------------------------------
# The results file: one JSON object, {part: record}, rewritten whole (atomically) at each update


def read_results(out: Path) -> dict:
    path = out / RESULTS
    return json.loads(path.read_text()) if path.is_file() else {}


def record(out: Path, part: str, rec: dict) -> None:
    results = read_results(out)
    results[part] = rec
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out / RESULTS)  # a reader (or a kill) never sees half a file


def finish(out: Path, part: str, rec: dict, line: str) -> None:
    rec["status"], rec["summary"] = "ok", line
    record(out, part, rec)
    print(f"gpu_suite[{part}]: {line}", flush=True)


# ----------------------------------------------------------------------------------------------
# Shared set-up


def left(a) -> float:
    """Seconds until this part's deadline."""
    return a.deadline - time.time()


def paper_schedule(cfg, device, batch: int = 100):
    """A copy of cfg with the paper's step (drmm.step.paper_step) and Appendix A's optimiser:
    plain SGD, lr 0.2 -> 1e-4 decayed exponentially, batch 100, and none of our additions
    (augmentation, the graph prior, the consistency term) unless a part sets them."""
    from drmm.config import PAPER_SCHEDULE
    from drmm.step import paper_step

    cfg = paper_step(cfg)
    t = cfg.train
    for key, value in PAPER_SCHEDULE.items():  # epochs: what fits; batch and N_U: the part's
        if key not in ("epochs", "batch_size", "unlabeled"):
            setattr(t, key, value)
    t.batch_size, t.seed, t.device = batch, 0, str(device)
    # log_every: the NaN check and the progress line are host syncs; on CUDA train() does
    # them only every log_every steps (and at each epoch's end).
    t.tensorboard, t.log_every = False, 200
    return cfg
