"""`drmm suggest`: which unlabeled training images of a run to label next, as a CSV file.

    drmm suggest --checkpoint runs/photos --n 50 --out to_label.csv [--score margin]

The pool: the run's training images (its data set, loaded with its preprocessing, its
--unlabeled subset) outside its labeled_indices that carry no label; where the data set labels
every image (the built-in data sets, a fully labeled npz), every image outside labeled_indices.
Each is scored in eval mode (drmm/scores.py), and n are picked:

- `margin` (default): 1 - margin, the class uncertainty (margin: top-1 minus top-2 probability).
- `render+margin`: the mean of two ranks, the class uncertainty and the rendering error under
  the predicted class (high: the model cannot explain the image). Not the default: on the
  digits labeling loop (seeds 0-4, 50 labels + 50 suggested) it ended at 0.72 % mean test error
  against 0.36 % for margin alone and 0.32 % for random (results/label_loop.md): the rendering
  signal added nothing. Refused for a run that never learned to render (--supervised-only, or
  --no-rc).
- `entropy`: the entropy of q(c|I).
- `random`: a uniform random draw (--seed), the baseline (no diversity step).

Diversity (every score but random): per-class quotas over the predicted classes
(scores.per_class_quota): a round robin in which each predicted class gives its best-scored
image in turn, so the n images spread over every class the model predicts (n / K each, more
where a class runs out) instead of n variants of one confusion; quotas rather than k-center on
the penultimate features, because they also keep a per-class bias of the rendering error (some
classes draw more ink, so render worse) from filling the list with one class. Rows are in the
order picked (`rank` 1..n): labeling only the first m keeps the spread.

The CSV (written atomically, its text cells as drmm predict writes them: drmm.files.csv_cell):
`image` (for a folder:DIR run the file's path relative to DIR, as the run's data names it; else
the training-set index), `predicted` (class name), `margin`, `render_error` (empty for a run
that never learned to render), `score` (what was ranked: higher = more worth labeling), `rank`
(the row number) and `label`, empty, for the person who labels them. Beside it, contact sheets
to label them by eye (to_label.png and to_label.html, drmm/contact_sheet.py): each image with
its row number and predicted class. For folder data: fill the label column, and `drmm label
to_label.csv --folder DIR` (drmm/label.py) moves each labeled file into DIR/labeled/<label>/;
train again. For every other data set an .npy beside the CSV (to_label.npy) holds the union of
the run's labeled indices and the suggested ones, for `drmm train ... --labeled-indices
to_label.npy`: with a built-in data set the true labels of the suggested images already exist,
so this simulates a labeler (benchmarks/own_data/label_loop.py); with an npz, label those images
in y_train first. (Folder data gets no .npy: moving the files changes the training set's
order.) Neither file may replace a file of a run (RUN/labeled_indices.csv would write
RUN/labeled_indices.npy): refused before anything is loaded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drmm import scores
from drmm.checkpoint import load_trained_model
from drmm.contact_sheet import write_contact_sheets
from drmm.data import UNLABELED, Dataset, load_run_data, training_subset
from drmm.data.images import Images, take
from drmm.errors import DRMMError, require_device
from drmm.files import atomic_write, check_out_file, csv_cell, csv_stream
from drmm.run_folder import refuse_run_files

SCORES = ("render+margin", "margin", "entropy", "random")
DEFAULT_SCORE = "margin"  # the labeling loop's measurement: results/label_loop.md


def register(subparsers) -> None:
    p = subparsers.add_parser("suggest", help="suggest which unlabeled images to label next",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a drmm run folder or its checkpoint.pt")
    p.add_argument("--n", type=int, default=50, help="images to suggest (default 50)")
    p.add_argument("--out", required=True, help="the CSV file to write (and FILE.npy beside it)")
    p.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE,
                   help=f"what ranks the images (default {DEFAULT_SCORE})")
    p.add_argument("--data-dir", help="local copies of a built-in data set (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seeds --score random (default 0)")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.set_defaults(func=cmd_suggest)


# ----------------------------------------------------------------------------------------------
# The run's training set and its pool


@dataclass
class TrainingSet:
    """The run's training images as it trained on them, and what names each."""

    data: Dataset  # preprocessed with the run's statistics; x_train cut to its --unlabeled
    names: list[str]  # (N,) per training image: its path relative to DIR (folder), or index
    labeled: np.ndarray  # (N_L,) the run's labeled_indices
    folder: Path | None  # DIR of a folder:DIR run, else None

    def pool(self) -> np.ndarray:
        """Sorted indices of the images that may be suggested (see the module's docstring)."""
        y = self.data.y_train.numpy()
        free = np.ones(len(y), dtype=bool)
        free[self.labeled] = False
        if (y == UNLABELED).any():
            free &= y == UNLABELED
        return np.flatnonzero(free)


