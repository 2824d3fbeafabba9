"""RUN_DIR/report.html: what a run learned, on one page a person opens in a browser.

    drmm report runs/digits            # any run folder, older ones included

Written at the end of training, and by `drmm report RUN` for any run. The page holds: the data,
the preset and the settings that differ from it, the training time and precision; the test
error (metrics.json's, drmm/metrics.py) and the largest mix-up; a per-class table (precision,
recall, F1, support: scikit-learn's classification_report) and the confusion matrix; the
learning curves (test error and every loss term per epoch, from metrics.jsonl); test images
beside their renderings (the top-down pass of section 4.1 from the predicted class); the test
images misclassified with the highest confidence (true and predicted class under each); and the
most novel test images (the run's novelty score, drmm/scores.py, over its training 99th
percentile, as `drmm predict`'s column). A run without a test set shows what needs no labels:
its unlabeled training images' predicted classes, the least certain of them (what `drmm suggest`
ranks first), the most novel, and renderings. Pictures are embedded (drmm/html_page.py).

One pass of the model over the shown images gives the classes, probabilities and rendering
errors: a report of a digits run took 1-2 s on our 2-core machine (500 test images).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report

from drmm import figures, html_page, scores
from drmm.checkpoint import CHECKPOINT, load_checkpoint, load_trained_model
from drmm.config import PRESETS, Config, apply_overrides
from drmm.data import UNLABELED, Images
from drmm.errors import DRMMError, require_device
from drmm.evaluate import count_confusion, error_rate, reconstruct
from drmm.files import atomic_write, check_out_file
from drmm.metrics import METRICS, percent, read_metrics
from drmm.predictor import stored_novelty
from drmm.suggest import load_training_set

REPORT = "report.html"  # the file inside a run folder
SHOWN = 16  # images in each gallery (most confused, most novel, least certain)
RENDERED = 10  # images shown above their renderings
RENDERED_WIDTH = 800  # CSS pixels the renderings picture is scaled up to, at most
UNLABELED_SCORED = 5000  # at most this many unlabeled training images scored without a test set
# Settings the data fills in (drmm.train.prepare), not chosen: never listed as differences.
READ_OFF_DATA = frozenset({"model.in_channels", "model.image_size", "model.num_classes"})


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write RUN/report.html: what a run learned",
                              description=__doc__.splitlines()[0])
    p.add_argument("run", help="a drmm run folder (or its checkpoint.pt)")
    p.add_argument("--out", help="the HTML file to write (default: RUN/report.html)")
    p.add_argument("--data-dir", help="local copies of a built-in data set (default: the run's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=cmd_report)


@dataclass
class RunData:
    """The images a report shows, preprocessed as the run trained on them, on any device."""

    x_train: Images | torch.Tensor  # (N, C, H, W)
    y_train: torch.Tensor  # (N,) 0..K-1, or -1: unlabeled
    x_test: Images | torch.Tensor | None  # (M, C, H, W), or None: no test set
    y_test: torch.Tensor | None  # (M,)
    class_names: list[str]
    labeled: np.ndarray  # (N_L,) indices of the labeled training images


@dataclass
class Scored:
    """One pass of the model over the images a report shows (test, or unlabeled training)."""

    x: Images | torch.Tensor  # (M, C, H, W) the images scored
    true: np.ndarray | None  # (M,) their classes, or None: unlabeled
    probs: np.ndarray  # (M, K) q(c|I)
    novelty: np.ndarray  # (M,) the run's novelty score, over its training 99th percentile
    novelty_words: str  # what the novelty score is

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)  # (M,)


# ----------------------------------------------------------------------------------------------
# Writing the page


def write_report(out: Path, model, cfg: Config, data: RunData | None, history: list[dict],
                 metrics: dict | None, state: dict | None = None, note: str = "",
                 path: Path | None = None) -> Path:
    """Write the run's report (RUN/report.html, or `path`). data None: the data could not be
    loaded (`note` says why); the page then shows the settings and the curves. state: the
    run's checkpoint (read from RUN when not given), for its novelty scale."""
    started = time.perf_counter()
    state = state if state is not None else load_checkpoint(out / CHECKPOINT)
    sections = [header(out, cfg, data, history, metrics)]
    if note:
        sections.append(f'<p class="note">{escape(note)}</p>')
    if data is not None:
        scored = score(model, cfg, data, state)
        if scored.true is not None:
            sections += test_sections(scored, data.class_names, metrics)
        else:
            sections += unlabeled_sections(scored, data)
    sections.append(curves_section(history))
    if data is not None:
        sections.append(renderings_section(model, cfg, data))
    sections.append(f'<p class="note">Written by drmm report in'
                    f' {time.perf_counter() - started:.1f} s.</p>')
    path = path or out / REPORT
    text = html_page.page(f"drmm run {out.name}", sections)
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def used_precision(setting: str, history: list[dict], metrics: dict | None) -> str:
    """The precision the run computed in, and why (metrics.json, or the last epoch's record);
    the setting alone for a run from before records named it."""
    if metrics and metrics.get("precision"):
        return f"{metrics['precision']} ({metrics.get('precision_reason', setting)})"
    if history and history[-1].get("precision"):
        return f"{history[-1]['precision']} (--precision {setting})"
    return setting


