"""The user's own data: folder:DIR, npz with unlabeled images and no test set,
--labeled-indices, `drmm predict` and the `drmm.load` predictor."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from helpers import CLASSES, make_folder, one_line_error, tiny_arrays, tiny_train, write_yaml
from PIL import Image

import drmm
from drmm.checkpoint import load_trained_model
from drmm.cli import main
from drmm.data import choose_labeled, load_dataset, read_indices
from drmm.data.folder import load_folder
from drmm.data.preprocess import channel_stats
from drmm.errors import DRMMError

# ----------------------------------------------------------------------------------------------
# Data in three forms


def test_folder_layout_labels_classes_and_paths(tmp_path):
    root, a = make_folder(tmp_path / "d")
    arrays = load_folder(root)
    assert arrays["x_train"].shape == (80, 8, 8) and arrays["x_train"].dtype == np.uint8
    y = arrays["y_train"]
    assert (y == -1).sum() == 72 and sorted(np.unique(y[y >= 0])) == [0, 1, 2, 3]
    assert list(arrays["class_names"]) == CLASSES
    assert arrays["x_test"].shape == (24, 8, 8) and len(arrays["y_test"]) == 24
    # each labeled image carries its folder's class, pixels unchanged by the PNG round trip
    first = arrays["paths_train"][0]
    assert first.startswith("labeled/cat/")
    i = int(first.split("/")[-1][:3])
    assert np.array_equal(arrays["x_train"][0], a["x_train"][i])
    assert all(p.startswith("unlabeled/") for p in arrays["paths_train"][y == -1])


def test_folder_channels_decided_by_files_or_flag(tmp_path):
    root, _ = make_folder(tmp_path / "d", rgb_one=True, test=False)
    assert load_folder(root)["x_train"].shape == (80, 8, 8, 3)  # one RGB file: all RGB
    assert load_folder(root, channels=1)["x_train"].shape == (80, 8, 8)
    assert "x_test" not in load_folder(root)


def test_folder_sizes_must_agree_or_be_resized(tmp_path):
    root, _ = make_folder(tmp_path / "d", test=False)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "unlabeled" / "odd.png")
    with pytest.raises(DRMMError, match="--image-size"):
        load_folder(root)
    arrays = load_folder(root, image_size=16)
    assert arrays["x_train"].shape == (81, 16, 16)


def test_folder_cache_is_read_and_invalidated(tmp_path, monkeypatch):
    root, _ = make_folder(tmp_path / "d")
    first = load_folder(root)
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 1
    import drmm.data.folder as folder

    def no_decoding(*args, **kw):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(folder, "decode", no_decoding)
    again = load_folder(root)
    assert np.array_equal(first["x_train"], again["x_train"])
    changed = root / "unlabeled" / "part1" / "001.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(changed)  # new size and time
    with pytest.raises(AssertionError, match="decoded again"):
        load_folder(root)


def save_blank(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "does not exist"),
    (lambda r: save_blank(r / "labeled" / "cat" / "a.png"), "1 class folder"),
    (lambda r: [(r / "labeled" / c).mkdir(parents=True) for c in ("a", "b")], "hold no images"),
])
def test_folder_layout_errors(tmp_path, setup, message):
    root = tmp_path / "d"
    root.mkdir()
    setup(root)
    with pytest.raises(DRMMError, match=message):
        load_folder(root)


def test_folder_unknown_test_class_and_corrupt_image(tmp_path):
    root, _ = make_folder(tmp_path / "d")
    (root / "test" / "gnu").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "test" / "gnu" / "x.png")
    with pytest.raises(DRMMError, match="gnu"):
        load_folder(root)
    (root / "test" / "gnu" / "x.png").unlink()
    (root / "test" / "gnu").rmdir()
    (root / "unlabeled" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DRMMError, match="broken.png"):
        load_folder(root)


def test_npz_with_unlabeled_images_and_no_test_set(tmp_path, capsys):
    a = tiny_arrays()
    y = a["y_train"].copy()
    y[8:] = -1  # the first 8 images (2 per class) are the only labeled ones
    np.savez(tmp_path / "d.npz", x_train=a["x_train"], y_train=y)
    out = tmp_path / "run"
    assert main(tiny_train(f"npz:{tmp_path / 'd.npz'}", out, write_yaml(tmp_path))) == 0
    assert "no test set after 2 epochs (8 labels" in capsys.readouterr().out
    assert np.array_equal(np.load(out / "labeled_indices.npy"), np.arange(8))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_error_percent"] is None and metrics["labels"] == 8


def test_labels_draws_among_labeled_images_only():
    y = np.array([0, 1, -1, -1, 0, 1, -1, 0, 1, -1])
    for seed in range(5):
        chosen = choose_labeled(y, 2, 4, seed)
        assert (y[chosen] >= 0).all() and sorted(y[chosen]) == [0, 0, 1, 1]
    assert list(choose_labeled(y, 2, None, 0)) == [0, 1, 4, 5, 7, 8]
    with pytest.raises(DRMMError, match="more than the 6 labeled"):
        choose_labeled(y, 2, 8, 0)


def test_labeled_indices_text_and_npy(tmp_path):
    (tmp_path / "i.txt").write_text("# a published split\n5\n0\n\n8\n")
    np.save(tmp_path / "i.npy", np.array([8, 0, 5]))
    y = np.arange(10) % 2
    for name in ("i.txt", "i.npy"):
        given = read_indices(tmp_path / name)
        assert list(choose_labeled(y, 2, None, 0, given)) == [0, 5, 8]


@pytest.mark.parametrize("given, labels, message", [
    ([0, 10], None, "outside 0..9"),
    ([1, 1], None, "twice"),
    ([2, 3], None, "without a label"),
    ([0, 1], 4, "--labels 4 but --labeled-indices lists 2"),
])
def test_labeled_indices_errors(given, labels, message):
    y = np.array([0, 1, -1, -1, 0, 1, 0, 1, 0, 1])
    with pytest.raises(DRMMError, match=message):
        choose_labeled(y, 2, labels, 0, np.array(given))


def test_labeled_indices_file_errors(tmp_path):
    (tmp_path / "bad.txt").write_text("1\ntwo\n")
    with pytest.raises(DRMMError, match="text file of integers"):
        read_indices(tmp_path / "bad.txt")
    with pytest.raises(DRMMError, match="is a folder"):
        read_indices(tmp_path)


def test_train_with_labeled_indices_uses_exactly_them(tmp_path):
    (tmp_path / "idx.txt").write_text("\n".join(map(str, [3, 0, 1, 2, 9, 6])) + "\n")
    npz = tmp_path / "d.npz"
    np.savez(npz, **tiny_arrays())
    out = tmp_path / "run"
    assert main(tiny_train(f"npz:{npz}", out, write_yaml(tmp_path),
                           "--labeled-indices", str(tmp_path / "idx.txt"))) == 0
    assert list(np.load(out / "labeled_indices.npy")) == [0, 1, 2, 3, 6, 9]


# ----------------------------------------------------------------------------------------------
# Train on a folder, predict, and the Python API


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A DRMM trained 2 epochs on a tiny folder with --preprocess standardize; trained once,
    read (never changed) by the tests that take it."""
    tmp = tmp_path_factory.mktemp("folder_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRMM_CACHE", str(tmp / "cache"))
        root, a = make_folder(tmp / "d")
        out = tmp / "run"
        assert main(tiny_train(f"folder:{root}", out, write_yaml(tmp),
                               "--preprocess", "standardize")) == 0
    return root, a, out


