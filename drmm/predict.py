"""`drmm predict`: class predictions of a trained run for new images, as a CSV file.

    drmm predict --checkpoint runs/mine --images new_photos/ --out preds.csv

--images is a folder (every image file under it, any depth, sorted by path) or an .npz file
whose `x` (or `images`, or `x_test`) array holds uint8 images (N, H, W) or (N, H, W, C). The
CSV has one row per image: `image` (its path, or its index in the npz), `predicted` (the class
name), `probability` (of that class), then `p_<class name>` for every class, then `novelty`:
the image's novelty score over the score's 99th percentile on the run's training images (> 1:
less typical than 99 % of them; drmm/scores.py). The score is the rendering error under the
predicted class, or 1 - max p for a run that never learned to render; the summary line names
it. A checkpoint from before novelty scales were stored gets them from its training data, or
no novelty column (with a note) where that cannot be loaded. Images go through
drmm.load(...).predict: eval mode, the run's preprocessing and resizing; a folder's files are
decoded on every core, as training decodes them; a file of another size than the model takes
(a run trained without --image-size) stops the command, naming it. The CSV is written
atomically: an interrupted run leaves no half-written file. A text cell that a spreadsheet would
run as a formula (a file or class named `=...`, `+`, `-`, `@`) begins with a "'", and a file
name that is not UTF-8 is written as its own bytes: drmm.files.read_csv gives both back.
"""

from __future__ import annotations

import csv
import sys
from contextlib import closing, nullcontext
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from drmm.data.folder import IMAGE_SUFFIXES, image_files, in_order
from drmm.data.npz import read_npz
from drmm.errors import DRMMError
from drmm.files import atomic_write, check_out_file, csv_cell, csv_stream, require_file
from drmm.predictor import Predictor, load

NPZ_KEYS = ("x", "images", "x_test")  # where an npz of new images keeps them, first found
NOVELTY_WORDS = {"render": "render (rendering error under the predicted class)",
                 "softmax": "softmax (1 - max p)"}


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict the classes of new images into a CSV file",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a drmm run folder or its checkpoint.pt")
    p.add_argument("--images", required=True, help="a folder of image files, or FILE.npz")
    p.add_argument("--out", required=True, help="the CSV file to write")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def image_source(path: str | Path) -> tuple[list[str], object]:
    """(row names, source): the files of a folder, or the uint8 array of an npz file."""
    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DRMMError(f"--images {path} holds no image files"
                            f" ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [str(f) for f in files], files
    path = require_file(path, "--images", "pass a folder of images or an .npz file")
    if path.suffix.lower() != ".npz":
        raise DRMMError(f"--images {path} is neither a folder nor an .npz file")
    arrays = read_npz(path)
    key = next((k for k in NPZ_KEYS if k in arrays), None)
    if key is None:
        raise DRMMError(f"{path} has no {' / '.join(NPZ_KEYS)} array (it has {sorted(arrays)});"
                        " store the images under x")
    if len(arrays[key]) == 0:
        raise DRMMError(f"--images {path}: its {key} array holds no images ({arrays[key].shape});"
                        " pass a file with images")
    return [str(i) for i in range(len(arrays[key]))], arrays[key]


def read_image(predictor: Predictor, path: Path) -> np.ndarray:
    """A file's uint8 pixels as the run's folder was read, checked to be the model's size."""
    x = predictor.read_file(path)  # (H, W) or (H, W, C)
    c, h, w = predictor.image_shape
    if x.shape[:2] != (h, w):
        raise DRMMError(f"{path} is {x.shape[1]}x{x.shape[0]} (width x height), the model takes"
                        f" {w}x{h} images; resize it, or train the run with --image-size so that"
                        " files of any size are fitted")
    return x


def write_predictions(predictor: Predictor, names: list[str], source, out: Path,
                      batch_size: int, progress: bool) -> int:
    """Predict batch by batch (a folder is decoded as it goes, by a pool of threads) into the
    CSV at out."""

    def write(f) -> None:
        text = csv_stream(f)
        rows = csv.writer(text)
        with_novelty = predictor.novelty_score is not None
        rows.writerow(["image", "predicted", "probability",
                       *[csv_cell(f"p_{c}") for c in predictor.class_names],
                       *(["novelty"] if with_novelty else [])])
        files = None if isinstance(source, np.ndarray) else in_order(
            lambda p: read_image(predictor, p), source, ahead=batch_size)  # the next batch
        with tqdm(total=len(names), disable=not progress, unit="img", leave=False) as bar, \
                nullcontext() if files is None else closing(files):
            for i in range(0, len(names), batch_size):
                if files is None:
                    batch = source[i:i + batch_size]  # (b, H, W[, C]) uint8
                else:
                    batch = np.stack(list(islice(files, batch_size)))
                pred = predictor.predict(batch, batch_size)
                novelty = pred.novelty.tolist() if with_novelty else [None] * len(batch)
                for name, c, p, nov in zip(names[i:i + batch_size], pred.classes.tolist(),
                                           pred.probabilities.tolist(), novelty, strict=True):
                    rows.writerow([csv_cell(name), csv_cell(predictor.class_names[c]),
                                   f"{p[c]:.6f}",
                                   *[f"{v:.6f}" for v in p],
                                   *([f"{nov:.6g}"] if with_novelty else [])])
                bar.update(len(batch))
        text.flush()
        text.detach()  # leave f open: atomic_write flushes, syncs and renames it

    atomic_write(out, write)
    return len(names)


def cmd_predict(args) -> int:
    out = check_out_file(args.out, suffix=".csv")  # before any loading
    if args.batch_size < 1:
        raise DRMMError(f"--batch-size {args.batch_size} must be at least 1")
    predictor = load(args.checkpoint, args.device)
    if predictor.novelty_score is None:
        print(f"drmm: note: no novelty column: {predictor.novelty_note}", file=sys.stderr)
    names, source = image_source(args.images)
    n = write_predictions(predictor, names, source, out, args.batch_size, not args.quiet)
    novelty = ("" if predictor.novelty_score is None else
               f"; novelty: {NOVELTY_WORDS[predictor.novelty_score]} over its training 99th"
               " percentile")
    print(f"wrote {out}: predictions for {n} images ({len(predictor.class_names)} classes)"
          f"{novelty}")
    return 0
