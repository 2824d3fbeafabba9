"""The prepared-arrays format: any data set as one .npz file (`--dataset npz:PATH`).

Keys: x_train, y_train, and optionally x_test, y_test. Images are uint8, (N, H, W) or
(N, H, W, C); labels are integers 0..K-1, and -1 in y_train marks an unlabeled training image.
`class_names` (K strings) names the classes. Extra keys (for instance the latents z_train /
z_test of `drmm render`) are carried along untouched.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from drmm.errors import DRMMError
from drmm.files import require_file

REQUIRED = ("x_train", "y_train")
UNLABELED = -1  # the label of a training image nobody labeled


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, with one-line errors for a missing or unreadable file."""
    path = require_file(path, "npz file", "check the path")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        # numpy's "Object arrays cannot be loaded when allow_pickle=False" hint is misleading here:
        # an array of Python objects, or a corrupt header, is what it found.
        raise DRMMError(f"{path}: an array in it holds Python objects or is corrupt, not plain"
                        " numbers; re-create it with numeric arrays (np.savez)") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DRMMError(f"{path}: not a readable .npz file ({e});"
                        " re-create or re-download it") from e
    return arrays


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """A data set's arrays, checked: shapes, dtypes, labels 0..K-1 (-1 unlabeled)."""
    arrays = read_npz(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DRMMError(f"{path}: missing keys {missing}; an npz data set needs {list(REQUIRED)}"
                        " (x_test, y_test optional)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DRMMError(f"{path}: has one of x_test / y_test without the other; give both or"
                        " neither")
    splits = ("train", "test") if "x_test" in arrays else ("train",)
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DRMMError(f"{path}: x_{split} has dtype {x.dtype}; images must be uint8 (0..255)")
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DRMMError(f"{path}: x_{split} has shape {x.shape}; expected (N, H, W) or"
                            " (N, H, W, C) with C = 1 or 3")
        if y.ndim != 1 or len(y) != len(x):
            raise DRMMError(f"{path}: y_{split} has shape {y.shape}; expected ({len(x)},),"
                            f" one label per image of x_{split}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DRMMError(f"{path}: y_{split} has dtype {y.dtype}; labels must be integers")
        if len(x) == 0 or 0 in x.shape[1:3]:
            raise DRMMError(f"{path}: x_{split} has shape {x.shape}: no images; re-create it")
    if "x_test" in arrays and arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DRMMError(f"{path}: x_train images {arrays['x_train'].shape[1:]} and x_test images"
                        f" {arrays['x_test'].shape[1:]} differ in shape")
    y_train = arrays["y_train"]
    if y_train.min() < UNLABELED:
        raise DRMMError(f"{path}: y_train has labels below -1; use 0..K-1, and -1 for an"
                        " unlabeled image")
    if "y_test" in arrays and arrays["y_test"].min() < 0:
        raise DRMMError(f"{path}: y_test has negative labels; every test image needs its label"
                        " 0..K-1")
    labeled = y_train[y_train != UNLABELED]
    if len(labeled) == 0:
        raise DRMMError(f"{path}: every y_train label is -1 (unlabeled); label some images")
    k = int(max(labeled.max(), arrays["y_test"].max() if "y_test" in arrays else 0)) + 1
    if k > len(labeled):  # also keeps the class count below from going huge
        raise DRMMError(f"{path}: labels go up to {k - 1} but there are only {len(labeled)}"
                        " labeled training images; use labels 0..K-1")
    missing_classes = sorted(set(range(k)) - set(np.unique(labeled).tolist()))
    if missing_classes:
        raise DRMMError(f"{path}: labels must be 0..K-1 with every class in y_train;"
                        f" classes {missing_classes[:5]} have no labeled training image")
    return arrays