def test_folder_training_run(folder_run, capsys):
    root, _, out = folder_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == 8 and metrics["test_error_percent"] is not None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["class_names"] == CLASSES
    # the stored statistics are the training images' own (labeled and unlabeled)
    x = load_dataset(f"folder:{root}").x_train
    mean, std = channel_stats(x[:])
    torch.testing.assert_close(state["preprocess"]["mean"], mean)
    torch.testing.assert_close(state["preprocess"]["std"], std)


def test_predict_csv(folder_run, tmp_path, capsys):
    root, _, out = folder_run
    csv_path = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(out), "--images", str(root / "test"),
                 "--out", str(csv_path), "--quiet", "--batch-size", "5"]) == 0
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24
    assert list(rows[0]) == ["image", "true", "predicted", "probability",
                             *[f"p_{c}" for c in CLASSES], "novelty"]
    predictor = drmm.load(out)
    files = sorted((root / "test").rglob("*.png"))
    probs = predictor.predict([Image.open(p) for p in files]).probabilities  # (24, 4)
    for row, path, p in zip(rows, files, probs, strict=True):
        assert row["image"] == str(path) and row["true"] == path.parent.name
        got = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        np.testing.assert_allclose(got, p.numpy(), atol=1e-6)
        assert abs(got.sum() - 1) < 1e-4
        assert row["predicted"] == CLASSES[int(got.argmax())]
        assert float(row["probability"]) == pytest.approx(got.max(), abs=1e-6)


