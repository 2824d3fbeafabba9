"""`drmm reproduce` end to end on a tiny configuration: a fabricated npz data set, conv_tiny,
two epochs. Checks the table's numbers against the runs' own metrics, reuse, resumption after
an interruption, growth of a table over several commands, and the refusals."""

import csv
import json
import re
import shutil
import statistics

import numpy as np
import pytest
import torch

import drmm.train
from drmm.cli import main
from drmm.reproduce import TABLES

K, PER_CLASS_TRAIN, PER_CLASS_TEST, SIDE = 10, 12, 4, 12


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a loaded machine they spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """10 classes of 12x12 images, each class a bright bar at its own row, plus noise."""
    rng = np.random.default_rng(0)

    def make(per_class):
        y = np.repeat(np.arange(K), per_class)
        x = rng.integers(0, 60, (len(y), SIDE, SIDE)).astype(np.uint8)
        x[np.arange(len(y)), y + 1, 2:10] = 250
        return x, y

    (x_train, y_train), (x_test, y_test) = make(PER_CLASS_TRAIN), make(PER_CLASS_TEST)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def args(out, npz, *extra):
    return ["reproduce", "table1", "--out", str(out), "--dataset", f"npz:{npz}", "--arch",
            "conv_tiny", "--epochs", "2", "--labels", "50", "--batch-size", "20",
            "--no-tensorboard", "--quiet", *extra]


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory, tiny_npz):
    out = tmp_path_factory.mktemp("table1")
    assert main(args(out, tiny_npz, "--rows", "DRMM,+KL+NN", "--seeds", "0,1")) == 0
    return out


def read_csv(out):
    with open(out / "table.csv") as f:
        return {row["row"]: row for row in csv.DictReader(f)}


def run_metrics(out, name):
    return json.loads((out / "runs" / name / "metrics.json").read_text())


def test_table_matches_the_runs(table_dir):
    rows = read_csv(table_dir)
    assert list(rows) == ["DRMM", "+KL+NN"]
    for row, slug, paper in (("DRMM", "drmm", 21.73), ("+KL+NN", "kl-nn", 0.91)):
        runs = [run_metrics(table_dir, f"{slug}-nl50-seed{s}") for s in (0, 1)]
        end = [m["test_error_percent"] for m in runs]
        best = [m["best_test_error_percent"] for m in runs]
        r = rows[row]
        assert float(r["err_end_mean"]) == pytest.approx(statistics.fmean(end), abs=1e-3)
        assert float(r["err_end_std"]) == pytest.approx(statistics.stdev(end), abs=1e-3)
        assert float(r["err_best_mean"]) == pytest.approx(statistics.fmean(best), abs=1e-3)
        assert float(r["err_best_mean"]) <= float(r["err_end_mean"])
        assert float(r["paper_err"]) == paper  # the paper's Table 1, N_L = 50
        assert (r["seeds"], r["n_seeds"], r["unlabeled"]) == ("0 1", "2", "120")
        assert (r["schedule"], r["epochs"], r["arch"], r["optimizer"]) == ("fast", "2",
                                                                           "conv_tiny", "sgd")
        assert r["hardware"] and float(r["wall_seconds_total"]) > 0
    md = (table_dir / "table.md").read_text()
    drmm_end = float(rows["DRMM"]["err_end_mean"])
    both_end = float(rows["+KL+NN"]["err_end_mean"])
    assert f"| DRMM | 50 | 0,1 | {drmm_end:.2f} ± " in md
    assert "Read off the test set" in md and "21.73" in md
    # Table 2, derived: DRMM's error minus the row's, beside the paper's 20.82
    assert f"| +KL+NN | 50 | {drmm_end - both_end:.2f} | 20.82 |" in md


def test_finished_runs_are_reused(table_dir, tiny_npz, capsys):
    mtimes = {p: p.stat().st_mtime_ns for p in (table_dir / "runs").glob("*/metrics.json")}
    assert len(mtimes) == 4
    assert main(args(table_dir, tiny_npz, "--rows", "DRMM,+KL+NN", "--seeds", "0,1")) == 0
    assert capsys.readouterr().out.count("finished earlier, reused") == 4
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_a_second_command_adds_rows_to_the_table(table_dir, tiny_npz, tmp_path):
    out = tmp_path / "grown"
    shutil.copytree(table_dir, out)
    before = read_csv(out)
    assert main(args(out, tiny_npz, "--rows", "+KL", "--seeds", "0")) == 0
    after = read_csv(out)
    assert list(after) == ["DRMM", "+KL", "+KL+NN"]  # the paper's row order
    assert after["+KL"]["n_seeds"] == "1" and after["+KL"]["err_end_std"] == ""
    assert after["DRMM"] == before["DRMM"] and after["+KL+NN"] == before["+KL+NN"]


