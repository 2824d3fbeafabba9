"""MNIST (section 5.1): the four original gzipped idx files, md5-checked, read with NumPy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from drmm.data.download import locate
from drmm.errors import DRMMError

MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
FILES = {  # file name -> md5 of the original release
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# idx magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
IDX_UBYTE = 0x08


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a gzipped (or plain) idx file of unsigned bytes with `ndim` dimensions."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DRMMError(f"{path}: cannot be read ({e}); the file is corrupt or truncated:"
                        " delete it and download it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] != ndim:
        raise DRMMError(f"{path}: not an idx file of {ndim}-d unsigned bytes (bad magic number);"
                        " check that it is the right file")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DRMMError(f"{path}: truncated header; delete it and download it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DRMMError(f"{path}: holds {len(raw)} bytes but its header {shape} needs {expected};"
                        " the file is truncated or corrupt: delete it and download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(data_dir=None, verify: bool = True) -> dict[str, np.ndarray]:
    """uint8 arrays x_train (60000, 28, 28), y_train, x_test (10000, 28, 28), y_test."""
    paths = {name: locate(name, md5, [m + name for m in MIRRORS], "mnist", data_dir, verify)
             for name, md5 in FILES.items()}
    arrays = {
        "x_train": read_idx(paths["train-images-idx3-ubyte.gz"], 3),
        "y_train": read_idx(paths["train-labels-idx1-ubyte.gz"], 1),
        "x_test": read_idx(paths["t10k-images-idx3-ubyte.gz"], 3),
        "y_test": read_idx(paths["t10k-labels-idx1-ubyte.gz"], 1),
    }
    # The checksums pin these down; with verify=False (--no-verify) a wrong file can get here.
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[1:] != (28, 28):
            raise DRMMError(f"{paths[images]}: images are {x.shape[1:]}, MNIST's are (28, 28);"
                            " replace it with the original file")
        if len(x) != len(y):
            raise DRMMError(f"{paths[labels]}: {len(y)} labels for {len(x)} images in"
                            f" {paths[images].name}; replace both with the original files")
        if len(y) and y.max() > 9:
            raise DRMMError(f"{paths[labels]}: label {int(y.max())} outside 0..9;"
                            " replace it with the original file")
    return arrays