def header(out: Path, cfg: Config, data: RunData | None, history: list[dict],
           metrics: dict | None) -> str:
    """The run in words: data, preset and what differs from it, time and precision, error."""
    t = cfg.train
    m = cfg.model
    rows = [["data set", t.dataset],
            ["images", f"{m.in_channels} x {m.image_size} x {m.image_size} (C x H x W)"],
            ["classes", f"{m.num_classes}"
             + (f": {', '.join(data.class_names)}" if data is not None else "")]]
    if data is not None:
        rows += [["training images", f"{len(data.x_train)}, {len(data.labeled)} labeled"],
                 ["test images", len(data.x_test) if data.x_test is not None else "none"]]
    done = len(history)
    wall = history[-1]["wall_seconds"] if history else 0.0
    speeds = sorted(r["images_per_s"] for r in history if "images_per_s" in r)
    rows += [["epochs", f"{done} of {t.epochs}" + ("" if done >= t.epochs else
                                                    " (stopped early: resume it)")],
             ["training time", duration(wall)
              + (f" ({speeds[len(speeds) // 2]:.0f} images/s)" if speeds else "")],
             ["precision, device", f"{used_precision(t.precision, history, metrics)},"
                                   f" {t.device}"],
             ["arch", m.arch + (", supervised only (no top-down pass)" if t.supervised_only
                                else "")]]
    key, changed = preset_changes(cfg)
    settings = (html_page.table(["setting", f"preset {key}", "this run"], changed)
                if changed else f"<p>Every setting is the {key} preset's.</p>")
    return (f"<h1>drmm run {escape(str(out))}</h1>{error_line(history, metrics)}"
            f"{html_page.table(['', ''], rows)}<h2>Preset and settings</h2>{settings}")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def error_line(history: list[dict], metrics: dict | None) -> str:
    """The test error as metrics.json records it (the last epoch's before it is written)."""
    pct = metrics["test_error_percent"] if metrics else (
        percent(history[-1]["test_error"]) if history else None)
    if pct is None:
        return '<p class="big">no test set</p>'
    line = f'<p class="big">test error <span id="test-error">{pct:.2f}</span> %</p>'
    worst = (metrics or {}).get("worst_confusion")
    if worst and worst["count"]:
        line += (f"<p>Most often: {worst['count']} test images of class"
                 f" {escape(worst['true'])} called"
                 f" {escape(worst['predicted'])}.</p>")
    return line


def preset_changes(cfg: Config) -> tuple[str, list[list[str]]]:
    """The run's preset by name, and [setting, preset's value, run's value] where they differ."""
    dataset = cfg.train.dataset
    key = dataset.split(":", 1)[0] if ":" in dataset else dataset
    if key == "folder" and cfg.model.in_channels == 3:
        key = "folder_photo"  # as drmm.config.folder_preset picks it for colour images
    if key not in PRESETS:
        return key, []
    base = Config()
    apply_overrides(base, PRESETS[key], source=f"preset {key}")
    base.train.dataset = dataset
    mine, theirs = cfg.flat(), base.flat()
    return key, [[k, repr(theirs[k]), repr(mine[k])] for k in mine
                 if k not in READ_OFF_DATA and mine[k] != theirs[k]]


# ----------------------------------------------------------------------------------------------
# Scoring


