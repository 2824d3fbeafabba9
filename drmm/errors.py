"""The one exception type for user-facing problems (the CLI prints it as one line, exit code 2),
and the device checks every command with --device shares."""

import argparse
import sys

import torch


class DRMMError(Exception):
    """A problem the user can fix (bad path, bad checksum, bad argument); the message says how."""


def require_device(device: str) -> None:
    """Refuse a CUDA device on a machine without one (every command that takes --device)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DRMMError("--device cuda asked for, but no CUDA device is available;"
                        " use --device cpu")


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
