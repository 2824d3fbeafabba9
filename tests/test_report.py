"""What a run shows a person: metrics.json's readable fields (and older runs' migrated),
report.html at the end of training and from `drmm report`, TensorBoard's pictures."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_dataset, tiny_train, write_npz, write_yaml

import drmm
from drmm import figures
from drmm.board import FIGURE_SHARE, RENDERED, RENDERED_WIDTH, Board
from drmm.cli import main
from drmm.evaluate import confusion
from drmm.losses import TERMS
from drmm.metrics import METRICS_FORMAT, migrate, read_metrics
from drmm.report import SHOWN
from drmm.train import train


class Page(HTMLParser):
    """The report's tables (rows of cell texts), its images (alt texts) and the error span."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.error, self._cell, self._in_error = [], [], None, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append((a.get("alt"), a.get("src", "")))
        elif tag == "span" and a.get("id") == "test-error":
            self._in_error = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_error:
            self.error, self._in_error = data, False


def table_with(page: Page, first_header: str) -> list[list[str]]:
    return next(t for t in page.tables if t and t[0][0] == first_header)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    cfg = tiny_config()
    cfg.train.report = True
    train(cfg, out, data=tiny_dataset(), progress=False)
    return out


# ----------------------------------------------------------------------------------------------
# metrics.json


def test_metrics_json_reads_as_the_terminal_printed_it(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    history = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["format"] == METRICS_FORMAT
    assert metrics["test_error_percent"] == pytest.approx(100 * history[-1]["test_error"])
    assert metrics["test_error_percent_by_epoch"] == pytest.approx(
        [100 * r["test_error"] for r in history])
    true, pred, count = history[-1]["worst_confusion"]  # the log keeps the indices
    names = ["0", "1", "2", "3"]
    assert metrics["worst_confusion"] == {"true": names[true], "predicted": names[pred],
                                          "count": count}
    assert read_metrics(tiny_run) == metrics  # the current format reads back as it is


def test_an_older_metrics_json_migrates(tmp_path):
    old = {"test_error": 0.076, "best_test_error": 0.05, "worst_confusion": [3, 1, 8],
           "test_error_curve": [0.25, 0.076], "epochs": 2, "wall_seconds": 10.0}
    new = migrate(old, ["cat", "dog", "eel", "fox"])
    assert new == {"format": 2, "test_error_percent": 7.6, "best_test_error_percent": 5.0,
                   "worst_confusion": {"true": "fox", "predicted": "dog", "count": 8},
                   "test_error_percent_by_epoch": [25.0, 7.6], "epochs": 2,
                   "wall_seconds": 10.0}
    assert migrate(old)["worst_confusion"] == {"true": "3", "predicted": "1", "count": 8}
    (tmp_path / "metrics.json").write_text(json.dumps({**old, "test_error": None,
                                                       "worst_confusion": None}))
    assert read_metrics(tmp_path)["test_error_percent"] is None  # a run without a test set
    (tmp_path / "metrics.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(drmm.errors.DRMMError, match="newer"):
        read_metrics(tmp_path)


# ----------------------------------------------------------------------------------------------
# report.html


def test_report_at_the_end_of_training(tiny_run):
    page = Page((tiny_run / "report.html").read_text())
    metrics = read_metrics(tiny_run)
    assert page.error == f"{metrics['test_error_percent']:.2f}"
    # the per-class table is the model's own predictions on the test images
    data = tiny_dataset()
    pred = drmm.load(tiny_run).predict(data.x_test[:]).classes.numpy()
    y = data.y_test.numpy()
    rows = {r[0]: r for r in table_with(page, "class")[1:]}
    for c in range(4):
        recall = (pred[y == c] == c).mean()
        assert float(rows[str(c)][2]) == pytest.approx(recall, abs=1e-4)
        assert int(rows[str(c)][4]) == (y == c).sum()
    confused = [alt for alt, _ in page.images if alt.startswith("true ")]
    assert len(confused) == min(SHOWN, int((pred != y).sum()))
    novel = [alt for alt, _ in page.images if alt.startswith("novelty ")]
    assert len(novel) == min(SHOWN, len(y))
    alts = {alt for alt, _ in page.images}
    assert {"confusion matrix", "learning curves", "renderings"} <= alts
    assert all(src.startswith("data:image/png;base64,") for _, src in page.images)
    # the preset's settings that the run changed, and only those
    changed = {r[0] for r in table_with(page, "setting")[1:]}
    assert {"model.arch", "train.labels", "train.epochs"} <= changed
    assert "model.num_classes" not in changed and "train.seed" not in changed


def test_curves_plot_every_logged_term_of_the_objective():
    history = [{"epoch": e, "test_error": 0.5 / e, "train_loss": 1.0 / e, "train_ce": 0.5,
                "train_kl": -0.1, "train_extra": 2.0} for e in (1, 2, 3)]
    assert figures.loss_terms(history) == ["loss", "ce", "kl", "extra"]
    assert list(TERMS).index("ce") < list(TERMS).index("kl")  # the objective's order
    fig = figures.curves_figure(history)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["test error, %", "train loss", "train ce", "train kl", "train extra"]
    no_test = [{k: v for k, v in r.items() if k != "test_error"} for r in history]
    assert "test error, %" not in [ax.get_title() for ax in figures.curves_figure(no_test).axes]


def test_drmm_report_rewrites_an_older_run(tiny_run, tmp_path, capsys):
    """An older run: format-1 metrics.json, no report, no novelty scales stored."""
    old = tmp_path / "old"
    old.mkdir()
    for name in ("metrics.jsonl", "config.json"):
        (old / name).write_bytes((tiny_run / name).read_bytes())
    m = read_metrics(tiny_run)
    (old / "metrics.json").write_text(json.dumps({"test_error": m["test_error_percent"] / 100,
                                                  "worst_confusion": None, "epochs": 2}))
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    for key in ("novelty_score", "novelty_scale", "novelty_scales"):
        state.pop(key, None)
    torch.save(state, old / "checkpoint.pt")
    # a run of a Dataset built in Python: `drmm report` cannot load its data, and says so
    assert main(["report", str(old)]) == 0
    captured = capsys.readouterr()
    assert "cannot be loaded" in captured.err and str(old / "report.html") in captured.out
    page = Page((old / "report.html").read_text())
    assert page.error == f"{m['test_error_percent']:.2f}"
    assert "learning curves" in {alt for alt, _ in page.images}


def test_drmm_report_of_an_npz_run_without_a_test_set(tmp_path, capsys):
    arrays = dict(np.load(write_npz(tmp_path / "d.npz")[4:]))
    y = arrays["y_train"].copy()
    y[8:] = -1  # 8 labeled images, the rest unlabeled
    np.savez(tmp_path / "d.npz", x_train=arrays["x_train"], y_train=y)
    run = tmp_path / "run"
    assert main(tiny_train(f"npz:{tmp_path / 'd.npz'}", run, write_yaml(tmp_path), "--labels",
                           "8")) == 0
    assert not (run / "report.html").exists()  # switched off for the tests' runs
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text()
    page = Page(text)
    assert page.error is None and "no test set" in text
    counts = table_with(page, "class")[1:]
    assert sum(int(r[1]) for r in counts) == 8 and sum(int(r[2]) for r in counts) == 72
    assert len([a for a, _ in page.images if a.startswith("margin") or "?" in a]) == SHOWN


def test_drmm_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no checkpoint.pt" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.txt")]) == 2
    assert "must end in .html" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# TensorBoard


