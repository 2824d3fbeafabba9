"""The labeling round trip: `drmm suggest`'s contact sheets and label column, and `drmm label`
moving the labeled files into DIR/labeled/<label>/ (all or nothing)."""

import base64
import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from helpers import (
    CLASSES,
    one_line_error,
    tiny_folder_run,
    tiny_train,
    write_npz,
    write_yaml,
)
from PIL import Image

import drmm.label
from benchmarks.own_data import label_round_trip
from drmm.cli import main
from drmm.contact_sheet import COLUMNS
from drmm.data.folder import decode, load_folder


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A DRMM trained 2 epochs on a folder of PNG files; its folder is copied, never changed."""
    return tiny_folder_run(tmp_path_factory.mktemp("label"))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def sheet_tiles(html_text):
    """(decoded image pixels, caption lines) of each tile of a contact sheet page."""
    tiles = re.findall(r'<div class="tile"><img alt="[^"]*" src="data:image/png;base64,'
                       r'([^"]+)"><div>(.*?)</div></div>', html_text)
    return [(np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))), c.split("<br>"))
            for b, c in tiles]


@pytest.fixture
def suggested(folder_run, tmp_path):
    """A copy of the folder and `drmm suggest --n 8` for it (rows name paths under it)."""
    root, arrays, run = folder_run
    copy = tmp_path / "d"
    shutil.copytree(root, copy)
    out = tmp_path / "to_label.csv"
    assert main(["suggest", "--checkpoint", str(run), "--n", "8", "--out", str(out)]) == 0
    shutil.copy(out, tmp_path / "original.csv")  # as suggest wrote it
    return copy, arrays, out


def true_class(arrays, image: str) -> str:
    return CLASSES[arrays["y_train"][int(os.path.splitext(os.path.basename(image))[0])]]


# ----------------------------------------------------------------------------------------------
# Contact sheets


def test_suggest_writes_a_label_column_and_contact_sheets(suggested, folder_run):
    root, _, out = suggested
    rows = read_csv(out)
    assert list(rows[0])[-1] == "label" and all(r["label"] == "" for r in rows)
    tiles = sheet_tiles(out.with_suffix(".html").read_text())
    assert len(tiles) == len(rows) == 8
    for i, (r, (pixels, caption)) in enumerate(zip(rows, tiles, strict=True), start=1):
        assert caption == [f"row {i}", f"predicted {r['predicted']}", r["image"]]
        # the image itself, as the run decoded it
        np.testing.assert_array_equal(pixels, decode(folder_run[0] / r["image"], 1, None))
    with Image.open(out.with_suffix(".png")) as sheet:
        tile_w = sheet.width // min(COLUMNS, 8)
        assert sheet.width == tile_w * min(COLUMNS, 8) and sheet.height > tile_w


def test_contact_sheet_of_a_built_in_style_run_shows_the_images(tmp_path, capsys):
    dataset = write_npz(tmp_path / "d.npz")
    run = tmp_path / "run"
    assert main(tiny_train(dataset, run, write_yaml(tmp_path), "--labels", "8")) == 0
    out = tmp_path / "s.csv"
    assert main(["suggest", "--checkpoint", str(run), "--n", "5", "--out", str(out)]) == 0
    assert "s.png" in capsys.readouterr().out
    x = np.load(tmp_path / "d.npz")["x_train"]
    tiles = sheet_tiles(out.with_suffix(".html").read_text())
    for r, (pixels, caption) in zip(read_csv(out), tiles, strict=True):
        np.testing.assert_array_equal(pixels, x[int(r["image"])])  # the row's index
        assert caption[2] == r["image"]


# ----------------------------------------------------------------------------------------------
# drmm label


def test_label_moves_the_labeled_rows_and_training_sees_them(suggested, capsys):
    root, arrays, out = suggested
    rows = read_csv(out)
    for r in rows[:6]:  # the person labels six, leaves two
        r["label"] = true_class(arrays, r["image"])
    write_csv(out, rows)
    before = load_folder(root)
    capsys.readouterr()
    assert main(["label", str(out), "--folder", str(root)]) == 0
    said = capsys.readouterr().out
    counts = {c: sum(true_class(arrays, r["image"]) == c for r in rows[:6]) for c in CLASSES}
    summary = ", ".join(f"{c}: {n}" for c, n in counts.items() if n)
    assert f"moved 6 images into {root / 'labeled'} ({summary})" in said
    assert "2 rows without a label left in place" in said
    for r in rows[:6]:
        rel = os.path.relpath(r["image"], "unlabeled")
        assert (root / "labeled" / r["label"] / rel).is_file()
        assert not (root / r["image"]).exists()
    for r in rows[6:]:
        assert (root / r["image"]).is_file()
    after = load_folder(root)  # what the next drmm train reads
    assert (after["y_train"] >= 0).sum() == (before["y_train"] >= 0).sum() + 6
    assert len(after["y_train"]) == len(before["y_train"])


def labeled_rows(suggested, **changes):
    root, arrays, out = suggested
    rows = read_csv(out.with_name("original.csv"))
    for r in rows:
        r["label"] = true_class(arrays, r["image"])
    for i, change in changes.items():
        rows[int(i[1:])].update(change)
    write_csv(out, rows)
    return root, out, rows


def unmoved(root, rows) -> bool:
    """Every file suggest named is still where it was (rows: any version of the CSV)."""
    original = read_csv(root.parent / "original.csv")
    return all((root / r["image"]).is_file() for r in original)


@pytest.mark.parametrize("change, message", [
    ({"label": "kat"}, "row 4: class 'kat' is not a folder of"),
    ({"label": "a/b"}, "row 4: label 'a/b' cannot be a class folder name"),
    ({"label": ".hidden"}, "cannot be a class folder name"),
    ({"image": "unlabeled/part0/nowhere.png"}, "row 4:"),
    ({"image": "test/cat/t000.png"}, "is not a file under"),
    ({"image": "unlabeled/../test/cat/t000.png"}, "is not a file under"),
])
def test_label_refuses_and_moves_nothing(suggested, capsys, change, message):
    root, out, rows = labeled_rows(suggested, r3=change)
    capsys.readouterr()
    assert main(["label", str(out), "--folder", str(root)]) == 2
    assert message in one_line_error(capsys)
    assert unmoved(root, rows)


def test_label_refuses_duplicates_and_never_overwrites(suggested, capsys):
    root, out, rows = labeled_rows(suggested, r5={"image": read_csv(suggested[2])[0]["image"]})
    assert main(["label", str(out), "--folder", str(root)]) == 2
    assert "rows 1 and 6 both name" in one_line_error(capsys)
    root, out, rows = labeled_rows(suggested)
    target = root / "labeled" / rows[2]["label"] / os.path.relpath(rows[2]["image"], "unlabeled")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"someone else's file")
    assert main(["label", str(out), "--folder", str(root)]) == 2
    assert "already exists and is not overwritten" in one_line_error(capsys)
    assert target.read_bytes() == b"someone else's file" and unmoved(root, rows)


def test_label_twice_names_where_the_file_went(suggested, capsys):
    root, out, rows = labeled_rows(suggested)
    assert main(["label", str(out), "--folder", str(root)]) == 0
    assert main(["label", str(out), "--folder", str(root)]) == 2
    assert f"is in {root / 'labeled' / rows[0]['label']}" in one_line_error(capsys)


def test_new_class_and_a_spreadsheet_csv(suggested, capsys):
    root, out, rows = labeled_rows(suggested, r0={"label": "gnu"})
    # saved back by a spreadsheet: byte-order mark, semicolons
    text = out.read_text().replace(",", ";")
    out.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert main(["label", str(out), "--folder", str(root)]) == 2
    assert "--new-class" in one_line_error(capsys)
    assert main(["label", str(out), "--folder", str(root), "--new-class"]) == 0
    assert "new classes: gnu" in capsys.readouterr().out
    assert (root / "labeled" / "gnu").is_dir() and not (root / rows[0]["image"]).exists()


def test_a_failed_move_puts_every_file_back(suggested, capsys, monkeypatch):
    root, out, rows = labeled_rows(suggested)
    real_rename, calls = os.rename, []

    def rename(a, b):
        calls.append(a)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        real_rename(a, b)

    monkeypatch.setattr(drmm.label.os, "rename", rename)
    assert main(["label", str(out), "--folder", str(root)]) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert unmoved(root, rows)
    assert [p for c in CLASSES for p in (root / "labeled" / c).rglob("part*")] == []


def test_label_needs_the_columns_and_a_folder_run(suggested, tmp_path, capsys):
    root, _, out = suggested
    (tmp_path / "x.csv").write_text("image,predicted\nunlabeled/part0/010.png,cat\n")
    assert main(["label", str(tmp_path / "x.csv"), "--folder", str(root)]) == 2
    assert "no image and label columns" in one_line_error(capsys)
    assert main(["label", str(out), "--folder", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in one_line_error(capsys)


def test_round_trip_benchmark_tiny(shared_data, tmp_path):
    out = tmp_path / "r.json"
    result = label_round_trip.main(label_round_trip.parse_args([
        "--data-dir", str(shared_data), "--per-class", "2", "--unlabeled", "100",
        "--held-out", "20", "--n", "5", "--epochs", "1", "--work", str(tmp_path / "w"),
        "--out", str(out)]))
    assert result == json.loads(out.read_text())
    assert (result["before"]["labels"], result["after"]["labels"]) == (20, 25)
    assert sum(result["moved_per_class"].values()) == 5
    folder = tmp_path / "w" / "folder"
    assert len(list((folder / "unlabeled").glob("*.png"))) == 95
    assert len(list((folder / "labeled").glob("*/*.png"))) == 25
    assert result["before"]["held_out_images"] == result["after"]["held_out_images"] == 20
