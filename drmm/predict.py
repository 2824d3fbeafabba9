"""`drmm predict`: class predictions of a trained run for new images, as a CSV file.

    drmm predict --checkpoint runs/mine --images new_photos/ one.png more.npz --out preds.csv
    drmm predict --checkpoint runs/mine --images photos/test --out -     # the CSV on stdout

--images takes image files, folders (every image file under them, any depth, sorted by path)
and .npz files whose `x` (or `images`, or `x_test`) array holds uint8 images (N, H, W) or
(N, H, W, C), several of each. The CSV has one row per image: `image` (its path as given; for
an npz its index, FILE.npz:INDEX where several --images are given), `true` (below), `predicted`
(the class name), `probability` (of that class), then `p_<class name>` for every class, then
`novelty`: the image's novelty score over the score's 99th percentile on the run's training
images (> 1: less typical than 99 % of them; drmm/scores.py). The score is the rendering error
under the predicted class, or 1 - max p for a run that never learned to render; the summary
line names it. When to trust it (8 models x 5 sets, results/novelty_study.md): it flags images
of another kind (noise, inverted images, another data set: AUROC 0.81-1.00 on digit models), not
rearranged images of the training kind (upside-down digits, shuffled pixels: 0.26-0.70), which
1 - max p catches better on digit models. A checkpoint from before novelty scales were stored
gets them from its training data, or no novelty column (with a note) where that cannot be
loaded.

Labeled images: a folder whose every image lies in a sub-folder named after one of the run's
classes (like DIR/test/) gives each row its `true` class, as does an npz with labels beside its
images (`y`, `labels` or `y_test`, 0..K-1); predict then prints the error on them and a
per-class table (scikit-learn's classification_report). Images of other inputs leave `true`
empty.

Images go through drmm.load(...).predict: eval mode, the run's preprocessing and resizing; a
folder's files are decoded on every core, as training decodes them; a file of another size than
the model takes (a run trained without --image-size) stops the command, naming it. The CSV file
is written atomically: an interrupted run leaves no half-written file. A text cell that a
spreadsheet would run as a formula (a file or class named `=...`, `+`, `-`, `@`) begins with a
"'", and a file name that is not UTF-8 is written as its own bytes: drmm.files.read_csv gives
both back. With `--out -` the CSV goes to
stdout as it is computed, and the summary to stderr. The progress bar is drawn on a terminal
only (drmm/progress.py).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report
from tqdm import tqdm

from drmm.data.folder import IMAGE_SUFFIXES, image_files, in_order
from drmm.data.npz import read_npz
from drmm.errors import DRMMError
from drmm.files import atomic_write, check_out_file, csv_cell, csv_stream, require_file
from drmm.predictor import Predictor, load
from drmm.progress import bar_shown

NPZ_KEYS = {"x": "y", "images": "labels", "x_test": "y_test"}  # images -> their labels, if any
NOVELTY_WORDS = {"render": "render (rendering error under the predicted class)",
                 "softmax": "softmax (1 - max p)"}
STDOUT = "-"  # --out - : the CSV on stdout


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict the classes of new images into a CSV file",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a drmm run folder or its checkpoint.pt")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH",
                   help="image files, folders of images, FILE.npz; several of each")
    p.add_argument("--out", required=True, help="the CSV file to write, or - for stdout")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


@dataclass
class Source:
    """One --images entry: its rows' names, their pixels' source, their true classes."""

    names: list[str]  # (N,) what the `image` column says
    pixels: list[Path] | np.ndarray  # files to decode, or uint8 images (N, H, W[, C])
    true: list[str] | None  # (N,) class names, or None: not known


def image_source(path: str, class_names: list[str], prefix: bool = False) -> Source:
    """A folder's image files, one image file, or an npz file's images; prefix: npz rows are
    named FILE.npz:INDEX (several --images), else INDEX."""
    p = Path(path)
    if p.is_dir():
        files = image_files(p)
        if not files:
            raise DRMMError(f"--images {p} holds no image files"
                            f" ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Source([str(f) for f in files], files, folder_classes(p, files, class_names))
    p = require_file(p, "--images", "pass image files, folders of images or .npz files")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return Source([path], [p], None)
    if p.suffix.lower() != ".npz":
        raise DRMMError(f"--images {p} is neither a folder, an image file"
                        f" ({', '.join(sorted(IMAGE_SUFFIXES))}) nor an .npz file")
    arrays = read_npz(p)
    key = next((k for k in NPZ_KEYS if k in arrays), None)
    if key is None:
        raise DRMMError(f"{p} has no {' / '.join(NPZ_KEYS)} array (it has {sorted(arrays)});"
                        " store the images under x")
    n = len(arrays[key])
    if n == 0:
        raise DRMMError(f"--images {path}: its {key} array holds no images ({arrays[key].shape});"
                        " pass a file with images")
    names = [f"{path}:{i}" if prefix else str(i) for i in range(n)]
    return Source(names, arrays[key], npz_classes(p, arrays.get(NPZ_KEYS[key]), n, class_names))


def folder_classes(folder: Path, files: list[Path], class_names: list[str]) -> list[str] | None:
    """Each file's class, where every file lies under a sub-folder named after a class of the
    run (folder/<class>/...), else None."""
    tops = [f.relative_to(folder).parts for f in files]
    if all(len(parts) > 1 and parts[0] in class_names for parts in tops):
        return [parts[0] for parts in tops]
    return None


def npz_classes(path: Path, labels, n: int, class_names: list[str]) -> list[str] | None:
    """The class names of an npz's labels (None: it has none)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    k = len(class_names)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or (
            n and (labels.min() < 0 or labels.max() >= k)):
        raise DRMMError(f"{path}: its labels must be {n} integers in 0..{k - 1} (the run's"
                        f" classes); they are {labels.dtype} {labels.shape}; drop them to"
                        " predict without")
    return [class_names[c] for c in labels.tolist()]