def load_training_set(cfg, state: dict, data_dir=None, verify: bool = True) -> TrainingSet:
    """The run's training set (load_run_data, with the run's --unlabeled subset), checked
    against the checkpoint's image count and labeled indices."""
    name = cfg.train.dataset
    data = load_run_data(cfg, state, name, data_dir, verify=verify)
    n_all = len(data.x_train)
    names = data.paths_train or [str(i) for i in range(n_all)]
    folder = Path(name[len("folder:"):]) if name.startswith("folder:") else None
    u = cfg.train.unlabeled
    if u is not None and u < n_all:  # the run trained on a seeded subset: index that
        keep = training_subset(n_all, u, cfg.train.seed)
        data.x_train, data.y_train = take(data.x_train, keep), data.y_train[keep]
        names = [names[i] for i in keep]
    n_train = state.get("n_train")
    if n_train is not None and n_train != len(data.x_train):
        raise DRMMError(f"the run trained on {n_train} images of {name} and it now has"
                        f" {len(data.x_train)}: the data changed since; suggest from a run"
                        " trained on the data as it is")
    labeled = np.asarray(state.get("labeled_indices", torch.zeros(0)), dtype=np.int64)
    if len(labeled) and labeled.max() >= len(data.x_train):
        raise DRMMError(f"the run's labeled indices go up to {labeled.max()} but {name} has"
                        f" {len(data.x_train)} training images; the checkpoint is damaged")
    return TrainingSet(data, names, labeled, folder)


# ----------------------------------------------------------------------------------------------
# Scoring and picking


@dataclass
class Suggestions:
    """n training images to label, in the order picked."""

    indices: np.ndarray  # (n,) training-set indices
    predicted: np.ndarray  # (n,) predicted classes
    margin: np.ndarray  # (n,) top-1 minus top-2 probability
    render_error: np.ndarray | None  # (n,) err(I), or None: the run never learned to render
    score: np.ndarray  # (n,) what was ranked: higher = more worth labeling
    pool_size: int  # images the n were picked from


def check_score(score: str, cfg, where: str = "the run") -> None:
    """Refuse a score the run cannot give: one line naming the fix."""
    if score not in SCORES:
        raise DRMMError(f"--score {score}: use one of {', '.join(SCORES)}")
    why = scores.renders(cfg)
    if score == "render+margin" and why is not None:
        raise DRMMError(f"{where} {why}, so its rendering error means nothing; pass --score"
                        " margin (or entropy, random)")


def suggest(model, cfg, x_train: Images | torch.Tensor, pool: np.ndarray, n: int,
            score: str = DEFAULT_SCORE, batch_size: int = 500, device="cpu", seed: int = 0
            ) -> Suggestions:
    """Pick n of the training images at positions `pool` (x_train preprocessed as the run's)
    by `score` (SCORES), with per-class quotas over the predicted classes (not for random)."""
    check_score(score, cfg)
    pool = np.asarray(pool, dtype=np.int64)
    if n < 1:
        raise DRMMError(f"--n {n}: suggest at least 1 image")
    if n > len(pool):
        raise DRMMError(f"--n {n} is more than the {len(pool)} unlabeled training images of the"
                        " run; ask for fewer")
    can_render = scores.renders(cfg) is None
    s = scores.score_images(model, take(x_train, torch.from_numpy(pool)), batch_size,
                            render=can_render, device=device)
    margin = scores.margin(s.logits).numpy()  # (P,)
    err = s.render_error.double().numpy() if can_render else None  # (P,)
    predicted = s.logits.argmax(dim=1).numpy()  # (P,)
    if score == "render+margin":
        value = scores.rank_average(-margin, err)  # (P,) uncertain and badly rendered: high
    elif score == "margin":
        value = 1.0 - margin
    elif score == "entropy":
        value = scores.entropy(s.logits).numpy()
    else:  # random: a uniform draw of n, taken in the draw's order
        value = np.random.default_rng(seed).random(len(pool))
    picked = (np.argsort(-value, kind="stable")[:n] if score == "random"
              else scores.per_class_quota(value, predicted, n))  # (n,) positions in the pool
    return Suggestions(indices=pool[picked], predicted=predicted[picked],
                       margin=margin[picked], render_error=None if err is None else err[picked],
                       score=value[picked], pool_size=len(pool))


