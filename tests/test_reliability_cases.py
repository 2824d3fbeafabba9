"""A run folder belongs to one run, checkpoints are checked, every name and CSV cell is safe
(docs/reliability.md): each test runs a command a hostile but realistic user would, as the
reliability table lists it, and checks what it prints, its exit code and that nothing was lost.
The random corruptions of folders and checkpoints are in test_reliability_props.py.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error, tiny_train, write_npz, write_yaml
from PIL import Image

import drmm
from drmm.checkpoint import ID_KEY
from drmm.cli import main
from drmm.errors import DRMMError
from drmm.files import csv_cell, csv_text, read_csv
from drmm.run_folder import LOCK, RunLock, one_run_per_folder

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under folder: its bytes and mode, by relative path (bytes: names that are
    not UTF-8 too)."""
    out = {}
    for dirpath, _, files in os.walk(os.fsencode(folder)):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, os.fsencode(folder))] = (f.read(),
                                                                   os.stat(path).st_mode)
    return out


def npz_run(tmp_path: Path, name: str, *extra: str) -> Path:
    """A 1-epoch run of conv_tiny on the tiny npz data set (8 x 8 images, 4 classes)."""
    npz = tmp_path / "d.npz"
    dataset = write_npz(npz) if not npz.exists() else f"npz:{npz}"
    out = tmp_path / name
    assert main(tiny_train(dataset, out, write_yaml(tmp_path), "--labels", "8", "--epochs", "1",
                           *extra)) == 0
    return out


def drmm_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "drmm", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("drmm: error:")]


# ---------------------------------------------------------------------------------------------
# 1-3. One run per folder


def test_1_second_run_into_a_training_folder_is_refused_naming_the_pid(tmp_path, capsys):
    """drmm train --dataset digits --epochs 2 --seed 1 --out D & sleep 3;
    drmm train --dataset digits --epochs 3 --seed 2 --out D"""
    d = tmp_path / "D"
    first = drmm_process("train", "--dataset", "digits", "--epochs", "1", "--seed", "1",
                         "--out", str(d), "--quiet")
    deadline = time.monotonic() + 120
    while not ((d / LOCK).is_file() and (d / LOCK).read_text().strip()):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--seed", "2", "--out",
                 str(d), "--quiet"]) == 2
    msg = one_line_error(capsys)
    assert f"is in use by another drmm run (pid {first.pid})" in msg
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((d / "config.json").read_text())["train"]["seed"] == 1
    assert not (d / LOCK).exists()  # the run's end removes its lock file


def test_1_two_runs_started_at_the_same_moment(tmp_path):
    """Started at the same moment, one trains and the other is refused in one line (by the lock,
    or, if the first ended before the second looked, by its checkpoint); never a mix."""
    d = tmp_path / "D"
    runs = [drmm_process("train", "--dataset", "digits", "--epochs", "1", "--seed", str(s),
                         "--out", str(d), "--quiet") for s in (1, 2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in runs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    seed = next(s for s, (rc, _) in zip((1, 2), results, strict=True) if rc == 0)
    loser = next(err for rc, err in results if rc == 2)
    assert "Traceback" not in loser and len(error_lines(loser)) == 1, loser
    assert "in use by another drmm run (pid" in loser or "already holds a run" in loser
    assert json.loads((d / "config.json").read_text())["train"]["seed"] == seed
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 1


def test_2_out_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    """mkdir P; echo mine > P/config.json; drmm train --dataset digits --epochs 1 --out P"""
    p = tmp_path / "P"
    p.mkdir()
    (p / "config.json").write_text("mine\n")
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(p)]) == 2
    assert "is not empty and not a drmm run folder (it holds config.json)" in one_line_error(
        capsys)
    assert snapshot(p) == {b"config.json": (b"mine\n", (p / "config.json").stat().st_mode)}