def test_an_interrupted_table_resumes(table_dir, tiny_npz, tmp_path, monkeypatch, capsys):
    """Interrupted in epoch 2 of its first run, the table continues from that run's checkpoint
    and ends with the numbers of an uninterrupted run."""
    out = tmp_path / "interrupted"
    real_confusion, calls = drmm.train.confusion, []

    def interrupt_second_evaluation(*a, **kw):
        calls.append(1)
        if len(calls) == 2:  # the end of epoch 2, before its checkpoint
            raise KeyboardInterrupt
        return real_confusion(*a, **kw)

    monkeypatch.setattr(drmm.train, "confusion", interrupt_second_evaluation)
    assert main(args(out, tiny_npz, "--rows", "DRMM", "--seeds", "0")) == 130
    run = out / "runs" / "drmm-nl50-seed0"
    assert (run / "checkpoint.pt").is_file() and not (run / "metrics.json").exists()
    assert main(args(out, tiny_npz, "--rows", "DRMM", "--seeds", "0")) == 0
    assert "resuming" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]  # epoch 1 was not trained again
    resumed, whole = run_metrics(out, "drmm-nl50-seed0"), run_metrics(table_dir,
                                                                      "drmm-nl50-seed0")
    assert resumed["test_error_percent_by_epoch"] == whole["test_error_percent_by_epoch"]


def test_other_settings_in_the_same_out_are_refused(table_dir, tiny_npz, capsys):
    # the later --epochs wins in argparse: 3 epochs where the table's runs had 2
    assert main(args(table_dir, tiny_npz, "--rows", "DRMM", "--seeds", "0", "--epochs", "3")) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "epochs" in err and len(err.strip().splitlines()) == 1


def test_unlabeled_subset_for_a_convlarge_table(tiny_npz, tmp_path):
    out = tmp_path / "t4"
    argv = ["reproduce", "table4", "--out", str(out), "--dataset", f"npz:{tiny_npz}", "--arch",
            "conv_tiny", "--epochs", "1", "--labels", "20", "--unlabeled", "60", "--seeds", "3",
            "--rows", "+KL+NN", "--no-tensorboard", "--quiet"]
    assert main(argv) == 0
    run = out / "runs" / "kl-nn-nl20-seed3"
    info = json.loads((run / "run_info.json").read_text())
    assert info["unlabeled"] == 60 and info["table"] == "table4"
    labeled = np.load(run / "labeled_indices.npy")
    assert len(labeled) == 20 and labeled.max() < 60  # drawn from the 60-image subset
    config = json.loads((run / "config.json").read_text())
    assert config["loss"]["alpha_rc"] == 0.5 and config["train"]["preprocess"] == "standardize"
    row = read_csv(out)["+KL+NN"]
    assert row["unlabeled"] == "60" and row["paper_err"] == ""  # the paper has no N_L = 20


def test_dry_run_trains_nothing(tiny_npz, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(args(out, tiny_npz, "--seeds", "0", "--dry-run")) == 0
    listed = capsys.readouterr().out.split()
    assert listed.count("todo") == 4 and not (out / "runs").exists()


@pytest.mark.parametrize("extra, message", [
    (["--rows", "DRMM,+XY"], "no row '\\+XY'"),
    (["--seeds", "0,a"], "comma-separated integers"),
    (["--labels", "0"], "at least 1"),
])
def test_bad_selections(tiny_npz, tmp_path, capsys, extra, message):
    assert main(args(tmp_path / "bad", tiny_npz, *extra)) == 2
    assert re.search(message, capsys.readouterr().err)


def test_paper_table2_is_table1_differences():
    t1 = TABLES["table1"]
    for row, reductions in t1.derived.items():
        for n, value in reductions.items():
            assert round(t1.paper["DRMM"][n] - t1.paper[row][n], 2) == pytest.approx(value)
