"""drmm/scores.py by hand, `drmm suggest` (what to label next), predict's novelty column and its
calibration at the end of training, and the two benchmarks on tiny settings."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    one_line_error,
    tiny_arrays,
    tiny_folder_run,
    tiny_train,
    write_npz,
    write_yaml,
)

import drmm
from benchmarks.own_data import folder_label_loop, label_loop, novelty_auroc
from drmm import scores
from drmm.checkpoint import load_trained_model
from drmm.cli import main
from drmm.model import DRMM, ModelConfig
from drmm.predictor import Predictions

CSV_COLUMNS = ["image", "predicted", "margin", "render_error", "score", "rank", "label"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------
# Tiny runs, trained once per module and only read


@pytest.fixture(scope="module")
def npz_runs(tmp_path_factory):
    """A DRMM and a --supervised-only run, 2 epochs of conv_tiny on tiny_arrays() as an npz."""
    tmp = tmp_path_factory.mktemp("npz_runs")
    dataset = write_npz(tmp / "d.npz")
    yaml = write_yaml(tmp)
    runs = {}
    for name, extra in (("drmm", ()), ("dcn", ("--supervised-only",))):
        runs[name] = tmp / name
        assert main(tiny_train(dataset, runs[name], yaml, "--labels", "8", *extra)) == 0
    return tmp, runs


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A DRMM trained 2 epochs on a folder of PNG files (2 labeled images per class)."""
    root, _, out = tiny_folder_run(tmp_path_factory.mktemp("folder"))
    return root, out


# ----------------------------------------------------------------------------------------------
# The scores, by hand


