"""`drmm label`: move the images a person labeled in a `drmm suggest` CSV into the folder's
labeled/ tree, so that the next `drmm train --dataset folder:DIR` trains on their labels.

    drmm suggest --checkpoint runs/photos --n 50 --out to_label.csv   # + to_label.png / .html
    (fill the CSV's label column in any spreadsheet; an empty label skips that image)
    drmm label to_label.csv --folder photos

Each row's `image` is a path relative to DIR, under DIR/unlabeled/ (as suggest writes it for a
folder:DIR run); the file moves to DIR/labeled/<label>/ with its path under unlabeled/ kept
(files of the same name in different sub-folders stay apart). Every row is checked before any
file moves, and any problem stops the command with one line and nothing moved:

- a label that is no class folder of DIR/labeled/ (a typo, usually) unless --new-class, which
  creates it; a label that cannot be a folder name (a path separator, a leading dot);
- a file that is not where the row says (already moved, renamed, deleted), or not under
  DIR/unlabeled/ (test images must stay out of training), or named by two rows;
- a destination that already exists: nothing is overwritten.

A move that fails midway (a full disk, permissions) puts the files moved so far back. The
CSV may come back from a spreadsheet with a byte-order mark or with semicolons: both are read.
Prints how many images moved into each class.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from drmm.errors import DRMMError
from drmm.files import read_csv, require_dir, require_file


def register(subparsers) -> None:
    p = subparsers.add_parser("label", help="move the images labeled in a suggest CSV into"
                              " DIR/labeled/<label>/", description=__doc__.splitlines()[0])
    p.add_argument("csv", help="the CSV of drmm suggest, its label column filled")
    p.add_argument("--folder", required=True, help="DIR of the folder:DIR run it suggested for")
    p.add_argument("--new-class", action="store_true",
                   help="create a class folder for a label DIR/labeled/ does not have yet")
    p.set_defaults(func=cmd_label)


@dataclass(frozen=True)
class Move:
    row: int  # the CSV row (1: the first after the header), as the contact sheet numbers it
    source: Path
    target: Path
    label: str


def read_rows(path: Path) -> list[dict]:
    """The CSV's rows as dicts (drmm.files.read_csv: as suggest wrote it, or as a spreadsheet
    saved it back); needs `image` and `label` columns."""
    rows = read_csv(path)
    columns = set(rows[0]) if rows else set()
    if not {"image", "label"} <= columns:
        raise DRMMError(f"{path} has no image and label columns (it has {sorted(columns)});"
                        " pass the CSV drmm suggest wrote, with its label column filled")
    return rows


def check_label(label: str, row: int) -> None:
    """A label must be usable as one folder name that the folder loader reads."""
    bad = (label in (".", "..") or label.startswith(".") or "/" in label or "\\" in label
           or "\0" in label or label != label.strip())
    if bad:
        raise DRMMError(f"row {row}: label {label!r} cannot be a class folder name (no path"
                        " separators, no leading dot or spaces); fix it in the CSV")


def plan_moves(rows: list[dict], folder: Path, new_class: bool) -> tuple[list[Move], int]:
    """Every move the labeled rows ask for, all checked; and how many rows had no label."""
    unlabeled, labeled = folder / "unlabeled", folder / "labeled"
    classes = {p.name for p in labeled.iterdir() if p.is_dir() and not p.name.startswith(".")}
    moves, skipped, seen = [], 0, {}
    for row, r in enumerate(rows, start=1):
        label = (r.get("label") or "").strip()
        if not label:
            skipped += 1
            continue
        check_label(label, row)
        if label not in classes and not new_class:
            raise DRMMError(f"row {row}: class {label!r} is not a folder of {labeled} (it has"
                            f" {', '.join(sorted(classes)) or 'none'}); fix the label, or pass"
                            " --new-class to create it")
        source = folder / (r.get("image") or "")
        inside = os.path.abspath(source).startswith(os.path.abspath(unlabeled) + os.sep)
        if not inside:
            raise DRMMError(f"row {row}: {r.get('image')!r} is not a file under {unlabeled}/;"
                            " drmm label moves the unlabeled files a folder:DIR run suggested"
                            " (a built-in data set: train with --labeled-indices to_label.npy)")
        if not source.is_file():
            raise DRMMError(f"row {row}: {source} does not exist (moved or renamed since"
                            f" drmm suggest?); {where_now(source, labeled)}nothing was moved")
        key = os.path.abspath(source)
        if key in seen:
            raise DRMMError(f"rows {seen[key]} and {row} both name {source}; keep one, nothing"
                            " was moved")
        seen[key] = row
        target = labeled / label / source.relative_to(unlabeled)
        if target.exists():
            raise DRMMError(f"row {row}: {target} already exists and is not overwritten; rename"
                            f" {source}, nothing was moved")
        moves.append(Move(row, source, target, label))
    return moves, skipped


def where_now(source: Path, labeled: Path) -> str:
    """ "it is in DIR/labeled/c/ now; " where a file of that name was moved there already."""
    found = sorted(labeled.glob(f"*/**/{glob.escape(source.name)}"))
    return f"a file of that name is in {found[0].parent} now; " if found else ""


def move_all(moves: list[Move]) -> None:
    """Move every file; if one fails, put back those already moved, then say which failed."""
    done: list[Move] = []
    made: list[Path] = []
    try:
        for m in moves:
            missing = [p for p in [m.target.parent, *m.target.parent.parents]
                       if not p.exists()]
            m.target.parent.mkdir(parents=True, exist_ok=True)
            made += reversed(missing)
            os.rename(m.source, m.target)
            done.append(m)
    except OSError as e:
        for m in reversed(done):
            os.rename(m.target, m.source)
        for p in reversed(made):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        failed = moves[len(done)]
        raise DRMMError(f"cannot move {failed.source} to {failed.target} ({e.strerror or e});"
                        " the files moved before it were put back: nothing was moved") from e


def cmd_label(args) -> int:
    path = require_file(args.csv, "CSV", "pass the to_label.csv that drmm suggest wrote")
    folder = require_dir(args.folder, "--folder", "pass DIR of the folder:DIR run")
    require_dir(folder / "labeled", "folder", "pass DIR of a folder:DIR run (DIR/labeled/"
                "<class name>/ holds its labeled images)")
    moves, skipped = plan_moves(read_rows(path), folder, args.new_class)
    existing = {p.name for p in (folder / "labeled").iterdir() if p.is_dir()}
    move_all(moves)
    per_class = Counter(m.label for m in moves)
    new = sorted(set(per_class) - existing)
    summary = ", ".join(f"{c}: {n}" for c, n in sorted(per_class.items()))
    print(f"moved {len(moves)} images into {folder / 'labeled'}"
          + (f" ({summary})" if moves else "")
          + (f"; new classes: {', '.join(new)}" if new else "")
          + (f"; {skipped} rows without a label left in place" if skipped else "")
          + (f"; train again: drmm train --dataset folder:{folder} --out RUN" if moves else ""))
    return 0
