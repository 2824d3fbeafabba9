"""What the benchmark scripts share: finished runs reused, a run and its data loaded back,
CIFAR-10's arrays, a timed training step, the device and a data set's subset.

Each script runs from the repository root as a module (`python -m benchmarks.speed.step_throughput
...`), so `drmm` and `benchmarks` import from the working tree.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the repository

# network -> (channels, image side) of the random batches the timing scripts step on
SIZES = {"conv_small": (1, 28), "conv_large": (3, 32), "conv_tiny": (1, 12)}


def cpu_name() -> str:
    """The processor and its vector units that matter here (native bf16 or not), for a record
    of where a figure was measured."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")),
                 platform.processor() or platform.machine())
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("Flags")), [])
    units = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{model} ({', '.join(units) or 'no AVX2'}){kernel_cap()}"


# The settings that cap the vector units torch's own kernels and oneDNN's may use: with both at
# AVX2, a CPU with AMX runs the code as a CPU without native bf16 would.
CAP_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def kernel_cap() -> str:
    """"; kernels capped: NAME=VALUE, ..." where the environment caps the kernels' vector units
    below the CPU's, else ""."""
    caps = [f"{k}={os.environ[k]}" for k in CAP_SETTINGS if os.environ.get(k)]
    return f"; kernels capped: {', '.join(caps)}" if caps else ""


# ----------------------------------------------------------------------------------------------
# Runs: trained once, then read back


def train_or_reuse(out: Path, flags: list[str]) -> dict:
    """`drmm train --out OUT --quiet FLAGS`, unless OUT holds a finished run (reused as it is);
    a killed run is resumed from its checkpoint. The run's metrics.json (any drmm version's,
    in the current layout)."""
    from drmm.cli import main as drmm
    from drmm.metrics import read_metrics

    if not (out / "metrics.json").is_file():
        args = ["train", "--out", str(out), "--quiet", *flags]
        if (out / "checkpoint.pt").is_file():
            args += ["--resume", str(out)]
        if drmm(args) != 0:
            raise SystemExit(f"drmm train failed for {out}")
    return read_metrics(out)


def run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a script that reads one finished run: the run and where its data are."""
    p.add_argument("run", help="a run folder or its checkpoint.pt")
    p.add_argument("--data-dir", default=None, help="where the run's data set is (or goes)")


def load_run(run, data_dir: str | None = None):
    """(model in eval mode, config, checkpoint state, the data set as the run saw it)."""
    from drmm.checkpoint import load_trained_model
    from drmm.data import load_run_data

    model, cfg, state = load_trained_model(run)
    return model, cfg, state, load_run_data(cfg, state, data_dir=data_dir)


def load_cifar(data_dir: str | Path | None) -> dict[str, np.ndarray]:
    """CIFAR-10 as uint8 (N, 32, 32, 3) arrays: DIR/cifar10/cifar10.npz or DIR/cifar10.npz if
    there, else the official tarball (found in DIR or the cache, or downloaded)."""
    from drmm.data.cifar10 import load_cifar10

    root = Path(data_dir or ".")
    for npz in (root / "cifar10" / "cifar10.npz", root / "cifar10.npz"):
        if npz.is_file():
            with np.load(npz) as f:
                return {k: f[k] for k in f.files}
    return load_cifar10(data_dir)


# ----------------------------------------------------------------------------------------------
# Devices, subsets, timed steps


def sync(device) -> None:
    """Wait for the device's queued work (a CUDA timing must not stop before the kernels do)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def device_and_name(smoke: bool):
    """The CUDA device, with cuDNN autotuning on (every shape here is fixed), and its name;
    the CPU under --smoke."""
    import torch

    if smoke:
        torch.manual_seed(0)
        return torch.device("cpu"), "CPU (SMOKE=1)"
    if not torch.cuda.is_available():
        sys.exit("gpu_suite: torch sees no CUDA device (use SMOKE=1 for a CPU run)")
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda"), torch.cuda.get_device_name(0)


def subset(data, train_idx, test_n: int | None = None):
    """A copy of the Dataset with these training images and the first test_n test images."""
    d = copy.copy(data)
    d.x_train, d.y_train = data.x_train[train_idx], data.y_train[train_idx]
    if test_n is not None and data.has_test:
        d.x_test, d.y_test = data.x_test[:test_n], data.y_test[:test_n]
    return d


def time_steps(model, cfg, opt, sched, batch, steps: int, stepper=None) -> float:
    """Seconds per optimisation step, averaged over `steps` steps, each term of the objective
    at its weight of the run's first step; `stepper` (default: the model's Objective) computes
    the terms, so a compiled one can be timed alike."""
    from drmm.step import Objective, step_weights

    stepper = Objective(model, cfg) if stepper is None else stepper
    weights = step_weights(cfg, 0, 1)
    t0 = time.perf_counter()
    for _ in range(steps):  # the training loop's own step, without its NaN check (a host sync)
        train_step(stepper, model, opt, sched, batch, weights)
    sync(batch.x_lab.device)
    return (time.perf_counter() - t0) / steps


def train_step(stepper, model, opt, sched, batch, weights, autocast=None) -> dict:
    """One training step as drmm/train.py's loop takes it, without its finite check (a host
    sync): the E-step and objective (stepper), zero_grad, backward, opt.step, sched.step.
    Returns the loss terms, detached."""
    with autocast if autocast is not None else contextlib.nullcontext():
        terms = stepper(batch, weights)  # {"loss", "ce", ...}
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    sched.step()
    return {k: v.detach() for k, v in terms.items()}
