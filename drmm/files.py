"""Files the user names and files drmm writes: path checks with one-line errors, atomic writes.

Every command checks its output path before it loads any data (`check_out_dir`,
`check_out_file`), so a bad --out costs nothing; every file is written by `atomic_write`
(temporary file, flush, fsync, rename), so a crash or a full disk leaves the previous copy
intact. New files get the mode the user's umask gives, as any other program's files (not the
0600 of a bare mkstemp), so colleagues on a shared cluster can read a run. CSV files are written
so that no cell runs as a spreadsheet formula and file names that are not UTF-8 read back as
the same names (`csv_cell`, `read_csv`); YAML files the user writes may not repeat a key.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import yaml

from drmm.errors import DRMMError

TMP_SUFFIX = ".tmp"


def new_file_mode() -> int:
    """The mode open() would give a new file: 0o666 less the process's umask."""
    mask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


def mkstemp_shared(path: Path, suffix: str) -> tuple[int, str]:
    """mkstemp beside `path` (same folder, so the final rename is atomic), umask's mode."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.fchmod(fd, new_file_mode())
    return fd, tmp


def atomic_write(path: str | Path, write) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path.

    Any OSError (a full disk, a read-only folder) becomes a DRMMError naming the file; the
    temporary file is removed and the previous copy of path, if any, is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp_shared(path, TMP_SUFFIX)
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


def write_json(path: str | Path, obj) -> None:
    """obj as indented JSON at path, its folder made if need be, written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


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


# ----------------------------------------------------------------------------------------------
# Paths the user gives: "does not exist" only when it does not; the wrong kind says so.


def require_file(path: str | Path, what: str, fix: str) -> Path:
    """path as a Path if it is an existing file, else a DRMMError that names what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise DRMMError(f"{what} {path} is a folder, not a file; {fix}")
    if not path.exists():
        raise DRMMError(f"{what} {path} does not exist; {fix}")
    if not path.is_file():
        raise DRMMError(f"{what} {path} is not a regular file; {fix}")
    return path


def require_dir(path: str | Path, what: str, fix: str) -> Path:
    """path as a Path if it is an existing folder, else a DRMMError that names what is wrong."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DRMMError(f"{what} {path} is a file, not a folder; {fix}")
    if not path.exists():
        raise DRMMError(f"{what} {path} does not exist; {fix}")
    return path


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """A folder drmm may create or write into: refuse a file, a path under a file, or a folder
    it cannot write, before any work starts."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DRMMError(f"{flag} {path} is an existing file, not a folder; pass a folder path")
    check_writable_parent(path if path.is_dir() else path.parent, path, flag)
    return path


def check_out_file(path: str | Path, flag: str = "--out", suffix: str | None = None) -> Path:
    """A file drmm may create or replace: refuse a folder, a path under a file, an unwritable
    folder, or the wrong extension, before any work starts."""
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise DRMMError(f"{flag} {path} must end in {suffix}")
    if path.is_dir():
        raise DRMMError(f"{flag} {path} is a folder; pass a file path (for example"
                        f" {path / ('out' + (suffix or ''))})")
    check_writable_parent(path.parent, path, flag)
    return path


def check_writable_parent(folder: Path, target: Path, flag: str) -> None:
    """The nearest existing ancestor of `folder` must be a folder we can write into."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DRMMError(f"{flag} {target} lies under {existing}, which is a file; pass a path"
                        " in a folder")
    try:  # os.access is wrong for root and for some network file systems; try for real
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise DRMMError(f"{flag} {target}: cannot write in {existing} ({e.strerror or e}); pass"
                        " a path in a folder you can write") from e


# ----------------------------------------------------------------------------------------------
# CSV files: cells a spreadsheet cannot run, names that are not UTF-8

# A spreadsheet reads a cell that begins with one of these as a formula (OWASP, "CSV
# injection"): `=cmd|' /C calc'!A0` runs a program. Such a cell is written with a leading "'",
# which makes it text; a cell that begins with "'" itself gets one too, so that reading drops
# exactly one "'" from every cell that begins with it and gives back what was written.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# File names that are not UTF-8 (an old zip's "caf\xe9.png") reach Python as str with
# surrogate escapes (PEP 383); CSV files carry them as the original bytes, so that a name read
# back from the file opens the same file.
CSV_ERRORS = "surrogateescape"


def csv_cell(text: str) -> str:
    """A text cell as written to a CSV file: with a leading "'" where a spreadsheet would read a
    formula (or the text begins with "'")."""
    return "'" + text if text.startswith((*FORMULA_STARTS, "'")) else text


def csv_text(cell: str) -> str:
    """The text a cell written by csv_cell holds (its leading "'" dropped)."""
    return cell[1:] if cell.startswith("'") else cell


def csv_stream(f) -> io.TextIOWrapper:
    """A text stream over the binary file f (an atomic_write's), as drmm's CSV files are
    written: UTF-8, surrogate escapes as their bytes, the csv module's own line ends. Detach it
    when done (`stream.detach()`) to leave f open."""
    return io.TextIOWrapper(f, encoding="utf-8", errors=CSV_ERRORS, newline="")


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file drmm wrote, as {column: text} with csv_cell's "'" dropped and
    names that are not UTF-8 as the str that opens the same file; also as a spreadsheet saves it
    back: a byte-order mark, ";" or tab between the cells (told by the header line), a cell a
    short row lacks as None (csv.DictReader's)."""
    with open(path, encoding="utf-8-sig", errors=CSV_ERRORS, newline="") as f:
        text = f.read()
    try:  # the delimiter alone: quoting stays the csv module's own, as drmm writes it
        delimiter = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    rows = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    return [{k if k is None else csv_text(k): csv_text(v) if isinstance(v, str) else v
             for k, v in row.items()} for row in rows]


# ----------------------------------------------------------------------------------------------
# YAML files the user writes


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (PyYAML silently keeps
    the last, so a setting written twice would take a value its reader did not see): a
    MarkedYAMLError at the second one. Merges (`<<: *base`) may still override."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first + 1}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)
