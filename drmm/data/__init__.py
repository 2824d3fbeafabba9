"""Data sets as tensors: images (N, C, H, W) float32, labels (N,) int64.

Small data sets live whole on the training device and are batched by index (no DataLoader).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drmm.data.cifar10 import load_cifar10
from drmm.data.digits import load_digits_arrays
from drmm.data.mnist import load_mnist
from drmm.data.npz import load_npz
from drmm.data.preprocess import PREPROCESS, apply_preprocess
from drmm.data.split import labeled_split
from drmm.data.svhn import load_svhn
from drmm.errors import DRMMError

__all__ = ["DATASETS", "Dataset", "check_dataset", "labeled_split", "load_dataset"]

# name -> loader(data_dir, verify=...) returning uint8 images and integer labels; `verify`
# md5-checks cached files each time they are read (downloads are always checked).
DATASETS = {"digits": lambda data_dir, verify=True: load_digits_arrays(), "mnist": load_mnist,
            "svhn": load_svhn, "cifar10": load_cifar10}


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32: in [0, 1], or as `preprocess` left it
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W) float32
    y_test: torch.Tensor  # (M,) int64
    num_classes: int  # K
    preprocess: str = "none"  # the transform applied (drmm.data.preprocess)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # (C, H, W)


def to_tensor_images(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.array(x, dtype=np.float32)).div_(255.0)  # a writable copy
    return t[:, None] if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


def load_arrays(name: str, data_dir=None, verify: bool = True) -> dict[str, np.ndarray]:
    """uint8 image arrays and integer labels of a named data set or of `npz:PATH`."""
    if name.startswith("npz:"):
        return load_npz(name[4:])
    if name not in DATASETS:
        raise DRMMError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} or npz:PATH")
    return DATASETS[name](data_dir, verify=verify)


def check_dataset(data: Dataset) -> None:
    """Reject a data set the model cannot train on: one line naming the problem and the fix.

    Loaders already check their files; this also covers a Dataset built in Python (train(...,
    data=...)) or produced by preprocessing: dtypes, shapes, NaN / inf pixels, label range.
    """
    where = f"dataset {data.name}"
    if data.num_classes < 2:
        raise DRMMError(f"{where}: {data.num_classes} class(es); classification needs at least 2")
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if not x.is_floating_point():
            raise DRMMError(f"{where}: x_{split} has dtype {x.dtype}; images must be floating"
                            " point (uint8 files are scaled to [0, 1] by the loaders)")
        if x.dim() != 4 or len(x) == 0 or x.shape[1:] != data.x_train.shape[1:]:
            raise DRMMError(f"{where}: x_{split} has shape {tuple(x.shape)}; expected a non-empty"
                            f" (N, C, H, W) with the same C, H, W in train and test")
        if y.dtype != torch.int64 or y.shape != (len(x),):
            raise DRMMError(f"{where}: y_{split} has dtype {y.dtype} and shape {tuple(y.shape)};"
                            f" expected int64 ({len(x)},), one label per image")
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise DRMMError(f"{where}: x_{split} holds {bad} NaN or infinite pixel values;"
                            " fix or drop those images")
        if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
            raise DRMMError(f"{where}: y_{split} has labels outside 0..{data.num_classes - 1}"
                            f" (min {int(y.min())}, max {int(y.max())}); relabel them 0..K-1")


def load_dataset(name: str, data_dir=None, verify: bool = True,
                 preprocess: str = "none") -> Dataset:
    """The data set as tensors; `preprocess` (one of PREPROCESS) is fitted on x_train only."""
    if preprocess not in PREPROCESS:  # before any download or file read
        raise DRMMError(f"preprocess {preprocess!r} unknown; use one of {list(PREPROCESS)}")
    arrays = load_arrays(name, data_dir, verify)
    y_train = torch.from_numpy(arrays["y_train"].astype(np.int64))
    y_test = torch.from_numpy(arrays["y_test"].astype(np.int64))
    x_train, x_test = apply_preprocess(to_tensor_images(arrays["x_train"]),
                                       to_tensor_images(arrays["x_test"]), preprocess)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
        preprocess=preprocess,
    )