def test_predict_from_npz_and_atomic_output(folder_run, tmp_path):
    _, a, out = folder_run
    np.savez(tmp_path / "new.npz", x=a["x_test"][:7])
    csv_path = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--images",
                 str(tmp_path / "new.npz"), "--out", str(csv_path), "--quiet"]) == 0
    rows = list(csv.DictReader(open(csv_path, newline="")))
    assert [r["image"] for r in rows] == [str(i) for i in range(7)]
    assert not list(tmp_path.glob("p.csv.*"))  # no temporary left


def test_predictor_is_eval_mode_and_never_moves_batchnorm(folder_run):
    _, a, out = folder_run
    predictor = drmm.load(out)
    assert not predictor.model.training
    before = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    batch = predictor.predict(a["x_test"])
    predictor.model.train()  # a careless caller: predict must still use the running statistics
    singles = [predictor.predict(a["x_test"][i:i + 1]) for i in range(len(a["x_test"]))]
    torch.testing.assert_close(torch.cat([s.probabilities for s in singles]),
                               batch.probabilities)
    assert torch.equal(torch.cat([s.classes for s in singles]), batch.classes)
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_predictor_inputs_agree_and_match_training_preprocessing(folder_run):
    root, a, out = folder_run
    predictor = drmm.load(out)
    x = a["x_test"]  # (24, 8, 8) uint8
    by_array = predictor.predict(x).probabilities
    by_tensor = predictor.predict(torch.from_numpy(x).float()[:, None] / 255).probabilities
    by_pil = predictor.predict([Image.fromarray(im) for im in x]).probabilities
    torch.testing.assert_close(by_array, by_tensor)
    torch.testing.assert_close(by_array, by_pil)
    # the same as the model on the test set that training transformed with its statistics
    model, _, _ = load_trained_model(out)
    data = load_dataset(f"folder:{root}", preprocess="standardize")
    with torch.no_grad():
        expected = model(data.x_test[:]).softmax(1)  # (24, K), files in class-folder order
    order = np.lexsort((np.arange(len(x)), a["y_test"]))  # the index order of those files
    torch.testing.assert_close(by_array[order], expected)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 9, 9), np.uint8), r"model takes \(1, 8, 8\)"),
    (np.zeros((2, 8, 8, 3), np.uint8), "1 channel"),
    (np.zeros((8, 8), np.uint8), "add a first axis"),
    (np.zeros((2, 8, 8), np.float64), "must be a uint8 array"),
    (torch.full((2, 1, 8, 8), 200.0), r"in \[0, 1\]"),
])
def test_predictor_refuses_wrong_inputs(folder_run, images, message):
    predictor = drmm.load(folder_run[2])
    with pytest.raises(DRMMError, match=message):
        predictor.predict(images)


def test_load_trained_model_is_in_eval_mode(folder_run):
    model, _, _ = load_trained_model(folder_run[2])
    assert not model.training


# ----------------------------------------------------------------------------------------------
# Errors a new user hit


def command_argv(command: str, out) -> list[str]:
    """argv whose inputs do not exist either: the --out check must come first."""
    return {"train": ["train", "--dataset", "npz:/nonexistent.npz"],
            "render": ["render"],
            "sample": ["sample", "--checkpoint", "/nonexistent"],
            "predict": ["predict", "--checkpoint", "/nonexistent", "--images", "/nonexistent"],
            }[command] + ["--out", str(out)]


