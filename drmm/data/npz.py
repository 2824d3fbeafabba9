"""The prepared-arrays format: any data set as one .npz file (`--dataset npz:PATH`).

Keys: x_train, y_train, x_test, y_test. Images are uint8, (N, H, W) or (N, H, W, C); labels
are integers 0..K-1. Extra keys (for instance the latents z_train / z_test of `drmm render`)
are carried along untouched.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from drmm.errors import DRMMError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DRMMError(f"npz file {path} does not exist; check the path after 'npz:'")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DRMMError(f"{path}: not a readable .npz file ({e});"
                        " re-create or re-download it") from e
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DRMMError(f"{path}: missing keys {missing}; an npz data set needs {list(REQUIRED)}")
    for split in ("train", "test"):
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
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DRMMError(f"{path}: x_train images {arrays['x_train'].shape[1:]} and x_test images"
                        f" {arrays['x_test'].shape[1:]} differ in shape")
    for split in ("train", "test"):
        if arrays[f"y_{split}"].min() < 0:
            raise DRMMError(f"{path}: y_{split} has negative labels; use 0..K-1")
    k = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    if k > len(arrays["y_train"]):  # also keeps the class count below from going huge
        raise DRMMError(f"{path}: labels go up to {k - 1} but there are only"
                        f" {len(arrays['y_train'])} training images; use labels 0..K-1")
    missing_classes = sorted(set(range(k)) - set(np.unique(arrays["y_train"]).tolist()))
    if missing_classes:
        raise DRMMError(f"{path}: labels must be 0..K-1 with every class in y_train;"
                        f" classes {missing_classes[:5]} have no training image")
    return arrays
