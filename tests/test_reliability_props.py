"""Property-based fault injection (Hypothesis; docs/reliability.md): random corruptions of an
image folder (file sizes, modes, names, bytes) and of a checkpoint (any field replaced by a value
of a wrong type or a wrong value) end in a finished run or in one line and exit code 2, never a
traceback, and never change a file the user had.

The commands run in-process, on tiny folders (8 images of 8 x 8 pixels) and a tiny run, a few
dozen examples per property: a minute of CI together. A failure prints the example that
reproduces it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_train, write_npz, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from drmm.cli import main
from drmm.files import read_csv
from drmm.run_folder import LOCK

EXAMPLES = {"folder": 40, "checkpoint": 150}  # per property; the whole file: under a minute
# The suite draws the same examples on every run (derandomize), so that a red test is a change
# in the code, never a lucky draw. DRMM_EXPLORE=N draws N times as many fresh random examples,
# to look further: `DRMM_EXPLORE=20 python -m pytest tests/test_reliability_props.py`.
EXPLORE = int(os.environ.get("DRMM_EXPLORE", "0"))
# No deadline (a first call imports and compiles), no example database written into the
# repository.
PROPERTY = settings(deadline=None, database=None, derandomize=not EXPLORE,
                    suppress_health_check=[HealthCheck.too_slow])
CLASSES = (b"a", b"b")
SIZE = 8  # pixels, every image of the clean folder
TIMES: dict[str, list[float]] = {}  # seconds per example, per property (printed at the end)
OUTCOMES: dict[str, list[str]] = {}  # per property: each command's result (printed at the end)


@pytest.fixture(scope="module", autouse=True)
def _print_examples():
    """After the module: how many examples each property ran, how long, and their outcomes."""
    yield
    for name, seconds in TIMES.items():
        print(f"\n{name}: {len(seconds)} examples, {sum(seconds):.1f} s")
        for outcome in sorted(set(OUTCOMES[name]), key=OUTCOMES[name].count, reverse=True):
            print(f"  {OUTCOMES[name].count(outcome):4d} x {outcome}")


def run(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of a drmm command run in-process; a traceback fails the test."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, err.getvalue()


def outcome(rc: int, err: str) -> str:
    """A command's result in a few words: exit 0, or its error line's start."""
    lines = [line for line in err.splitlines() if line.startswith("drmm: error:")]
    if rc == 0 or not lines:
        return f"exit {rc}"
    words = [w for w in lines[0].split()[2:] if os.sep not in w]  # paths differ per example
    return " ".join(words[:7])


def assert_finished_or_one_line(rc: int, err: str) -> None:
    assert rc in (0, 2), (rc, err)
    lines = [line for line in err.splitlines() if line.startswith("drmm: error:")]
    if rc == 2:
        others = [line for line in err.splitlines()
                  if not line.startswith(("drmm: warning", "drmm: note", "drmm: resuming",
                                          "drmm: graph prior", "epoch "))]
        assert len(lines) == 1 and others == lines, err
    else:
        assert not lines, err


def snapshot(folder: Path) -> dict[bytes, tuple[bytes | None, int]]:
    """Every entry under folder by relative path (bytes): a file's bytes (None if unreadable),
    and its mode (a folder's and a link's too)."""
    out = {}
    root = os.fsencode(folder)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            content = None
            if os.path.isfile(path) and not os.path.islink(path):
                try:
                    with open(path, "rb") as f:
                        content = f.read()
                except OSError:
                    pass
            out[os.path.relpath(path, root)] = (content, os.lstat(path).st_mode)
    return out


# ---------------------------------------------------------------------------------------------
# Folders


def clean_folder(root: Path) -> None:
    """2 classes x 2 labeled images, 4 unlabeled, 1 test image per class: 8 x 8 gray PNGs."""
    rng = np.random.default_rng(0)
    for split, per_class in (("labeled", 2), ("test", 1)):
        for c, cls in enumerate(CLASSES):
            folder = root / split / cls.decode()
            folder.mkdir(parents=True)
            for i in range(per_class):
                x = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8) + np.uint8(120 * c)
                Image.fromarray(x).save(folder / f"{i}.png")
    (root / "unlabeled").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 180, (SIZE, SIZE), dtype=np.uint8)).save(
            root / "unlabeled" / f"u{i}.png")


NAMES = st.sampled_from([b"caf\xe9.png", b"=cmd|' -C calc'!A0.png", b"+1.png", b"-1.png",
                         b"@x.png", b"\tt.png", b"a b.png", "\u00fc\u4e2d.png".encode(),
                         b"UP.PNG", b"noext", b"x.txt", b".hidden.png", b"new\nline.png",
                         b"x" * 200 + b".png", b"'q.png", b"\xff\xfe.jpg"])
MODES = st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
FORMATS = st.sampled_from([("JPEG", b".jpg"), ("GIF", b".gif"), ("BMP", b".bmp"),
                           ("TIFF", b".tif"), ("PNG", b".png")])
CORRUPTIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("rename"), NAMES),
    st.tuples(st.just("resize"), st.integers(1, 20), st.integers(1, 20)),
    st.tuples(st.just("mode"), MODES),
    st.tuples(st.just("format"), FORMATS),
    st.tuples(st.just("chmod"), st.sampled_from([0o000, 0o200, 0o444, 0o777])),
    st.tuples(st.just("remove")),
    st.tuples(st.just("empty class"), st.sampled_from(CLASSES)),
    st.tuples(st.just("chmod folder"), st.sampled_from([0o000, 0o500])),
    st.tuples(st.just("class named"), NAMES),
    st.tuples(st.just("folder named like an image")),
    st.tuples(st.just("broken link")),
    st.tuples(st.just("stray file in labeled/")),
    st.tuples(st.just("test class unknown")),
)


def corrupt(root: Path, change: tuple, pick: int) -> None:
    """Apply one corruption to the folder, to its pick-th image file (in sorted order)."""
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())
    path = files[pick % len(files)] if files else None
    kind = change[0]
    if path is None and kind in ("truncate", "bytes", "flip", "rename", "resize", "mode",
                                 "format", "chmod", "remove"):
        return
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:int(change[1] * len(data))])
    elif kind == "bytes":
        path.write_bytes(change[1])
    elif kind == "flip":
        data = bytearray(path.read_bytes())
        if data:
            data[int(change[1] * (len(data) - 1))] = change[2]
            path.write_bytes(bytes(data))
    elif kind == "rename":
        os.rename(os.fsencode(path), os.path.join(os.fsencode(path.parent), change[1]))
    elif kind in ("resize", "mode", "format"):
        img = Image.new("L", (change[1], change[2]) if kind == "resize" else (SIZE, SIZE), 90)
        if kind == "mode":
            img = img.convert(change[1])
        fmt, suffix = change[1] if kind == "format" else ("PNG", b".png")
        path.unlink()
        target = os.fsencode(path.with_suffix("")) + suffix
        img.convert("RGB" if fmt == "JPEG" else img.mode).save(os.fsdecode(target), format=fmt)
    elif kind == "chmod":
        path.chmod(change[1])
    elif kind == "remove":
        path.unlink()
    elif kind == "empty class":
        shutil.rmtree(root / "labeled" / change[1].decode())
        (root / "labeled" / change[1].decode()).mkdir()
    elif kind == "chmod folder":
        (root / "unlabeled").chmod(change[1])
    elif kind == "class named":
        os.rename(os.fsencode(root / "labeled" / "b"),
                  os.path.join(os.fsencode(root / "labeled"), change[1]))
    elif kind == "folder named like an image":
        (root / "labeled" / "a" / "dir.png").mkdir(parents=True, exist_ok=True)
    elif kind == "broken link":
        link = root / "labeled" / "a" / "link.png"
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root / "nowhere.png")
    elif kind == "stray file in labeled/":
        (root / "labeled").mkdir(parents=True, exist_ok=True)
        Image.new("L", (SIZE, SIZE)).save(root / "labeled" / "stray.png")
    elif kind == "test class unknown":
        (root / "test" / "zzz").mkdir(parents=True, exist_ok=True)
        Image.new("L", (SIZE, SIZE)).save(root / "test" / "zzz" / "z.png")


def restore_modes(root: Path) -> None:
    """Make every entry readable and writable again, so that the folder can be deleted."""
    for dirpath, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
    os.chmod(root, stat.S_IRWXU)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    """A run trained on the clean folder, for predict on corrupted ones."""
    tmp = tmp_path_factory.mktemp("clean")
    clean_folder(tmp / "f")
    out = tmp / "run"
    rc, err = run(small_train(tmp / "f", out, write_yaml(tmp)))
    assert rc == 0, err
    return out


def small_train(root: Path, out: Path, yaml: str) -> list[str]:
    return ["train", "--dataset", f"folder:{root}", "--arch", "conv_tiny", "--batch-size", "4",
            "--labeled-batch", "2", "--epochs", "1", "--config", yaml, "--out", str(out),
            "--quiet"]


@settings(PROPERTY, max_examples=EXAMPLES["folder"] * max(EXPLORE, 1))
@given(changes=st.lists(st.tuples(CORRUPTIONS, st.integers(0, 100)), min_size=1, max_size=3))
def test_corrupted_folders_train_or_give_one_line(clean_run, changes):
    """drmm train and drmm predict on a corrupted folder: a finished run (or CSV) or one line
    and exit 2, nothing written then; the folder's files untouched either way."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "f"
        clean_folder(root)
        for change, pick in changes:
            with contextlib.suppress(OSError):  # one that cannot apply (its file gone): none
                corrupt(root, change, pick)
        before = snapshot(root)
        try:
            out = tmp / "run"
            rc, err = run(small_train(root, out, write_yaml(tmp)))
            OUTCOMES.setdefault("folders", []).append("train: " + outcome(rc, err))
            assert_finished_or_one_line(rc, err)
            assert (out / "checkpoint.pt").is_file() if rc == 0 else not out.exists(), err
            assert not (out / LOCK).exists()
            csv_path = tmp / "p.csv"
            rc, err = run(["predict", "--checkpoint", str(clean_run), "--images", str(root),
                           "--out", str(csv_path), "--quiet"])
            OUTCOMES.setdefault("folders", []).append("predict: " + outcome(rc, err))
            assert_finished_or_one_line(rc, err)
            if rc == 0:  # every row names a file that opens, as the file system spells it
                assert all(Path(r["image"]).is_file() for r in read_csv(csv_path))
            else:
                assert not csv_path.exists()
            assert snapshot(root) == before
        finally:
            restore_modes(tmp)
    TIMES.setdefault("folders", []).append(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A 1-epoch Adam run (its optimiser keeps per-parameter state) on the tiny npz data, with
    standardized inputs (stored statistics)."""
    tmp = tmp_path_factory.mktemp("good")
    out = tmp / "run"
    rc, err = run(tiny_train(write_npz(tmp / "d.npz"), out, write_yaml(tmp), "--labels", "8",
                             "--epochs", "1", "--optimizer", "adam", "--lr", "0.01",
                             "--lr-final", "0.001", "--preprocess", "standardize"))
    assert rc == 0, err
    return out


def field_paths(state: dict) -> list[tuple]:
    """Every field a corruption may replace: each top-level key, and the nested ones that the
    commands read."""
    model = sorted(state["model"])
    return [(k,) for k in sorted(state)] + [
        ("config", "version"), ("config", "model"), ("config", "model", "num_classes"),
        ("config", "model", "arch"), ("config", "model", "image_size"),
        ("config", "model", "in_channels"), ("config", "train"),
        ("config", "train", "preprocess"), ("config", "train", "dataset"),
        ("config", "train", "image_size"), ("config", "train", "batch_size"),
        ("config", "train", "unlabeled"), ("config", "loss", "alpha_kl"),
        ("model", model[0]), ("model", model[-1]), ("model", model[len(model) // 2]),
        ("optimizer", "state"), ("optimizer", "param_groups"), ("optimizer", "state", 0),
        ("optimizer", "state", 0, "exp_avg"), ("optimizer", "state", 0, "step"),
        ("optimizer", "param_groups", 0), ("optimizer", "param_groups", 0, "lr"),
        ("optimizer", "param_groups", 0, "betas"), ("optimizer", "param_groups", 0, "params"),
        ("scheduler", "last_epoch"), ("scheduler", "gamma"), ("scheduler", "base_lrs"),
        ("rng", "torch"), ("rng", "numpy"), ("rng", "python"), ("history", 0),
        ("history", 0, "test_error"), ("history", 0, "wall_seconds"), ("class_names", 0),
        ("preprocess", "mode"), ("preprocess", "mean"), ("preprocess", "std"),
        ("novelty_scales", "render"), ("sums",), ("labeled_indices",)]


DELETE = object()  # a corruption that removes the field
TENSORS = {"empty": lambda: torch.zeros(0), "nan": lambda: torch.full((3,), float("nan")),
           "int": lambda: torch.zeros(2, 2, dtype=torch.int64),
           "bytes": lambda: torch.zeros(5056, dtype=torch.uint8),
           "scalar": lambda: torch.tensor(2.0)}
WRONG = st.one_of(
    st.just(DELETE), st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
    st.text(max_size=4), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(-1, 1), max_size=2),
    st.sampled_from(sorted(TENSORS)).map(lambda k: TENSORS[k]()))


def replace(state: dict, path: tuple, value) -> None:
    """state with the field at path replaced by value (or removed); missing paths change nothing."""
    parent = state
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return
    key = path[-1]
    if isinstance(parent, (list, tuple)) and not (isinstance(key, int) and key < len(parent)):
        return
    if isinstance(parent, tuple):  # Adam's betas: rebuild the tuple in its own parent
        return
    if value is DELETE:
        if isinstance(parent, dict):
            parent.pop(key, None)
        return
    parent[key] = value


COMMANDS = ("eval", "predict", "suggest", "resume")


@settings(PROPERTY, max_examples=EXAMPLES["checkpoint"] * max(EXPLORE, 1))
@given(data=st.data(), command=st.sampled_from(COMMANDS), value=WRONG)
def test_corrupted_checkpoints_work_or_give_one_line(good_run, data, command, value):
    """eval, predict, suggest and train --resume on a checkpoint with one field replaced: the
    command's result, or one line and exit 2 and every file of the run as it was."""
    started = time.perf_counter()
    state = torch.load(good_run / "checkpoint.pt", weights_only=True)
    path = data.draw(st.sampled_from(field_paths(state)), label="field")
    replace(state, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        shutil.copytree(good_run, run_dir)
        torch.save(state, run_dir / "checkpoint.pt")
        before = snapshot(run_dir)
        npz = str(good_run.parent / "d.npz")
        argv = {"eval": ["eval", "--checkpoint", str(run_dir)],
                "predict": ["predict", "--checkpoint", str(run_dir), "--images", npz, "--out",
                            str(tmp / "p.csv"), "--quiet"],
                "suggest": ["suggest", "--checkpoint", str(run_dir), "--out",
                            str(tmp / "s.csv")],
                "resume": ["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"]}
        rc, err = run(argv[command])
        OUTCOMES.setdefault("checkpoints", []).append(f"{command}: {outcome(rc, err)}")
        assert_finished_or_one_line(rc, err)
        trained = "non-finite" in err  # a run that resumed, then diverged: a training outcome
        if rc == 2 and not trained:
            assert snapshot(run_dir) == before, err
            assert not (tmp / "p.csv").exists() and not (tmp / "s.csv").exists()
    TIMES.setdefault("checkpoints", []).append(time.perf_counter() - started)
