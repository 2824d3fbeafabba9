"""Checkpoints: written atomically (temporary file, flush, fsync, rename), loaded safely.

Writing: the state goes to a temporary file beside the target, is flushed and fsync'ed, then
renamed over the target, and the folder is fsync'ed so the rename itself survives a power cut. A
crash or a full disk at any moment leaves the previous checkpoint intact; a leftover temporary
file is removed by `remove_stale_temporaries` when the run is resumed.

Loading uses torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only (dicts, lists, tuples, numbers, strings), so a file from the internet cannot run code when
it is opened; one that carries any other pickled object is refused with a DRMMError.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

import torch

from drmm.errors import DRMMError

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path.

    Any OSError (a full disk, a read-only folder) becomes a DRMMError naming the file; the
    temporary file is removed and the previous copy of path, if any, is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        raise DRMMError(f"cannot write {path} ({e.strerror or e}); the previous copy, if any, is"
                        " kept: free disk space or fix the folder's permissions, then resume"
                        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files a killed atomic_write(path) left behind; returns them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{path.name}.*{TMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The dict saved at path; refuses pickled code and reports corrupt files as DRMMError."""
    path = Path(path)
    if not path.is_file():
        raise DRMMError(f"checkpoint {path} does not exist; check the path")
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


def load_trained_model(path: str | Path):
    """(model, config) of a drmm checkpoint, the weights loaded; a DRMMError if it is not one."""
    from drmm.config import Config
    from drmm.model import DRMM

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
                        f" ({first_line(e)}); the file is damaged or not from this version") from e
    return model, cfg
