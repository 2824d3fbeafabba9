"""A run folder belongs to one run: a lock while it trains, an id, and what counts as a run
folder (docs/reliability.md, section 1).

- Lock: a training process holds an exclusive `fcntl.flock` on RUN_DIR/run.lock from before it
  reads the folder until its last file is written. The kernel drops the lock when the process
  ends, however it ends (a SIGKILL leaves no stale lock), so a second process on the same folder
  is refused at once, naming the holder's pid, instead of both writing into it. Under torchrun
  only rank 0 locks (it alone writes the folder).
- Id: every run gets a random id, written in config.json and in every checkpoint; a resume
  refuses a checkpoint whose id is not the folder's (one copied from another run's folder).
  Runs of versions without ids are accepted and take one.
- A fresh run goes only into a new or empty folder, or into a drmm run's own folder (one that
  crashed before its first checkpoint): never over a folder of the user's files.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import json
import os
import secrets
import socket
import sys
from pathlib import Path

from drmm.checkpoint import CHECKPOINT, ID_KEY
from drmm.errors import DRMMError
from drmm.files import TMP_SUFFIX, check_out_dir
from drmm.records import RUN_FILES

LOCK = "run.lock"  # the lock file inside a run folder
CONFIG = "config.json"
# What drmm itself writes into a run folder: a fresh run may go into a folder holding only these
# (run_info.json: `drmm reproduce`'s record of the run, written before it trains).
RUN_NAMES = frozenset({*RUN_FILES, "reconstructions.png", "tb", LOCK, "run_info.json"})
BEFORE_CONFIG = frozenset({LOCK, "tb", "run_info.json"})  # what may precede config.json


# ----------------------------------------------------------------------------------------------
# The lock


class RunLock:
    """An exclusive flock on FOLDER/run.lock, its file holding the holder's pid and host."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.fd: int | None = None
        self.made: Path | None = None  # the topmost folder this lock created, removed if unused

    def acquire(self) -> None:
        check_out_dir(self.folder)  # a file or an unwritable path: the usual one line
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.made = missing[-1] if missing else None
        while self.fd is None:  # again if the file was replaced between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    self.remove_made()
                    raise DRMMError(f"{self.folder} is in use by another drmm run"
                                    f" ({self.holder()}); wait for it to end, or pass another"
                                    " --out") from None
                print(f"drmm: warning: cannot lock {self.path} ({e.strerror or e}); make sure no"
                      " other run writes into this folder", file=sys.stderr)
                return
            if same_file(fd, self.path):
                self.fd = fd
            else:
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode())

    def holder(self) -> str:
        """The lock holder's pid (and its host, if not this one), as its lock file says."""
        try:
            pid, host = (self.path.read_text().split() + ["", ""])[:2]
        except OSError:
            pid, host = "", ""
        if not pid:
            return "its pid not yet written"
        return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")

    def release(self) -> None:
        """Unlock and delete the lock file (before unlocking: a process that opened it meanwhile
        sees a replaced file and tries again); remove the folders the lock made if the run
        wrote nothing into them."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
        self.remove_made()

    def remove_made(self) -> None:
        if self.made is None:
            return
        folder = self.folder
        while True:
            try:
                folder.rmdir()  # only if empty: a refused run leaves nothing behind
            except OSError:
                return
            if folder == self.made:
                return
            folder = folder.parent


def same_file(fd: int, path: Path) -> bool:
    """Whether the open file fd is still the file at path (not unlinked or replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def launched_rank() -> int:
    """This process's rank under torchrun (RANK); 0 for a single process."""
    return int(os.environ.get("RANK", "0"))


def one_run_per_folder(fn):
    """Decorate train(cfg, out_dir, ...): hold out_dir's lock (rank 0) for the whole call."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        if launched_rank() != 0:
            return fn(*args, **kwargs)
        lock = RunLock(signature.bind(*args, **kwargs).arguments["out_dir"])
        lock.acquire()
        try:
            return fn(*args, **kwargs)
        finally:
            lock.release()

    return locked


# ----------------------------------------------------------------------------------------------
# What a run folder holds


def saved_config(folder: Path) -> dict | None:
    """FOLDER/config.json if it is a drmm run's config (a mapping with its version and model /
    loss / train sections), else None."""
    try:
        d = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(d, dict) and isinstance(d.get("version"), int)
            and all(isinstance(d.get(s), dict) for s in ("model", "loss", "train"))):
        return None
    return d


def check_new_run_folder(folder: Path) -> None:
    """A fresh run may go into a new or empty folder, or a drmm run's own folder that holds no
    checkpoint yet; refuse a folder of the user's files before anything is written."""
    if not folder.is_dir():
        return
    names = {p.name for p in folder.iterdir() if not is_temporary(p.name)}
    if names <= BEFORE_CONFIG or saved_config(folder) is not None:
        return
    theirs = sorted(names - {LOCK})  # the lock file is this run's own
    shown = ", ".join(theirs[:3]) + (", ..." if len(theirs) > 3 else "")
    raise DRMMError(f"--out {folder} is not empty and not a drmm run folder (it holds {shown});"
                    " pass a new or empty folder")


def is_temporary(name: str) -> bool:
    """A temporary file an atomic write of a run file left (checkpoint.pt.x1y2.tmp)."""
    return name.endswith(TMP_SUFFIX) and any(name.startswith(f + ".") for f in RUN_NAMES)


def run_id(folder: Path, saved: dict | None) -> str:
    """The run's id: a new one for a fresh run; for a resumed run the checkpoint's, refused if
    the folder's config.json names another run (runs without an id take one)."""
    if saved is None:
        return secrets.token_hex(8)
    config = saved_config(folder) or {}
    mine, theirs = config.get(ID_KEY), saved.get(ID_KEY)
    if isinstance(mine, str) and isinstance(theirs, str) and mine != theirs:
        raise DRMMError(f"{folder / CHECKPOINT} belongs to run {theirs}, but {folder} holds run"
                        f" {mine}: the checkpoint was copied from another run's folder; resume"
                        " it in its own folder, or start a new run with another --out")
    return next((i for i in (theirs, mine) if isinstance(i, str)), None) or secrets.token_hex(8)


def resume_folder(path: str) -> str:
    """The run folder --resume names: a folder, or its checkpoint.pt."""
    p = Path(path)
    if p.name == CHECKPOINT and not p.is_dir():
        return str(p.parent)
    if p.is_file():
        raise DRMMError(f"--resume {path} is a file; pass the run folder (or its {CHECKPOINT})")
    return path


def refuse_run_files(paths: list[Path], flag: str) -> None:
    """Refuse to write any of paths over a file of a drmm run (suggest's CSV and .npy)."""
    for path in paths:
        folder = path.parent
        is_run = (folder / CHECKPOINT).is_file() or saved_config(folder) is not None
        if is_run and path.name in RUN_NAMES:
            raise DRMMError(f"{flag}: {path} is a file of the drmm run in {folder}; writing it"
                            " would replace the run's own; pass a path of another name")