# ----------------------------------------------------------------------------------------------
# Files


def write_csv(path: Path, sug: Suggestions, names: list[str], class_names: list[str]) -> None:
    def write(f) -> None:
        text = csv_stream(f)
        rows = csv.writer(text)
        rows.writerow(["image", "predicted", "margin", "render_error", "score", "rank", "label"])
        errs = sug.render_error if sug.render_error is not None else [None] * len(sug.indices)
        for rank, (i, c, m, e, v) in enumerate(zip(sug.indices, sug.predicted, sug.margin, errs,
                                                   sug.score, strict=True), start=1):
            rows.writerow([csv_cell(names[i]), csv_cell(class_names[c]), f"{m:.6f}",
                           "" if e is None else f"{e:.6g}", f"{v:.6f}", rank, ""])
        text.flush()
        text.detach()  # leave f open: atomic_write flushes, syncs and renames it

    atomic_write(path, write)


def labeled_union(labeled: np.ndarray, sug: Suggestions) -> np.ndarray:
    """The run's labeled indices and the suggested ones, sorted, int64."""
    return np.union1d(np.asarray(labeled, dtype=np.int64), sug.indices).astype(np.int64)


def write_indices(path: Path, indices: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, indices))


def cmd_suggest(args) -> int:
    out = check_out_file(args.out, suffix=".csv")  # before any loading
    refuse_run_files([out, out.with_suffix(".npy")], "--out")  # never over a run's own files
    if args.n < 1:
        raise DRMMError(f"--n {args.n}: suggest at least 1 image")
    if args.batch_size < 1:
        raise DRMMError(f"--batch-size {args.batch_size} must be at least 1")
    require_device(args.device)
    model, cfg, state = load_trained_model(args.checkpoint)
    check_score(args.score, cfg, where=str(args.checkpoint))
    data_dir = args.data_dir if args.data_dir is not None else cfg.train.data_dir
    ts = load_training_set(cfg, state, data_dir, verify=cfg.train.verify)
    try:
        model.check_input(ts.data.x_train[:1])
    except ValueError as e:
        raise DRMMError(f"{args.checkpoint} does not fit its data set {cfg.train.dataset} as it"
                        f" is now ({e})") from e
    pool = ts.pool()
    if args.n > len(pool):
        raise DRMMError(f"--n {args.n} is more than the {len(pool)} unlabeled training images of"
                        f" {args.checkpoint}; ask for fewer")
    model = model.to(args.device)
    sug = suggest(model, cfg, ts.data.x_train, pool, args.n, args.score, args.batch_size,
                  args.device, args.seed)
    write_csv(out, sug, ts.names, ts.data.class_names)
    pixels = ts.data.x_train.pixels[torch.from_numpy(sug.indices)]  # (n, C, H, W) uint8
    write_contact_sheets(out, pixels.permute(0, 2, 3, 1).numpy(),
                         [ts.names[i] for i in sug.indices],
                         [ts.data.class_names[c] for c in sug.predicted])
    classes = len(np.unique(sug.predicted))
    sheets = f" (and {out.with_suffix('.png')}, {out.with_suffix('.html')} to look at)"
    if ts.folder is not None:
        then = (f"{sheets}; fill its label column, then drmm label {out} --folder {ts.folder}"
                " moves each into labeled/<label>/; train again")
    else:
        npy = out.with_suffix(".npy")
        union = labeled_union(ts.labeled, sug)
        write_indices(npy, union)
        then = (f"{sheets} and {npy} ({len(union)} labeled indices: train again with"
                f" --labeled-indices {npy})")
    print(f"wrote {out}: {args.n} of {len(pool)} unlabeled images to label (score {args.score},"
          f" {classes} predicted classes){then}")
    return 0
