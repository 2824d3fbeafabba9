"""`drmm predict` as people use it: files, folders and npz files together, the CSV on stdout,
labeled folders' true column, error and per-class table; progress bars on terminals only."""

import csv
import io
import shutil

import numpy as np
import pytest
from helpers import CLASSES, one_line_error, tiny_folder_run, write_yaml

import drmm
from drmm.cli import main
from drmm.progress import bar_shown


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A DRMM trained 2 epochs on a tiny folder of PNG files (4 classes, 24 test images)."""
    return tiny_folder_run(tmp_path_factory.mktemp("predict"))


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_files_folders_and_npz_together(folder_run, tmp_path):
    root, arrays, run = folder_run
    one = sorted((root / "unlabeled" / "part0").glob("*.png"))[0]
    np.savez(tmp_path / "new.npz", x=arrays["x_test"][:3])
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(run), "--images", str(one),
                 str(root / "unlabeled" / "part1"), str(tmp_path / "new.npz"), "--out", str(out),
                 "--quiet"]) == 0
    rows = rows_of(out.read_text())
    folder = sorted((root / "unlabeled" / "part1").glob("*.png"))
    assert [r["image"] for r in rows] == [str(one), *map(str, folder),
                                          *[f"{tmp_path / 'new.npz'}:{i}" for i in range(3)]]
    assert "true" not in rows[0]  # nothing here has a known class
    probs = drmm.load(run).predict(arrays["x_test"][:3]).probabilities.numpy()  # (3, K)
    got = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows[-3:]])
    np.testing.assert_allclose(got, probs, atol=1e-6)


def test_out_dash_writes_the_csv_to_stdout(folder_run, tmp_path, capsys):
    root, _, run = folder_run
    out = tmp_path / "p.csv"
    args = ["predict", "--checkpoint", str(run), "--images", str(root / "test"), "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*args, "--out", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.replace("\r\n", "\n") == out.read_text().replace("\r\n", "\n")
    assert captured.err.startswith("wrote stdout: predictions for 24 images")
    assert not (tmp_path / "-").exists()


def test_a_labeled_folder_gets_a_true_column_an_error_and_a_table(folder_run, tmp_path, capsys):
    root, _, run = folder_run
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(run), "--images", str(root / "test"),
                 "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    rows = rows_of(out.read_text())
    assert [r["true"] for r in rows] == [p.parent.name for p in
                                         sorted((root / "test").rglob("*.png"))]
    wrong = sum(r["true"] != r["predicted"] for r in rows)
    assert f"error {100 * wrong / len(rows):.2f} % on the 24 images of known class" in said
    table = said.split("\n", 2)[2]  # scikit-learn's classification_report
    for c in CLASSES:
        recall = sum(r["predicted"] == c for r in rows if r["true"] == c) / 6
        line = next(x.split() for x in table.splitlines() if x.split()[:1] == [c])
        assert float(line[2]) == pytest.approx(recall, abs=1e-4) and int(line[4]) == 6


def test_npz_labels_and_mixed_inputs_fill_what_is_known(folder_run, tmp_path, capsys):
    root, arrays, run = folder_run
    np.savez(tmp_path / "l.npz", x=arrays["x_test"][:4], y=arrays["y_test"][:4])
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(run), "--images", str(tmp_path / "l.npz"),
                 str(root / "unlabeled" / "part2"), "--out", str(out), "--quiet"]) == 0
    rows = rows_of(out.read_text())
    assert [r["true"] for r in rows[:4]] == [CLASSES[y] for y in arrays["y_test"][:4]]
    assert all(r["true"] == "" for r in rows[4:])
    assert "on the 4 images of known class" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", x=arrays["x_test"][:4], y=np.array([0, 1, 2, 9]))
    assert main(["predict", "--checkpoint", str(run), "--images", str(tmp_path / "bad.npz"),
                 "--out", str(out), "--quiet"]) == 2
    assert "labels must be 4 integers in 0..3" in one_line_error(capsys)


def test_a_folder_of_other_sub_folders_is_not_labeled(folder_run, tmp_path):
    root, _, run = folder_run
    mixed = tmp_path / "mixed"
    shutil.copytree(root / "test", mixed)
    shutil.copy(next((root / "unlabeled" / "part0").glob("*.png")), mixed / "loose.png")
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(run), "--images", str(mixed), "--out", str(out),
                 "--quiet"]) == 0
    assert "true" not in rows_of(out.read_text())[0]  # one loose file: classes unknown


def test_wrong_kinds_of_input_are_one_line(folder_run, tmp_path, capsys):
    _, _, run = folder_run
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["predict", "--checkpoint", str(run), "--images", str(tmp_path / "notes.txt"),
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "neither a folder, an image file" in one_line_error(capsys)
    assert not (tmp_path / "p.csv").exists()


def test_progress_bars_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    assert main(["train", "--dataset", "digits", "--arch", "conv_tiny", "--epochs", "2",
                 "--config", write_yaml(tmp_path), "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()  # stderr is no terminal here: a log
    assert "\r" not in captured.err and "it/s" not in captured.err
    assert [line[:8] for line in captured.out.splitlines()[:2]] == ["epoch 1:", "epoch 2:"]
    assert not bar_shown(True)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert bar_shown(True) and not bar_shown(False)


def test_eval_help_shows_a_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "test error (%) of a trained run" in " ".join(text.split()) and "%%" not in text