# ----------------------------------------------------------------------------------------------
# Predicting, row by row


def batches(predictor: Predictor, source: Source, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 batches (b, H, W[, C]) of a source, in order; files are decoded by a pool of
    threads, the next batch meanwhile."""
    if isinstance(source.pixels, np.ndarray):
        for i in range(0, len(source.pixels), batch_size):
            yield source.pixels[i:i + batch_size]
        return
    with closing(in_order(lambda p: read_image(predictor, p), source.pixels,
                          ahead=batch_size)) as files:
        while batch := list(islice(files, batch_size)):
            yield np.stack(batch)


def read_image(predictor: Predictor, path: Path) -> np.ndarray:
    """A file's uint8 pixels as the run's folder was read, checked to be the model's size."""
    x = predictor.read_file(path)  # (H, W) or (H, W, C)
    c, h, w = predictor.image_shape
    if x.shape[:2] != (h, w):
        raise DRMMError(f"{path} is {x.shape[1]}x{x.shape[0]} (width x height), the model takes"
                        f" {w}x{h} images; resize it, or train the run with --image-size so that"
                        " files of any size are fitted")
    return x


def write_rows(predictor: Predictor, sources: list[Source], text, batch_size: int,
               progress: bool) -> list[tuple[str, str]]:
    """The CSV of every source's images on the text stream; returns (true, predicted) class
    names of the images whose class is known."""
    rows = csv.writer(text)
    with_novelty = predictor.novelty_score is not None
    with_true = any(s.true is not None for s in sources)
    rows.writerow(["image", *(["true"] if with_true else []), "predicted", "probability",
                   *[csv_cell(f"p_{c}") for c in predictor.class_names],
                   *(["novelty"] if with_novelty else [])])
    known, names = [], predictor.class_names
    total = sum(len(s.names) for s in sources)
    with tqdm(total=total, disable=not bar_shown(progress), unit="img", leave=False) as bar:
        for s in sources:
            start = 0
            for batch in batches(predictor, s, batch_size):
                pred = predictor.predict(batch, batch_size)
                novelty = pred.novelty.tolist() if with_novelty else [None] * len(batch)
                end = start + len(batch)
                trues = s.true[start:end] if s.true is not None else [""] * len(batch)
                for name, true, c, p, nov in zip(s.names[start:end], trues,
                                                 pred.classes.tolist(),
                                                 pred.probabilities.tolist(), novelty,
                                                 strict=True):
                    rows.writerow([csv_cell(name), *([csv_cell(true)] if with_true else []),
                                   csv_cell(names[c]),
                                   f"{p[c]:.6f}", *[f"{v:.6f}" for v in p],
                                   *([f"{nov:.6g}"] if with_novelty else [])])
                    if true:
                        known.append((true, names[c]))
                bar.update(len(batch))
                start = end
    return known


def write_predictions(predictor: Predictor, sources: list[Source], out: Path | None,
                      batch_size: int, progress: bool) -> list[tuple[str, str]]:
    """The CSV at out (written atomically), or on stdout (out None)."""
    if out is None:
        known = write_rows(predictor, sources, sys.stdout, batch_size, progress)
        sys.stdout.flush()
        return known
    known = []

    def write(f) -> None:
        text = csv_stream(f)
        known.extend(write_rows(predictor, sources, text, batch_size, progress))
        text.flush()
        text.detach()  # leave f open: atomic_write flushes, syncs and renames it

    atomic_write(out, write)
    return known


def describe_known(known: list[tuple[str, str]], class_names: list[str]) -> str:
    """The error on the images of known class, and the per-class table."""
    true, pred = zip(*known, strict=True)
    wrong = sum(t != p for t, p in known)
    table = classification_report(true, pred, labels=class_names, zero_division=0, digits=4)
    return (f"error {100 * wrong / len(known):.2f} % on the {len(known)} images of known class"
            f" ({wrong} wrong)\n{table}")


def cmd_predict(args) -> int:
    to_stdout = args.out == STDOUT
    out = None if to_stdout else check_out_file(args.out, suffix=".csv")  # before any loading
    if args.batch_size < 1:
        raise DRMMError(f"--batch-size {args.batch_size} must be at least 1")
    predictor = load(args.checkpoint, args.device)
    if predictor.novelty_score is None:
        print(f"drmm: note: no novelty column: {predictor.novelty_note}", file=sys.stderr)
    sources = [image_source(p, predictor.class_names, prefix=len(args.images) > 1)
               for p in args.images]
    known = write_predictions(predictor, sources, out, args.batch_size, not args.quiet)
    novelty = ("" if predictor.novelty_score is None else
               f"; novelty: {NOVELTY_WORDS[predictor.novelty_score]} over its training 99th"
               " percentile")
    n = sum(len(s.names) for s in sources)
    said = sys.stderr if to_stdout else sys.stdout  # stdout holds the CSV
    print(f"wrote {'stdout' if to_stdout else out}: predictions for {n} images"
          f" ({len(predictor.class_names)} classes){novelty}", file=said)
    if known:
        print(describe_known(known, predictor.class_names), file=said, end="")
    return 0