def score(model, cfg: Config, data: RunData, state: dict) -> Scored:
    """Classes, probabilities and novelty of the test images, or (no test set) of up to
    UNLABELED_SCORED unlabeled training images: one pass, in eval mode."""
    if data.x_test is not None:
        x, true = data.x_test, data.y_test.cpu().numpy()
    else:  # the images without a label (all but the labeled ones, where every one has a label)
        y = data.y_train.cpu().numpy()
        pool = np.setdiff1d(np.flatnonzero(y == UNLABELED) if (y == UNLABELED).any()
                            else np.arange(len(y)), data.labeled)
        pool = pool[scores.calibration_subset(len(pool), UNLABELED_SCORED).numpy()]
        x, true = take(data.x_train, pool), None
    renders = scores.renders(cfg) is None
    s = scores.score_images(model, x, cfg.train.eval_batch_size, render=renders)
    name, scale, _ = stored_novelty(cfg, state) or (scores.run_novelty_score(cfg), None, None)
    raw = scores.raw_novelty(name, s.logits, s.render_error).numpy()  # (M,)
    words = {"render": "rendering error under the predicted class",
             "softmax": "1 - max q(c|I)"}[name]
    if scale is None:
        words += " (raw: the run stores no training percentile)"
    return Scored(x, true, scores.probabilities(s.logits).numpy(),
                  raw / scale if scale else raw, words)


def take(x: Images | torch.Tensor, idx: np.ndarray) -> Images | torch.Tensor:
    idx = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(x.device)
    return Images(x.pixels[idx], x.preprocessor) if isinstance(x, Images) else x[idx]


def shown_pixels(x: Images | torch.Tensor, idx: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, C) of images at idx as a person sees them: the files' own pixels, or a
    float tensor's images stretched to their range."""
    part = take(x, idx)
    return figures.as_hwc(part.pixels) if isinstance(part, Images) else figures.stretched(part)


# ----------------------------------------------------------------------------------------------
# Sections


def test_sections(s: Scored, names: list[str], metrics: dict | None) -> list[str]:
    """Per-class table, confusion matrix, the most confidently wrong and most novel images."""
    k = len(names)
    pred = s.predicted
    counts = count_confusion(torch.from_numpy(s.true), torch.from_numpy(pred), k)  # (K, K)
    here = percent(error_rate(counts))
    recorded = metrics["test_error_percent"] if metrics else None
    note = ("" if recorded is None or abs(here - recorded) < 5e-3 else
            f'<p class="note">Recomputed here: {here:.2f} % (another machine or library can'
            " flip a near tie).</p>")
    per_class = classification_report(s.true, pred, labels=list(range(k)), target_names=names,
                                       output_dict=True, zero_division=0)
    rows = [[c, per_class[c]["precision"], per_class[c]["recall"], per_class[c]["f1-score"],
             int(per_class[c]["support"])] for c in [*names, "macro avg", "weighted avg"]]
    table = html_page.table(["class", "precision", "recall", "F1", "support"], rows)
    matrix = figures.figure_png(figures.confusion_figure(counts.numpy(), names))
    conf = s.probs[np.arange(len(pred)), pred]  # (M,) probability of the predicted class
    wrong = np.flatnonzero(pred != s.true)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:SHOWN]
    confused = gallery(s.x, wrong, [[f"true {names[s.true[i]]}",
                                     f"called {names[pred[i]]} ({conf[i]:.2f})"] for i in wrong])
    novel = np.argsort(-s.novelty, kind="stable")[:SHOWN]
    novel_tiles = gallery(s.x, novel, [[f"novelty {s.novelty[i]:.2f}",
                                        f"{names[pred[i]]} (true {names[s.true[i]]})"]
                                       for i in novel])
    return [f"<h2>Per class ({len(pred)} test images)</h2>{note}{table}",
            "<h2>Confusion matrix</h2>"
            + html_page.img(matrix, "confusion matrix", "figure"),
            f"<h2>Most confused test images</h2><p>The misclassified test images the model was"
            f" surest of, with its probability.</p>{confused or '<p>None: no mistakes.</p>'}",
            f"<h2>Most novel test images</h2><p>Novelty: {s.novelty_words}; above 1, less"
            f" typical than 99 % of the training images.</p>{novel_tiles}"]