def test_2_folders_a_fresh_run_may_take(tmp_path):
    """An empty folder, a run's own folder that crashed before its first checkpoint, and a
    folder `drmm reproduce` prepared (run_info.json) are taken."""
    run = npz_run(tmp_path, "run")
    (run / "checkpoint.pt").unlink()  # as if it crashed before its first checkpoint
    assert main(tiny_train(f"npz:{tmp_path / 'd.npz'}", run, write_yaml(tmp_path), "--labels",
                           "8", "--epochs", "1")) == 0
    (tmp_path / "empty").mkdir()
    npz_run(tmp_path, "empty")
    (tmp_path / "planned").mkdir()
    (tmp_path / "planned" / "run_info.json").write_text("{}")
    npz_run(tmp_path, "planned")


def test_3_checkpoint_copied_into_another_runs_folder(tmp_path, capsys):
    """cp d1/checkpoint.pt other/; drmm train --resume other"""
    d1, other = npz_run(tmp_path, "d1"), npz_run(tmp_path, "other")
    shutil.copy(d1 / "checkpoint.pt", other / "checkpoint.pt")
    before = snapshot(other)
    assert main(["train", "--resume", str(other)]) == 2
    msg = one_line_error(capsys)
    ids = [json.loads((r / "config.json").read_text())[ID_KEY] for r in (d1, other)]
    assert f"belongs to run {ids[0]}, but {other} holds run {ids[1]}" in msg
    assert snapshot(other) == before


def test_run_id_in_config_and_every_checkpoint_and_adopted_by_old_runs(tmp_path, capsys):
    run = npz_run(tmp_path, "run", "--checkpoint-every", "2")
    rid = json.loads((run / "config.json").read_text())[ID_KEY]
    assert torch.load(run / "checkpoint.pt", weights_only=True)[ID_KEY] == rid
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)[ID_KEY] == rid
    # a run of a version without ids: accepted, and it takes one
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state[ID_KEY]
    torch.save(state, run / "checkpoint.pt")
    config = json.loads((run / "config.json").read_text())
    del config[ID_KEY]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    new = json.loads((run / "config.json").read_text())[ID_KEY]
    assert torch.load(run / "checkpoint.pt", weights_only=True)[ID_KEY] == new != rid


def test_lock_is_released_and_a_refused_run_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["train", "--dataset", f"npz:{tmp_path / 'none.npz'}", "--out", str(out)]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "new").exists()  # the folders the lock made are gone again
    held = RunLock(tmp_path / "held")
    held.acquire()
    try:
        assert main(["train", "--dataset", "digits", "--out", str(tmp_path / "held")]) == 2
        assert f"(pid {os.getpid()})" in one_line_error(capsys)
    finally:
        held.release()
    assert not (tmp_path / "held").exists()


def test_under_torchrun_only_rank_0_locks(tmp_path, monkeypatch):
    calls = []
    locked = one_run_per_folder(lambda cfg, out_dir: calls.append(out_dir))
    held = RunLock(tmp_path / "run")
    held.acquire()
    try:
        monkeypatch.setenv("RANK", "1")
        locked(None, tmp_path / "run")  # the other ranks write nothing: no lock
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(DRMMError, match="in use by another drmm run"):
            locked(None, tmp_path / "run")
    finally:
        held.release()
    assert calls == [tmp_path / "run"]


# ---------------------------------------------------------------------------------------------
# 4-5. Other commands never write over a run; checkpoints are checked


def test_4_suggest_never_writes_over_a_runs_files(tmp_path, capsys):
    """drmm suggest --checkpoint RUN --out RUN/labeled_indices.csv"""
    run = npz_run(tmp_path, "run")
    before = snapshot(run)
    assert main(["suggest", "--checkpoint", str(run), "--out",
                 str(run / "labeled_indices.csv")]) == 2
    assert "is a file of the drmm run" in one_line_error(capsys)
    assert snapshot(run) == before


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRMM_CACHE", str(tmp / "cache"))
        return npz_run(tmp, "run", "--preprocess", "standardize")


def with_nan(state):
    key = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][key] = state["model"][key] * float("nan")


