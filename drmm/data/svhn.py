"""SVHN cropped digits (section 5.2): the official train_32x32.mat / test_32x32.mat.

The paper trains on the 73,257 `train` images (N_U = 73,257, Appendix A) and tests on the
26,032 `test` images; the 531,131 `extra` images are not used. The files are MATLAB v5 .mat
files read with SciPy: X is (32, 32, 3, N) uint8 (height, width, RGB, image) and y is (N, 1)
with the digits 1..10, where 10 stands for the digit 0. Labels are returned as 0..9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drmm.data.download import locate
from drmm.errors import DRMMError

URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {  # file name -> md5 of the official release
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
IMAGE_SHAPE = (32, 32, 3)  # height, width, channels of X's first three axes
ZERO_LABEL = 10  # SVHN writes the digit 0 as class 10


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 in 0..9 from one official .mat file."""
    from scipy.io import loadmat  # SciPy only when SVHN is asked for

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as e:  # noqa: BLE001 - a damaged file raises ValueError, IndexError, ...
        raise DRMMError(f"{path}: cannot be read as a MATLAB file ({e}); it is corrupt or"
                        " truncated: delete it and download it again") from e
    if "X" not in mat or "y" not in mat:
        raise DRMMError(f"{path}: no X and y arrays; the file is truncated or not SVHN's"
                        " *_32x32.mat: delete it and download it again")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != IMAGE_SHAPE:
        raise DRMMError(f"{path}: X is {x.dtype} {x.shape}; SVHN's X is uint8 (32, 32, 3, N):"
                        " check that this is the cropped-digits (format 2) file")
    n = x.shape[3]
    if y.size != n or (y.ndim == 2 and y.shape[1] != 1) or y.ndim > 2:
        raise DRMMError(f"{path}: y has shape {y.shape} but X holds {n} images; expected"
                        f" ({n}, 1): the file is damaged")
    y = y.reshape(-1).astype(np.int64)  # (N,)
    if n and (y.min() < 1 or y.max() > ZERO_LABEL):
        raise DRMMError(f"{path}: labels range {y.min()}..{y.max()}; SVHN's are 1..10:"
                        " the file is damaged or not SVHN")
    y[y == ZERO_LABEL] = 0
    # (H, W, C, N) -> (N, H, W, C), the layout of the other loaders.
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y


def load_svhn(data_dir=None, verify: bool = True) -> dict[str, np.ndarray]:
    """uint8 arrays x_train (73257, 32, 32, 3), y_train, x_test (26032, 32, 32, 3), y_test."""
    arrays = {}
    for split in ("train", "test"):
        name = f"{split}_32x32.mat"
        path = locate(name, FILES[name], [URL + name], "svhn", data_dir, verify)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = read_svhn_mat(path)
    return arrays