def test_scores_by_hand():
    torch.manual_seed(0)
    model = DRMM(ModelConfig(arch="conv_tiny", in_channels=1, image_size=8, num_classes=3))
    x = torch.rand(7, 1, 8, 8)
    model.train()  # score_images must score in eval mode and leave the mode as it was
    s = scores.score_images(model, x, batch_size=3)
    assert model.training
    model.eval()
    with torch.no_grad():
        bu = model.bottom_up(x)
        td = model.top_down(bu)
    expected = ((td.image - x) ** 2).mean(dim=(1, 2, 3))  # (7,)
    torch.testing.assert_close(s.render_error, expected)
    torch.testing.assert_close(s.logits, bu.logits)
    p = bu.logits.double().softmax(1).numpy()  # (7, 3)
    top = np.sort(p, axis=1)[:, ::-1]
    np.testing.assert_allclose(scores.margin(bu.logits).numpy(), top[:, 0] - top[:, 1])
    np.testing.assert_allclose(scores.entropy(bu.logits).numpy(), -(p * np.log(p)).sum(1))
    np.testing.assert_allclose(scores.softmax_novelty(bu.logits).numpy(), 1 - top[:, 0])
    # 1 - max p stays above 0 (and ordered) where float32's softmax says max p = 1 exactly
    sure = torch.tensor([[60.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    assert sure.softmax(1).max(1).values.eq(1).all()
    nov = scores.softmax_novelty(sure)
    assert (nov > 0).all() and nov[0] < nov[1]
    # the render score is render_error itself; without rendering there is none
    torch.testing.assert_close(scores.raw_novelty("render", s.logits, s.render_error),
                               s.render_error.double())
    assert scores.score_images(model, x, render=False).render_error is None


def test_rank_average_and_diversity_helpers():
    np.testing.assert_allclose(scores.rank_average([1, 2, 3], [30, 20, 10]), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(scores.rank_average([1, 2, 3], [1, 5, 50]), [0, 0.5, 1])
    # quotas: 3 classes, class 2 has one image; each class's best first, the round in score order
    value = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.5, 0.2])
    classes = np.array([0, 0, 0, 0, 1, 1, 2])
    assert list(scores.per_class_quota(value, classes, 3)) == [0, 4, 6]
    assert list(scores.per_class_quota(value, classes, 6)) == [0, 4, 6, 1, 5, 2]
    assert len(set(scores.per_class_quota(value, classes, 7))) == 7


def test_predictions_still_unpack_as_a_pair():
    p = Predictions(torch.tensor([1]), torch.tensor([[0.25, 0.75]]), torch.tensor([2.0]),
                    "render")
    classes, probs = p
    assert classes.tolist() == [1] and p.novelty.tolist() == [2.0] and len(p) == 2
    assert Predictions(classes, probs).novelty is None


# ----------------------------------------------------------------------------------------------
# drmm suggest


def test_suggest_npz_csv_and_labeled_union(npz_runs, tmp_path, capsys):
    _, runs = npz_runs
    out = tmp_path / "to_label.csv"
    assert main(["suggest", "--checkpoint", str(runs["drmm"]), "--n", "12",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.startswith(f"wrote {out}: 12 of 72 unlabeled images") and "to_label.npy" in said
    rows = read_csv(out)
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 12
    labeled = torch.load(runs["drmm"] / "checkpoint.pt",
                         weights_only=True)["labeled_indices"].tolist()
    picked = [int(r["image"]) for r in rows]
    assert len(set(picked)) == 12 and not set(picked) & set(labeled)
    assert [int(r["rank"]) for r in rows] == list(range(1, 13))
    assert len({r["predicted"] for r in rows}) > 1  # spread over the predicted classes
    assert all(float(r["render_error"]) > 0 and 0 <= float(r["margin"]) <= 1 for r in rows)
    union = np.load(tmp_path / "to_label.npy")
    assert union.dtype == np.int64 and list(union) == sorted(labeled + picked)
    assert not list(tmp_path.glob("*.tmp"))
    for score in ("render+margin", "entropy", "random"):
        o = tmp_path / f"{score}.csv"
        assert main(["suggest", "--checkpoint", str(runs["drmm"]), "--n", "5", "--score", score,
                     "--out", str(o)]) == 0
        assert len(read_csv(o)) == 5
    # the default score: the class uncertainty, 1 - margin
    assert all(float(r["score"]) == pytest.approx(1 - float(r["margin"]), abs=1e-5) for r in rows)


def test_suggest_folder_names_files_to_move(folder_run, tmp_path, capsys):
    root, run = folder_run
    out = tmp_path / "to_label.csv"
    assert main(["suggest", "--checkpoint", str(run), "--n", "8", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"drmm label {out} --folder {root}" in said and "labeled/<label>/" in said
    rows = read_csv(out)
    assert len(rows) == 8 and len({r["predicted"] for r in rows}) > 1
    for r in rows:  # the run's own path of an unlabeled file, relative to the folder
        assert r["image"].startswith("unlabeled/") and (root / r["image"]).is_file()
    assert not (tmp_path / "to_label.npy").exists()  # moving files reorders the training set


def test_suggest_errors_are_one_line(npz_runs, tmp_path, capsys):
    _, runs = npz_runs
    out = str(tmp_path / "s.csv")
    assert main(["suggest", "--checkpoint", str(runs["dcn"]), "--out", out, "--n", "5",
                 "--score", "render+margin"]) == 2
    msg = one_line_error(capsys)
    assert "supervised-only" in msg and "--score margin" in msg
    assert main(["suggest", "--checkpoint", str(runs["drmm"]), "--out", out, "--n", "0"]) == 2
    assert "--n 0" in one_line_error(capsys)
    assert main(["suggest", "--checkpoint", str(runs["drmm"]), "--out", out, "--n", "73"]) == 2
    assert "more than the 72 unlabeled" in one_line_error(capsys)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["suggest", "--checkpoint", str(tmp_path / "junk.pt"), "--out", out]) == 2
    assert "junk.pt" in one_line_error(capsys)
    assert main(["suggest", "--checkpoint", str(runs["drmm"]), "--out",
                 str(tmp_path / "s.txt")]) == 2
    assert "must end in .csv" in one_line_error(capsys)
    # a supervised-only run with a score it can give: no rendering error column values
    assert main(["suggest", "--checkpoint", str(runs["dcn"]), "--out", out, "--n", "5",
                 "--score", "margin"]) == 0
    assert all(r["render_error"] == "" for r in read_csv(out))


# ----------------------------------------------------------------------------------------------
# Novelty: calibrated at the end of training, a column of drmm predict


def test_training_stores_the_novelty_scale(npz_runs):
    _, runs = npz_runs
    for name, score in (("drmm", scores.NOVELTY_SCORE), ("dcn", "softmax")):
        state = torch.load(runs[name] / "checkpoint.pt", weights_only=True)
        assert state["novelty_score"] == score
        assert state["novelty_scale"] == state["novelty_scales"][score] > 0
    # the stored scale is the 99th percentile of the score over the training images
    model, cfg, state = load_trained_model(runs["drmm"])
    x = torch.from_numpy(tiny_arrays()["x_train"]).float()[:, None] / 255
    err = scores.score_images(model, x).render_error.double().numpy()
    assert state["novelty_scales"]["render"] == pytest.approx(np.quantile(err, 0.99), rel=1e-5)


def test_predict_novelty_column_is_calibrated(npz_runs, tmp_path, capsys):
    tmp, runs = npz_runs
    np.savez(tmp_path / "train.npz", x=tiny_arrays()["x_train"])
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(runs["drmm"]), "--images",
                 str(tmp_path / "train.npz"), "--out", str(out), "--quiet"]) == 0
    assert "novelty: render" in capsys.readouterr().out
    rows = read_csv(out)
    assert list(rows[0])[-1] == "novelty" and len(rows) == 80
    novelty = np.array([float(r["novelty"]) for r in rows])
    assert (novelty > 1).mean() <= 0.05 and np.median(novelty) < 1
    pred = drmm.load(runs["drmm"]).predict(tiny_arrays()["x_train"])
    assert pred.novelty_score == "render"
    np.testing.assert_allclose(pred.novelty.numpy(), novelty, rtol=1e-4)
    # a supervised-only run: 1 - max p, scaled alike, and the summary says so
    assert main(["predict", "--checkpoint", str(runs["dcn"]), "--images",
                 str(tmp_path / "train.npz"), "--out", str(out), "--quiet"]) == 0
    assert "novelty: softmax" in capsys.readouterr().out
    novelty = np.array([float(r["novelty"]) for r in read_csv(out)])
    assert (novelty > 1).mean() <= 0.05


def test_novelty_is_higher_for_inverted_and_noise_images(npz_runs):
    predictor = drmm.load(npz_runs[1]["drmm"])
    x = tiny_arrays()["x_train"]
    train = predictor.predict(x).novelty
    inverted = predictor.predict(255 - x).novelty
    noise = predictor.predict(np.random.default_rng(0).integers(0, 256, x.shape, np.uint8)
                              ).novelty
    # measured over 4 seeds: training median 0.83-0.89, inverted min 2.67, noise median 1.56
    assert train.median() < 1 and inverted.min() > 1.5 and noise.median() > 1.2
    assert predictor.predict(x, novelty=False).novelty is None


def test_older_checkpoint_is_calibrated_from_its_data_or_says_why(npz_runs, tmp_path, capsys):
    tmp, runs = npz_runs
    state = torch.load(runs["drmm"] / "checkpoint.pt", weights_only=True)
    scale = state["novelty_scale"]
    for key in scores.NOVELTY_KEYS:
        del state[key]
    torch.save(state, tmp_path / "old.pt")
    predictor = drmm.load(tmp_path / "old.pt")  # the run's npz is still there
    assert predictor.novelty_score == "render"
    assert predictor.novelty_scale == pytest.approx(scale, rel=1e-5)
    state["config"]["train"]["dataset"] = f"npz:{tmp_path / 'gone.npz'}"
    torch.save(state, tmp_path / "lost.pt")
    np.savez(tmp_path / "new.npz", x=tiny_arrays()["x_test"][:5])
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(tmp_path / "lost.pt"), "--images",
                 str(tmp_path / "new.npz"), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("drmm: note: no novelty column") \
        and "gone.npz" in err[0]
    assert "novelty" not in read_csv(out)[0] and len(read_csv(out)) == 5


# ----------------------------------------------------------------------------------------------
# The benchmarks, tiny


def test_label_loop_tiny(tmp_path):
    out = tmp_path / "loop.json"
    result = label_loop.main(["--epochs", "1", "--seeds", "0", "--unlabeled", "300",
                              "--threads", "1", "--work", str(tmp_path / "w"),
                              "--out", str(out)])
    assert json.loads(out.read_text()) == result
    runs = {r["strategy"]: r for r in result["runs"]}
    assert set(runs) == {"base", "render+margin", "margin", "random"}
    assert runs["base"]["labels"] == 50
    for s in ("render+margin", "margin", "random"):
        assert runs[s]["labels"] == 100 and sum(runs[s]["picked_true_classes"]) == 50
        assert 0 <= runs[s]["test_error"] <= 1
        assert len(np.load(tmp_path / "w" / "seed0" / f"{s}.npy")) == 100


def test_folder_label_loop_moves_the_suggested_files_and_retrains(shared_data, tmp_path):
    work, out = tmp_path / "w", tmp_path / "loop.json"
    result = folder_label_loop.main(folder_label_loop.parse_args([
        "--data-dir", str(shared_data), "--per-class", "2", "--unlabeled", "200",
        "--held-out", "40", "--n", "10", "--epochs", "1", "--work", str(work),
        "--out", str(out)]))
    assert json.loads(out.read_text()) == result
    (r,) = result["results"]
    assert r["round0"]["labels"] == 20 and r["round1"]["labels"] == 30
    folder = work / "margin" / "folder"
    assert len(list((folder / "unlabeled").glob("*.png"))) == 190  # 10 moved out
    assert len(list((folder / "labeled").glob("*/*.png"))) == 30  # into their classes
    assert len(list((work / "data" / "folder" / "labeled").glob("*/*.png"))) == 20  # untouched
    for m in r["moved"]:
        assert (folder / "labeled" / m["true"] / Path(m["image"]).name).is_file()


def test_novelty_auroc_tiny(shared_data, tmp_path):
    from drmm.data.mnist import load_mnist

    mnist = load_mnist(shared_data)
    npz = tmp_path / "m.npz"
    np.savez(npz, x_train=mnist["x_train"][:200], y_train=mnist["y_train"][:200],
             x_test=mnist["x_test"][:50], y_test=mnist["y_test"][:50])
    run = tmp_path / "run"
    assert main(tiny_train(f"npz:{npz}", run, write_yaml(tmp_path), "--labels", "20",
                           "--epochs", "1")) == 0
    out = tmp_path / "auroc.json"
    result = novelty_auroc.main(["--checkpoint", str(run), "--data-dir", str(shared_data),
                                 "--out", str(out), "--limit", "100"])
    assert json.loads(out.read_text()) == result
    assert result["images_per_set"] == 100
    assert set(result["auroc"]) == set(novelty_auroc.OOD_SETS)
    for r in result["auroc"].values():
        assert 0 <= r["render"] <= 1 and 0 <= r["softmax"] <= 1