CORRUPTIONS = {  # what a checkpoint that loads under weights_only may hold: field -> wrong value
    "config a string": lambda s: s.update(config="x"),
    "model a list": lambda s: s.update(model=[1, 2]),
    "class_names 5": lambda s: s.update(class_names=5),
    "novelty scales not numbers": lambda s: s.update(novelty_scales={"render": "x"}),
    "epoch 'x'": lambda s: s.update(epoch="x"),
    "history 7": lambda s: s.update(history=7),
    "a record without test_error": lambda s: s["history"][0].pop("test_error"),
    "unlabeled -1": lambda s: s["config"]["train"].update(unlabeled=-1),
    "NaN weights": with_nan,
}
EXPECTED = {"config a string": "config is 'x' (a str), expected a mapping of settings",
            "model a list": "model is a list of 2 items (int), expected the network's weights",
            "class_names 5": "class_names is 5, expected a list of 4 names",
            "novelty scales not numbers": "novelty_scales is a dict of 1 item (str), expected",
            "epoch 'x'": "epoch is 'x' (a str), expected a count",
            "history 7": "history is 7, expected a list of epoch records",
            "a record without test_error": "history[0] is a dict of",
            "unlabeled -1": "its config is not one drmm trains with (unlabeled -1: need a",
            "NaN weights": "expected finite floating-point weights"}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_5_checkpoints_holding_the_wrong_things(good_run, tmp_path, capsys, name):
    """predict, eval, suggest and train --resume on a checkpoint that loads under weights_only
    but holds a wrong value: one line naming the field, exit 2, nothing written."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    CORRUPTIONS[name](state)
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(run)
    npz = json.loads((run / "config.json").read_text())["train"]["dataset"][4:]
    commands = {
        "predict": ["predict", "--checkpoint", str(run), "--images", npz, "--out",
                    str(tmp_path / "p.csv")],
        "eval": ["eval", "--checkpoint", str(run)],
        "suggest": ["suggest", "--checkpoint", str(run), "--out", str(tmp_path / "s.csv")],
        "resume": ["train", "--resume", str(run), "--epochs", "2"],
    }
    training_only = name in ("epoch 'x'", "a record without test_error")  # eval, predict: unread
    for command, argv in commands.items():
        rc = main(argv)
        if training_only and command != "resume":
            assert rc == 0, command
            capsys.readouterr()
            continue
        assert rc == 2, command
        assert EXPECTED[name] in one_line_error(capsys), command
    assert snapshot(run) == before
    assert not (tmp_path / "s.csv").exists() or training_only


def test_5_nan_weights_never_become_predictions_in_export(good_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    state = torch.load(good_run / "checkpoint.pt", weights_only=True)
    with_nan(state)
    torch.save(state, tmp_path / "nan.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "nan.pt"), "--out",
                 str(tmp_path / "m.onnx")]) == 2
    assert "NaN or infinite weights" in one_line_error(capsys)
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------------------------
# 6-9. Names, cells, sizes, tiny folders


def folder_with(root: Path, names: dict[bytes, list[bytes]], size=(8, 8)) -> Path:
    """A folder data set: labeled/<class>/<file> for {class: [file names]} (as bytes: names
    need not be UTF-8), each image a gray noise of `size` (width, height), a level per class,
    plus 4 unlabeled images."""
    rng = np.random.default_rng(0)
    for c, (cls, files) in enumerate(names.items()):
        folder = os.path.join(os.fsencode(root / "labeled"), cls)
        os.makedirs(folder, exist_ok=True)
        for name in files:
            x = rng.integers(0, 60, size[::-1], dtype=np.uint8) + np.uint8(100 * c)
            Image.fromarray(x).save(os.path.join(folder, name), format="PNG")
    (root / "unlabeled").mkdir(parents=True)
    for i in range(4):
        x = rng.integers(0, 160, size[::-1], dtype=np.uint8)
        Image.fromarray(x).save(root / "unlabeled" / f"u{i}.png")
    return root


def small_folder_train(root: Path, out: Path, yaml: str) -> list[str]:
    return ["train", "--dataset", f"folder:{root}", "--arch", "conv_tiny", "--batch-size", "4",
            "--labeled-batch", "2", "--epochs", "1", "--config", yaml, "--out", str(out),
            "--quiet"]


def test_6_formula_names_and_classes_are_written_as_text(tmp_path, capsys, monkeypatch):
    """A file `=cmd|' -C calc'!A0.png` and classes `=1+1`, `@cat`: predictions.csv and
    to_label.csv begin those cells with a "'" (OWASP), and give the names back when read."""
    evil = "=cmd|' -C calc'!A0.png"
    root = folder_with(tmp_path / "f", {b"=1+1": [evil.encode(), b"b.png"],
                                        b"@cat": [b"-c.png", b"+d.png"]})
    run = tmp_path / "run"
    assert main(small_folder_train(root, run, write_yaml(tmp_path))) == 0
    preds, sugg = tmp_path / "predictions.csv", tmp_path / "to_label.csv"
    monkeypatch.chdir(root / "labeled" / "=1+1")  # rows named as the user names the files
    assert main(["predict", "--checkpoint", str(run), "--images", ".", "--out",
                 str(preds)]) == 0
    assert main(["suggest", "--checkpoint", str(run), "--n", "2", "--out", str(sugg)]) == 0
    raw = list(csv.reader(open(preds, newline="", encoding="utf-8")))
    assert raw[0][3:5] == ["p_=1+1", "p_@cat"]  # header cells begin with p_: no formula
    assert sorted(row[0] for row in raw[1:]) == ["'" + evil, "b.png"]
    assert all(row[1] in ("'=1+1", "'@cat") for row in raw[1:])
    assert sorted(r["image"] for r in read_csv(preds)) == [evil, "b.png"]
    assert {r["predicted"] for r in read_csv(preds)} <= {"=1+1", "@cat"}
    suggested = list(csv.reader(open(sugg, newline="", encoding="utf-8")))[1:]
    assert len(suggested) == 2 and all(row[1] in ("'=1+1", "'@cat") for row in suggested)
    assert {r["predicted"] for r in read_csv(sugg)} <= {"=1+1", "@cat"}


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@x", "\tx", "\rx", "'=x", "'", "a=b", ""])
def test_csv_cells_round_trip(text):
    cell = csv_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert csv_text(cell) == text


def test_7_file_names_that_are_not_utf8(tmp_path, capsys):
    """caf\\xe9.png (Latin-1, as old zip and Windows archives hold it): trained on, cached, and
    predicted, its name round-tripping through predictions.csv to the same file."""
    root = folder_with(tmp_path / "f", {b"a": [b"caf\xe9.png", b"b.png"],
                                        b"b\xff": [b"c.png", b"d.png"]})
    run = tmp_path / "run"
    yaml = write_yaml(tmp_path)
    assert main(small_folder_train(root, run, yaml)) == 0
    shutil.rmtree(run)
    assert main(small_folder_train(root, run, yaml)) == 0  # from the cache
    preds = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(run), "--images", str(root), "--out",
                 str(preds)]) == 0
    assert b"caf\xe9.png" in preds.read_bytes()  # the name's own bytes
    names = [r["image"] for r in read_csv(preds)]
    assert any(os.fsencode(n).endswith(b"/caf\xe9.png") for n in names)
    assert all(Path(n).is_file() for n in names)
    assert {r["predicted"] for r in read_csv(preds)} <= {"a", os.fsdecode(b"b\xff")}


@pytest.mark.parametrize("batch", ["256", "1"])
def test_8_predict_on_images_of_mixed_sizes(tmp_path, capsys, batch):
    """drmm predict on a folder of 8x8 images and one 12x10 image, without --image-size: one
    line naming the odd file, whether it shares its batch or is alone in it."""
    root = folder_with(tmp_path / "f", {b"a": [b"a1.png", b"a2.png"], b"b": [b"b1.png",
                                                                            b"b2.png"]})
    run = tmp_path / "run"
    assert main(small_folder_train(root, run, write_yaml(tmp_path))) == 0
    new = tmp_path / "new"
    new.mkdir()
    Image.new("L", (8, 8)).save(new / "a.png")
    Image.new("L", (12, 10)).save(new / "odd.png")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--images", str(new), "--out",
                 str(tmp_path / "p.csv"), "--batch-size", batch, "--quiet"]) == 2
    msg = one_line_error(capsys)
    assert f"{new / 'odd.png'} is 12x10 (width x height), the model takes 8x8" in msg
    assert "--image-size" in msg and not (tmp_path / "p.csv").exists()


def test_8_python_api_on_images_of_mixed_sizes(good_run):
    predictor = drmm.load(good_run)
    with pytest.raises(DRMMError, match=r"image 0 is 8x8, image 1 is 12x10"):
        predictor.predict([Image.new("L", (8, 8)), Image.new("L", (12, 10))])


def test_9_a_folder_of_ten_or_fewer_training_images(tmp_path, capsys):
    """8 training images: the graph prior (on in the grayscale folder preset) takes 7
    neighbours, not 10, and the run trains."""
    root = folder_with(tmp_path / "f", {b"a": [b"a1.png", b"a2.png"], b"b": [b"b1.png",
                                                                            b"b2.png"]})
    run = tmp_path / "run"
    assert main(small_folder_train(root, run, write_yaml(tmp_path))) == 0
    assert "over a 7-nearest-neighbour graph" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["train"]["graph_prior"] > 0


# ---------------------------------------------------------------------------------------------
# Smaller


def test_bad_choice_is_one_line(capsys):
    """drmm train --arch resnet: one line, not argparse's usage."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--arch", "resnet"])
    assert e.value.code == 2
    msg = one_line_error(capsys)
    assert msg.startswith("drmm: error: argument --arch: invalid choice: 'resnet'")
    assert msg.endswith("see drmm train --help")