def test_board_draws_the_pictures_within_its_time_share(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tiny_dataset()
    model = drmm.DRMM(drmm.ModelConfig(arch="conv_tiny", in_channels=1, image_size=8,
                                       num_classes=4))
    board = Board(str(tmp_path / "tb"))
    counts = confusion(model, data.x_test[:], data.y_test)  # (K, K) the epoch's evaluation
    args = (counts, model, data.x_test[:], ["a", "b", "c", "d"])
    assert board.epoch_figures({"epoch": 1, "wall_seconds": 1.0}, *args, last=False)
    spent = board.figure_seconds
    # within the share: drawn; past it: skipped, unless it is the last epoch
    assert board.epoch_figures({"epoch": 2, "wall_seconds": spent / FIGURE_SHARE}, *args,
                               last=False)
    assert not board.epoch_figures({"epoch": 3, "wall_seconds": 1e-9}, *args, last=False)
    assert board.epoch_figures({"epoch": 4, "wall_seconds": 1e-9}, *args, last=True)
    board.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    for tag in ("figures/confusion_matrix", "figures/renderings"):
        assert [e.step for e in events.Images(tag)] == [1, 2, 4]
    width = events.Images("figures/renderings")[0].width  # scaled up whole pixels, not past
    assert RENDERED * 8 < width <= RENDERED_WIDTH


def test_report_of_a_supervised_only_run_says_what_it_cannot_show(tmp_path):
    cfg = tiny_config(supervised_only=True)
    cfg.train.report = True
    train(cfg, tmp_path / "run", data=tiny_dataset(), progress=False)
    text = (tmp_path / "run" / "report.html").read_text()
    assert "supervised-only run" in text and "1 - max q(c|I)" in text  # softmax novelty
    page = Page(text)
    assert "renderings" not in {alt for alt, _ in page.images}
    assert len([a for a, _ in page.images if a.startswith("novelty ")]) == SHOWN
