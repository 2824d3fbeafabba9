"""The one exception type for user-facing problems (the CLI prints it as one line, exit code 2),
and the device checks every command with --device shares."""

import argparse
import re
import sys
from pathlib import Path

import torch

# x86 AVX512-BF16 / AMX and Arm's BF16 extension: the CPU instructions that make bf16 matrix
# products faster than fp32. Without them bf16 is emulated: the DRMM step ran 14x slower in bf16
# autocast than in fp32 on our AVX2 CPU (benchmarks/step_throughput.py --bf16).
NATIVE_BF16_FLAGS = re.compile(r"\b(avx512_bf16|amx_bf16|bf16)\b")


class DRMMError(Exception):
    """A problem the user can fix (bad path, bad checksum, bad argument); the message says how."""


def require_device(device: str) -> None:
    """Refuse a CUDA device on a machine without one (every command that takes --device)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DRMMError("--device cuda asked for, but no CUDA device is available;"
                        " use --device cpu")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (Linux: its /proc/cpuinfo flags). Where the
    flags cannot be read, True: no warning rather than a wrong one."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    return bool(NATIVE_BF16_FLAGS.search(cpuinfo))


def warn_slow_precision(precision: str, device: torch.device) -> None:
    """bf16 on a CPU that only emulates it is many times slower than fp32: say so, once."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        print("drmm: warning: --precision bf16 on a CPU without native bf16 (no AVX512-BF16,"
              " AMX or Arm BF16) is emulated and runs many times slower than fp32 (14x for the"
              " DRMM step on an AVX2 CPU); use --precision fp32", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line as well (`drmm: error: argument --arch: invalid
    choice: 'resnet' (choose from ...); see drmm train --help`), not the usage text above it;
    the exit code stays argparse's 2."""

    def error(self, message: str):
        self.exit(2, f"drmm: error: {message}; see {self.prog} --help\n")


def tolerant_output() -> None:
    """Let stdout print any name the file system gave (a file name that is not UTF-8, held as
    surrogate escapes) as stderr does, with backslash escapes, rather than fail on it."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
