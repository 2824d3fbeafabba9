"""Checkpoints: written atomically (temporary file, flush, fsync, rename), loaded safely.

Loading uses torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only, so a file from the internet cannot run code when it is opened.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from drmm.errors import DRMMError


def atomic_write(path: str | Path, write) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DRMMError(f"checkpoint {path} does not exist; check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise DRMMError(f"checkpoint {path} holds objects other than tensors and plain values;"
                        " refusing to load it (it could run code)") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise DRMMError(f"checkpoint {path} cannot be read ({str(e).splitlines()[0]});"
                        " it is corrupt or truncated") from e
