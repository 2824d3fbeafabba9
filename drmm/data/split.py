"""The labeled / unlabeled split (section 5.1): class-balanced, pure, seeded, returns indices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from drmm.errors import DRMMError
from drmm.files import require_file


def labeled_split(labels: np.ndarray, n_labeled: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of n_labeled training images, n_labeled / num_classes of each class, sorted.

    The same (labels, n_labeled, seed) always gives the same indices. The unlabeled set is the
    whole training set, as in the authors' code (labels of the rest are never read). Images
    with label -1 are never drawn.
    """
    labels = np.asarray(labels)
    if n_labeled <= 0:
        raise DRMMError(f"--labels {n_labeled}: need a positive number of labeled images")
    n_known = int((labels >= 0).sum())  # -1: an unlabeled image
    if n_labeled > n_known:
        raise DRMMError(f"--labels {n_labeled}: more than the {n_known} labeled training images")
    if n_labeled % num_classes:
        raise DRMMError(f"--labels {n_labeled} is not divisible by the {num_classes} classes;"
                        f" use a multiple of {num_classes} for a class-balanced split")
    per_class = n_labeled // num_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise DRMMError(f"--labels {n_labeled}: class {c} has only {len(pool)} images,"
                            f" fewer than the {per_class} per class asked for")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def read_indices(path: str | Path) -> np.ndarray:
    """Indices from a .npy file or a text file (one integer a line; blank lines and # comments
    skipped), as int64."""
    path = require_file(path, "--labeled-indices", "pass a .npy or text file of image indices")
    try:
        if path.suffix == ".npy":
            idx = np.load(path, allow_pickle=False)
        else:
            lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
            idx = np.array([int(line) for line in lines if line], dtype=np.int64)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise DRMMError(f"--labeled-indices {path}: not a .npy array or a text file of integers,"
                        f" one a line ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                        ) from e
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise DRMMError(f"--labeled-indices {path}: holds a {idx.dtype} array of shape"
                        f" {idx.shape}; expected one integer index per labeled image")
    return idx.astype(np.int64)


def choose_labeled(labels: np.ndarray, num_classes: int, n_labeled: int | None, seed: int,
                   given: np.ndarray | None = None) -> np.ndarray:
    """The labeled training images, sorted indices. Pure: the same inputs, the same indices.

    - given: exactly these images (a split published elsewhere), each of which must carry a
      label; n_labeled, if set, must equal their number.
    - else n_labeled: the class-balanced random draw of the benchmarks (labeled_split), among
      the images that carry a label (the others have label -1).
    - else: every image that carries a label (the data say which are labeled).
    """
    labels = np.asarray(labels)
    has_label = labels >= 0
    if given is not None:
        if n_labeled is not None and n_labeled != len(given):
            raise DRMMError(f"--labels {n_labeled} but --labeled-indices lists {len(given)}"
                            " images; drop --labels")
        if len(given) == 0:
            raise DRMMError("--labeled-indices lists no images; list at least one per class")
        if given.min() < 0 or given.max() >= len(labels):
            raise DRMMError(f"--labeled-indices has indices outside 0..{len(labels) - 1} (min"
                            f" {given.min()}, max {given.max()}); index the training images")
        if len(np.unique(given)) != len(given):
            raise DRMMError("--labeled-indices lists some images twice; list each once")
        unlabeled = given[~has_label[given]]
        if len(unlabeled):
            raise DRMMError(f"--labeled-indices names images without a label (-1), for example"
                            f" {unlabeled[:5].tolist()}; name labeled images only")
        return np.sort(given)
    if n_labeled is not None:
        return labeled_split(labels, n_labeled, num_classes, seed)
    return np.flatnonzero(has_label)


def warn_unlabeled_classes(labels: np.ndarray, class_names: list[str]) -> None:
    """One line on stderr if the labeled images (their labels: (N_L,)) leave classes without
    an example: the model cannot learn which of its clusters those names belong to."""
    missing = [class_names[c] for c in range(len(class_names)) if c not in set(labels.tolist())]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(f"drmm: warning: --labeled-indices names images of {len(class_names) - len(missing)}"
              f" of the {len(class_names)} classes; {len(missing)} ({shown}) have no labeled"
              " image, so the model cannot learn their names: label at least one image of each",
              file=sys.stderr)
