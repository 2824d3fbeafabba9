"""The one exception type for user-facing problems (the CLI prints it as one line, exit code 2),
and the device checks every command with --device shares."""

import torch


class DRMMError(Exception):
    """A problem the user can fix (bad path, bad checksum, bad argument); the message says how."""


def require_device(device: str) -> None:
    """Refuse a CUDA device on a machine without one (every command that takes --device)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DRMMError("--device cuda asked for, but no CUDA device is available;"
                        " use --device cpu")