@pytest.mark.parametrize("command, suffix", [("train", ""), ("sample", ".png"),
                                             ("render", ".npz"), ("predict", ".csv")])
def test_bad_out_is_one_line_before_any_loading(tmp_path, capsys, command, suffix):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(command_argv(command, blocker / "sub" / f"o{suffix}")) == 2
    assert "lies under" in one_line_error(capsys)
    # the wrong kind: a file where a run folder goes, a folder where a file goes
    wrong = blocker if command == "train" else tmp_path
    if command != "train":
        wrong = tmp_path / f"folder{suffix}"
        wrong.mkdir()
    assert main(command_argv(command, wrong)) == 2
    msg = one_line_error(capsys)
    assert "--out" in msg and ("is an existing file" in msg or "is a folder" in msg), msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["train", "--dataset", "npz:/none.npz", "--out", str(ro / "run")]) == 2
        assert "cannot write" in one_line_error(capsys)
    finally:
        ro.chmod(0o700)


def test_eval_refuses_other_classes_and_takes_run_folders(folder_run, tmp_path, capsys):
    root, a, out = folder_run
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert "test error" in capsys.readouterr().out
    three = {k: v for k, v in a.items()}
    keep = (three["y_train"] < 3)
    keep_t = three["y_test"] < 3
    np.savez(tmp_path / "three.npz", x_train=a["x_train"][keep], y_train=a["y_train"][keep],
             x_test=a["x_test"][keep_t], y_test=a["y_test"][keep_t])
    assert main(["eval", "--checkpoint", str(out), "--dataset",
                 f"npz:{tmp_path / 'three.npz'}"]) == 2
    assert "4-class model" in one_line_error(capsys)


def test_sample_refuses_a_supervised_only_run(tmp_path, capsys):
    root, _ = make_folder(tmp_path / "d")
    out = tmp_path / "dcn"
    assert main(tiny_train(f"folder:{root}", out, write_yaml(tmp_path), "--supervised-only")) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "--out", str(tmp_path / "s.png")]) == 2
    assert "supervised-only" in one_line_error(capsys)


def test_wrong_kind_of_path_says_so(tmp_path, capsys):
    assert main(["train", "--dataset", f"npz:{tmp_path}", "--out", str(tmp_path / "r")]) == 2
    assert "is a folder, not a file" in one_line_error(capsys)
    (tmp_path / "f").write_text("x")
    assert main(["train", "--data-dir", str(tmp_path / "f"), "--out", str(tmp_path / "r")]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    assert "holds no checkpoint.pt" in one_line_error(capsys)


def test_state_dict_mismatch_names_the_keys(folder_run, tmp_path, capsys):
    out = folder_run[2]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["model"]["layers.0.conv.weight"] = torch.zeros(3, 1, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    assert main(["eval", "--checkpoint", str(tmp_path / "bad.pt")]) == 2
    msg = one_line_error(capsys)
    assert "size mismatch for layers.0.conv.weight" in msg


def test_yaml_error_has_line_and_column(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train:\n  lr: 0.1\n  epochs: [1, 2\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    msg = one_line_error(capsys)
    assert "line 4, column 1" in msg or "line 3" in msg, msg


def test_npz_with_objects_names_the_problem(tmp_path, capsys):
    np.savez(tmp_path / "o.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=[0])
    assert main(["train", "--dataset", f"npz:{tmp_path / 'o.npz'}",
                 "--out", str(tmp_path / "r")]) == 2
    msg = one_line_error(capsys)
    assert "Python objects" in msg and "allow_pickle" not in msg


def test_run_files_follow_the_umask(folder_run):
    out = folder_run[2]
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("checkpoint.pt", "metrics.json", "config.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"drmm {drmm.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("train", "eval", "predict", "reproduce", "render", "analyze", "sample"):
        assert f"    {command}" in text, command
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "Print the test error" in capsys.readouterr().out
