"""The arithmetic of a run's training step: fp32, or bf16 autocast where the hardware has it.

bf16 autocast runs the convolutions and matrix products in bfloat16, and the BatchNorm, ReLU
and pooling after them on those bf16 maps; the weights and the optimizer stay float32. On a CPU
with AMX or AVX512-BF16 it doubles the DRMM step (one thread: 2.2x the cifar10 preset's step,
1.5x ConvSmall's; results/precision.md); on a CPU that only emulates bf16 it is many times
slower (14x on an AVX2 CPU), and on CUDA at 100 images a step the networks are launch-bound and
bf16 gains nothing (results/gpu.md). "auto", the default, follows that: bf16 on a CPU that
computes it natively, fp32 elsewhere. The objective, the rendering error and the novelty scores
are always computed in float32 (drmm/losses.py, drmm/scores.py). The test set is evaluated in the
step's precision after every epoch but the last, whose error, the run's result, is float32's, as
`drmm eval` and `drmm predict` compute it (drmm/train.py).
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")  # --precision
# x86 AVX512-BF16 / AMX and Arm's BF16 extension: the CPU instructions that make bf16 matrix
# products faster than fp32.
NATIVE_BF16_FLAGS = re.compile(r"\b(avx512_bf16|amx_bf16|bf16)\b")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bf16 natively (Linux: its /proc/cpuinfo flags); None where the
    flags cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    return bool(NATIVE_BF16_FLAGS.search(cpuinfo))


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(the precision a run on `device` uses, why) for --precision `requested`."""
    if requested != "auto":
        return requested, "--precision " + requested
    if device.type != "cpu":
        return "fp32", "auto: bf16 measured no faster on CUDA at 100 images a step"
    native = cpu_has_native_bf16()
    if native:
        return "bf16", "auto: this CPU computes bf16 natively, with AMX or AVX512-BF16"
    if native is None:
        return "fp32", "auto: this CPU's bf16 support cannot be read"
    return "fp32", "auto: this CPU has no native bf16, which it would emulate many times slower"


def step_autocast(precision: str, device: torch.device):
    """The context a training step runs in: bf16 autocast, or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def announce_precision(precision: str, why: str, device: torch.device) -> None:
    """A run not in fp32 says so on stderr, and why; bf16 asked for on a CPU that only emulates
    it (many times slower than fp32) gets a warning first."""
    if precision != "bf16":
        return
    if why == "--precision bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
        print("drmm: warning: --precision bf16 on a CPU without native bf16 (no AVX512-BF16,"
              " AMX or Arm BF16) is emulated and runs many times slower than fp32 (14x for the"
              " DRMM step on an AVX2 CPU); use --precision auto or fp32", file=sys.stderr)
    print(f"drmm: bf16 autocast ({why}); --precision fp32 to turn it off", file=sys.stderr)
