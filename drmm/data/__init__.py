"""Data sets as tensors: images (N, C, H, W), labels (N,) int64.

Loaded data sets keep their images as uint8 Images (drmm.data.images), indexed into float32
batches; a Dataset built in Python may hold float32 tensors instead. Small data sets live whole
on the training device and are batched by index (no DataLoader).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from drmm.data.cifar10 import load_cifar10
from drmm.data.digits import load_digits_arrays
from drmm.data.folder import load_folder
from drmm.data.images import Images, to_pixels
from drmm.data.mnist import load_mnist
from drmm.data.npz import UNLABELED, load_npz
from drmm.data.preprocess import PREPROCESS, Preprocessor
from drmm.data.split import choose_labeled, labeled_split, read_indices
from drmm.data.svhn import load_svhn
from drmm.errors import DRMMError

__all__ = ["DATASETS", "UNLABELED", "Dataset", "Images", "Preprocessor", "check_dataset",
           "choose_labeled", "labeled_split", "load_dataset", "load_run_data", "read_indices",
           "to_tensor_images"]

# name -> loader(data_dir, verify=...) returning uint8 images and integer labels; `verify`
# md5-checks cached files each time they are read (downloads are always checked).
DATASETS = {"digits": lambda data_dir, verify=True: load_digits_arrays(), "mnist": load_mnist,
            "svhn": load_svhn, "cifar10": load_cifar10}
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


@dataclass
class Dataset:
    name: str
    x_train: Images | torch.Tensor  # (N, C, H, W): uint8 Images, or float32 preprocessed
    y_train: torch.Tensor  # (N,) int64: 0..K-1, or -1 (UNLABELED) for an unlabeled image
    x_test: Images | torch.Tensor | None  # (M, C, H, W) as x_train, or None: no test set
    y_test: torch.Tensor | None  # (M,) int64, or None
    num_classes: int  # K
    class_names: list[str] = field(default_factory=list)  # K names; "0".."K-1" if none given
    preprocessor: Preprocessor = field(default_factory=Preprocessor)  # fitted on x_train
    paths_train: list[str] | None = None  # (N,) folder:DIR: each file's path under DIR

    def __post_init__(self):
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.num_classes)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # (C, H, W)

    @property
    def preprocess(self) -> str:
        return self.preprocessor.mode

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


def to_tensor_images(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    return to_pixels(x).float().div_(255.0)  # (N, C, H, W)


def load_arrays(name: str, data_dir=None, verify: bool = True, channels: int | None = None,
                image_size: int | None = None, resize: str = "crop") -> dict[str, np.ndarray]:
    """uint8 image arrays and integer labels of a named data set, `npz:PATH` or `folder:DIR`."""
    if name.startswith("npz:"):
        return load_npz(name[4:])
    if name.startswith("folder:"):
        return load_folder(name[7:], channels=channels, image_size=image_size, resize=resize)
    if name not in DATASETS:
        raise DRMMError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, npz:PATH"
                        " or folder:DIR")
    return DATASETS[name](data_dir, verify=verify)


def check_dataset(data: Dataset) -> None:
    """Reject a data set the model cannot train on: one line naming the problem and the fix.

    Loaders already check their files; this also covers a Dataset built in Python (train(...,
    data=...)) or produced by preprocessing: dtypes, shapes, NaN / inf pixels, label range.
    """
    where = f"dataset {data.name}"
    if data.num_classes < 2:
        raise DRMMError(f"{where}: {data.num_classes} class(es); classification needs at least 2")
    if len(data.class_names) != data.num_classes:
        raise DRMMError(f"{where}: {len(data.class_names)} class names for {data.num_classes}"
                        " classes; give one name per class")
    if (data.x_test is None) != (data.y_test is None):
        raise DRMMError(f"{where}: x_test and y_test must both be given or both be None")
    for split in ("train", "test") if data.has_test else ("train",):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if isinstance(x, Images):  # loaded from files: uint8 pixels, finite by construction
            x = x.pixels
        elif not x.is_floating_point():
            raise DRMMError(f"{where}: x_{split} has dtype {x.dtype}; images must be floating"
                            " point (uint8 files are scaled to [0, 1] by the loaders)")
        if x.dim() != 4 or len(x) == 0 or x.shape[1:] != data.x_train.shape[1:]:
            raise DRMMError(f"{where}: x_{split} has shape {tuple(x.shape)}; expected a non-empty"
                            f" (N, C, H, W) with the same C, H, W in train and test")
        if y.dtype != torch.int64 or y.shape != (len(x),):
            raise DRMMError(f"{where}: y_{split} has dtype {y.dtype} and shape {tuple(y.shape)};"
                            f" expected int64 ({len(x)},), one label per image")
        bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
        if bad:
            raise DRMMError(f"{where}: x_{split} holds {bad} NaN or infinite pixel values;"
                            " fix or drop those images")
        lowest = UNLABELED if split == "train" else 0
        if len(y) and (y.min() < lowest or y.max() >= data.num_classes):
            raise DRMMError(f"{where}: y_{split} has labels outside"
                            f" {lowest}..{data.num_classes - 1}"
                            f" (min {int(y.min())}, max {int(y.max())}); relabel them 0..K-1"
                            + (" (-1: unlabeled)" if split == "train" else ""))


def load_dataset(name: str, data_dir=None, verify: bool = True,
                 preprocess: str | Preprocessor = "none", channels: int | None = None,
                 image_size: int | None = None, unlabeled: int | None = None,
                 seed: int = 0, resize: str = "crop") -> Dataset:
    """The data set as tensors. `preprocess` is a mode of PREPROCESS, fitted on x_train here, or
    a fitted Preprocessor (a trained run's) applied as it is. `channels`, `image_size` and
    `resize` (crop | squash) decode and resize a `folder:DIR` data set. `unlabeled` cuts the
    training set to a random subset of that many images (drawn with `seed`), before
    preprocessing is fitted: on the images trained on."""
    if isinstance(preprocess, str) and preprocess not in PREPROCESS:  # before any file read
        raise DRMMError(f"preprocess {preprocess!r} unknown; use one of {list(PREPROCESS)}")
    if name.startswith("npz:") or name in DATASETS:
        if channels is not None or image_size is not None:
            raise DRMMError("--channels and --image-size apply to folder:DIR data sets only")
    arrays = load_arrays(name, data_dir, verify, channels=channels, image_size=image_size,
                         resize=resize)
    if unlabeled is not None and unlabeled < len(arrays["y_train"]):
        keep = training_subset(len(arrays["y_train"]), unlabeled, seed)
        arrays = {**arrays, **{k: arrays[k][keep] for k in ("x_train", "y_train", "paths_train")
                               if k in arrays}}
    has_test = "x_test" in arrays
    y_train = torch.from_numpy(arrays["y_train"].astype(np.int64))
    y_test = torch.from_numpy(arrays["y_test"].astype(np.int64)) if has_test else None
    pixels_train = to_pixels(arrays["x_train"])  # (N, C, H, W) uint8
    pre = Preprocessor.fit(preprocess, pixels_train) if isinstance(preprocess, str) else preprocess
    x_train = Images(pixels_train, pre)
    x_test = Images(to_pixels(arrays["x_test"]), pre) if has_test else None
    k = int(max(y_train.max(), y_test.max() if has_test else 0)) + 1
    names = [str(s) for s in arrays.get("class_names", [])]
    if name == "cifar10":
        names = CIFAR10_NAMES
    if names and len(names) < k:
        raise DRMMError(f"dataset {name}: {len(names)} class_names for labels up to {k - 1};"
                        " give one name per class")
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=max(k, len(names)),
        class_names=names,
        preprocessor=pre,
        paths_train=[str(p) for p in arrays["paths_train"]] if "paths_train" in arrays else None,
    )


def training_subset(n_train: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a random n of n_train training images. Its own stream (seed, 1): the
    labeled split then draws with default_rng(seed) from the subset."""
    return np.sort(np.random.default_rng([seed, 1]).choice(n_train, size=n, replace=False))


def load_run_data(cfg, state: dict, name: str | None = None, data_dir=None,
                  verify: bool = True) -> Dataset:
    """A data set (default: the run's own) as a trained run sees it: transformed with the run's
    preprocessing statistics from its checkpoint `state` (checkpoints older than those: refitted
    on this data set's training images), folder images decoded and resized as in training."""
    name = name or cfg.train.dataset
    pre = (Preprocessor.from_state_dict(state["preprocess"]) if "preprocess" in state
           else cfg.train.preprocess)
    folder = name.startswith("folder:")
    return load_dataset(name, data_dir, verify=verify, preprocess=pre,
                        channels=cfg.model.in_channels if folder else None,
                        image_size=cfg.train.image_size if folder else None,
                        resize=cfg.train.resize)
