"""Checkpoints: written atomically (drmm.files.atomic_write), loaded safely.

Writing: the state goes to a temporary file beside the target, is flushed and fsync'ed, then
renamed over the target, and the folder is fsync'ed so the rename itself survives a power cut. A
crash or a full disk at any moment leaves the previous checkpoint intact; a leftover temporary
file is removed by `drmm.files.remove_stale_temporaries` when the run is resumed.

Loading uses torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only (dicts, lists, tuples, numbers, strings), so a file from the internet cannot run code when
it is opened; one that carries any other pickled object is refused with a DRMMError.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from drmm.config import Config
from drmm.errors import DRMMError
from drmm.files import atomic_write, require_file
from drmm.model import DRMM

CHECKPOINT = "checkpoint.pt"  # the file inside a run folder

def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoint.pt): the file, checked to exist."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise DRMMError(f"folder {path} holds no {CHECKPOINT}; pass a drmm run folder or a"
                            " checkpoint file")
        return path / CHECKPOINT
    return require_file(path, "checkpoint", "pass a drmm run folder or its checkpoint.pt")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The dict saved at path (a file or a run folder); refuses pickled code and reports
    corrupt files as DRMMError."""
    path = resolve_checkpoint(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler stopped: at a global (a class or function: what a pickle
        # runs code through) or at an opcode it does not allow (junk, or an exotic pickle).
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise DRMMError(f"checkpoint {path} holds objects other than tensors and plain"
                            f" values (a pickled {found.group(1)}); refusing to load it"
                            " (unpickling it could run code)") from e
        raise DRMMError(f"checkpoint {path} is not a weights-only checkpoint"
                        f" ({weights_only_reason(e)});"
                        " refusing to load it: it is corrupt, or a pickle that could run code"
                        ) from e
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError, ...
        reason = first_line(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
        raise DRMMError(f"checkpoint {path} cannot be read ({reason}); it is corrupt or"
                        " truncated: use an older copy or start the run again") from e
    if not isinstance(state, dict):
        raise DRMMError(f"checkpoint {path} holds a {type(state).__name__}, not a dict;"
                        " it is not a drmm checkpoint")
    return state


def weights_only_reason(e: BaseException) -> str:
    """The line of torch's weights-only error that says what was refused."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return next((line.rstrip(".") for line in lines if line.startswith("Unsupported")),
                first_line(e))


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def state_dict_problem(e: BaseException, limit: int = 300) -> str:
    """torch's load_state_dict error in one line: which keys are missing, unexpected or of
    another shape (its first line alone, "Error(s) in loading state_dict", says nothing)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = "; ".join(lines[1:]) if len(lines) > 1 else first_line(e)
    return detail if len(detail) <= limit else detail[:limit - 3] + "..."


def load_trained_model(path: str | Path):
    """(model, config, state) of a drmm checkpoint or run folder, the model in eval mode (its
    BatchNorm running statistics in use and left alone); a DRMMError if it is not one."""
    state = load_checkpoint(path)
    if not {"config", "model"} <= state.keys():
        raise DRMMError(f"{path} is not a drmm checkpoint (no config or model);"
                        " pass the checkpoint.pt of a drmm run")
    cfg = Config.from_dict(state["config"])
    try:
        model = DRMM(cfg.model)
        model.load_state_dict(state["model"])
    except (ValueError, RuntimeError) as e:
        raise DRMMError(f"{path}: the weights do not fit the config stored with them"
                        f" ({state_dict_problem(e)}); the file is damaged or not from this"
                        " version") from e
    return model.eval(), cfg, state