def test_non_square_folder_says_width_x_height_and_image_size(tmp_path, capsys):
    root = folder_with(tmp_path / "f", {b"a": [b"a.png"], b"b": [b"b.png"]}, size=(12, 8))
    assert main(small_folder_train(root, tmp_path / "run", write_yaml(tmp_path))) == 2
    msg = one_line_error(capsys)
    assert "images are 12x8 (width x height)" in msg and "--image-size S" in msg
    assert not (tmp_path / "run").exists()


def test_resume_takes_the_checkpoint_file_too(tmp_path, capsys):
    run = npz_run(tmp_path, "d1")
    assert main(["train", "--resume", str(run / "checkpoint.pt"), "--epochs", "2",
                 "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "config.json")]) == 2
    assert "is a file; pass the run folder" in one_line_error(capsys)


def test_predict_on_an_empty_npz_is_an_error(good_run, tmp_path, capsys):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), np.uint8))
    assert main(["predict", "--checkpoint", str(good_run), "--images",
                 str(tmp_path / "empty.npz"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "holds no images" in one_line_error(capsys)
    assert not (tmp_path / "p.csv").exists()


def test_labeled_indices_of_one_class_warn(tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.array([0, 4, 8, 12]))  # tiny_arrays: class = index % 4
    assert main(["train", "--dataset", write_npz(tmp_path / "d.npz"), "--arch", "conv_tiny",
                 "--labeled-indices", str(tmp_path / "one.npy"), "--batch-size", "20",
                 "--epochs", "1", "--config", write_yaml(tmp_path), "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert ("drmm: warning: --labeled-indices names images of 1 of the 4 classes; 3 (1, 2, 3)"
            " have no labeled image") in err


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("train:\n  lr: 0.1\n  epochs: 1\n  lr: 0.5\n")
    assert main(["train", "--config", str(yaml), "--out", str(tmp_path / "run")]) == 2
    msg = one_line_error(capsys)
    assert "line 4, column 3" in msg and "duplicate key 'lr' (first on line 2)" in msg