def unlabeled_sections(s: Scored, data: RunData) -> list[str]:
    """Without a test set: predicted classes, least certain and most novel unlabeled images."""
    names = data.class_names
    pred = s.predicted
    y = data.y_train.cpu().numpy()
    labeled_counts = np.bincount(y[data.labeled], minlength=len(names))
    predicted_counts = np.bincount(pred, minlength=len(names))
    rows = [[c, int(labeled_counts[i]), int(predicted_counts[i])] for i, c in enumerate(names)]
    top2 = np.sort(s.probs, axis=1)[:, -2:]  # (M, 2)
    margin = top2[:, 1] - top2[:, 0]  # (M,)
    unsure = np.argsort(margin, kind="stable")[:SHOWN]
    novel = np.argsort(-s.novelty, kind="stable")[:SHOWN]
    return [f"<h2>No test set</h2><p>Without labeled test images there is no error to show:"
            f" below, {len(pred)} unlabeled training images as the model sees them.</p>"
            + html_page.table(["class", "labeled images", "unlabeled predicted as it"], rows),
            "<h2>Least certain unlabeled images</h2><p>Smallest margin between the two likeliest"
            " classes: what <code>drmm suggest</code> ranks first.</p>"
            + gallery(s.x, unsure, [[f"{names[pred[i]]}?", f"margin {margin[i]:.2f}"]
                                    for i in unsure]),
            f"<h2>Most novel unlabeled images</h2><p>Novelty: {s.novelty_words}.</p>"
            + gallery(s.x, novel, [[f"novelty {s.novelty[i]:.2f}", names[pred[i]]]
                                   for i in novel])]


def gallery(x, idx: np.ndarray, captions: list[list[str]]) -> str:
    if not len(idx):
        return ""
    pixels = shown_pixels(x, idx)  # (n, H, W, C)
    return html_page.gallery([html_page.tile(figures.png_bytes(p), c, " ".join(c))
                              for p, c in zip(pixels, captions, strict=True)])


def curves_section(history: list[dict]) -> str:
    fig = figures.curves_figure(history)
    if fig is None:
        return "<h2>Learning curves</h2><p>No epoch finished yet.</p>"
    return ("<h2>Learning curves</h2><p>Per epoch: the test error and each term of the"
            " objective (mean over the epoch's steps; <code>loss</code> is their weighted"
            " sum).</p>" + html_page.img(figures.figure_png(fig), "learning curves", "figure"))


def renderings_section(model, cfg: Config, data: RunData) -> str:
    """The first images (test, else training) above their renderings I-hat."""
    x = data.x_test if data.x_test is not None else data.x_train
    idx = np.arange(min(RENDERED, len(x)))
    if scores.renders(cfg) is not None:
        return (f"<h2>Renderings</h2><p>None: this run {scores.renders(cfg)}.</p>")
    rendered = figures.stretched(reconstruct(model, take(x, idx)[:]))  # (n, H, W, C)
    grid = figures.image_grid([shown_pixels(x, idx), rendered])  # (H', W', 3)
    zoom = max(1, RENDERED_WIDTH // grid.shape[1])  # whole pixels: crisp
    return ("<h2>Images and their renderings</h2><p>Top: images; bottom: the top-down"
            " rendering from the predicted class with the image's own switches (each scaled to"
            " its range).</p>"
            + html_page.img(figures.png_bytes(grid), "renderings", "figure",
                            width=zoom * grid.shape[1]))


# ----------------------------------------------------------------------------------------------
# `drmm report RUN`


def cmd_report(args) -> int:
    run = Path(args.run)
    run = run.parent if run.is_file() else run
    path = check_out_file(args.out or run / REPORT, suffix=".html")
    require_device(args.device)
    model, cfg, state = load_trained_model(run)
    model = model.to(args.device)
    metrics = read_metrics(run, [str(c) for c in state.get("class_names", [])] or None) \
        if (run / METRICS).is_file() else None
    data, note = None, ""
    try:
        ts = load_training_set(cfg, state, args.data_dir or cfg.train.data_dir,
                               verify=cfg.train.verify)
        model.check_input(ts.data.x_train[:1])
        d = ts.data
        data = RunData(d.x_train.to(args.device), d.y_train,
                       d.x_test.to(args.device) if d.has_test else None, d.y_test,
                       d.class_names, ts.labeled)
    except (DRMMError, ValueError) as e:
        note = (f"The run's data ({cfg.train.dataset}) cannot be loaded or does not fit the"
                f" model ({e}); the report shows its settings and curves only.")
        print(f"drmm: note: {note}", file=sys.stderr)
    written = write_report(run, model, cfg, data, run_history(run, state), metrics, state,
                           note, path)
    print(f"wrote {written}")
    return 0


def run_history(run: Path, state: dict) -> list[dict]:
    """The per-epoch records: metrics.jsonl (a repeated epoch: the last line wins), else the
    checkpoint's history."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        records = {r["epoch"]: r for r in map(json.loads, filter(str.strip, lines))}
        return [records[e] for e in sorted(records)]
    except (OSError, ValueError, KeyError):
        return list(state.get("history", []))

