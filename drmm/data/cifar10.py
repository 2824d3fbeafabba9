"""CIFAR-10 (section 5.3): the official python tarball and its pickled batches.

cifar-10-python.tar.gz holds cifar-10-batches-py/data_batch_1..5 (the 50,000 training images,
N_U = 50K in the paper) and test_batch (10,000 test images). Each batch is a Python 2 pickle of
a dict with 'data', a (10000, 3072) uint8 array whose rows are 1024 red, 1024 green, then 1024
blue values of a 32x32 image in row-major order, and 'labels', a list of ints 0..9.

The batches are read straight out of the tarball (nothing is extracted). Unpickling can run
code, so a restricted unpickler allows only the few NumPy globals that rebuild an array: a
tampered file (with --no-verify, or a lookalike in --data-dir) is refused, not executed.

A --data-dir may hold the same images as arrays instead, `cifar10.npz` (x_train (50000, 32, 32,
3), y_train, x_test, y_test, uint8, in the official order), used when no tarball is there; each
array is checked against the sha256 of the official images.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from drmm.data.download import locate
from drmm.errors import DRMMError

URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
ARCHIVE = "cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official tarball
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
SIDE, CHANNELS = 32, 3
NPZ = "cifar10.npz"  # the official images as arrays, read from --data-dir only
ARRAY_SHA256 = {  # of each array's bytes, (N, 32, 32, 3) height x width x RGB, uint8
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}

# (module, name) pairs an array pickle needs: NumPy 1 wrote numpy.core, NumPy 2 numpy._core;
# Python 3 pickles of bytes (protocol 2) go through _codecs.encode.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module == "numpy.core.multiarray":  # the NumPy 1 name; NumPy 2 warns on it
            try:
                return super().find_class("numpy._core.multiarray", name)
            except (ImportError, AttributeError):
                pass  # NumPy 1: only numpy.core exists
        return super().find_class(module, name)


def read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    try:
        # encoding="bytes": Python 2 str keys and array buffers arrive as bytes, unchanged.
        d = BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises almost any error type
        raise DRMMError(f"{where}: not a readable CIFAR-10 batch ({e}); the archive is"
                        " corrupt or not the official one: delete it and download it again") from e
    if not isinstance(d, dict):
        raise DRMMError(f"{where}: holds a {type(d).__name__}, not a CIFAR-10 batch dict")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DRMMError(f"{where}: no 'data' and 'labels' entries; not a CIFAR-10 batch")
    x, y = d["data"], np.asarray(d["labels"])
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 \
            or x.shape[1] != CHANNELS * SIDE * SIDE:
        shape = getattr(x, "shape", None)
        raise DRMMError(f"{where}: data is {getattr(x, 'dtype', type(x).__name__)} {shape};"
                        " a CIFAR-10 batch holds uint8 (N, 3072)")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) \
            or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DRMMError(f"{where}: labels are not {len(x)} integers in 0..9; the batch is damaged")
    # Rows are R plane, G plane, B plane: (N, 3, 32, 32) -> (N, 32, 32, 3).
    images = x.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), y.astype(np.int64)


def read_cifar10_tarball(path: str | Path) -> dict[str, np.ndarray]:
    """x_train (50000, 32, 32, 3) uint8, y_train, x_test (10000, 32, 32, 3), y_test."""
    path = Path(path)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    wanted = {f"{FOLDER}/{b}": b for b in TRAIN_BATCHES + TEST_BATCHES}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass in archive order: no backward seeks in the gzip stream
                if member.name in wanted and member.isfile():
                    raw = tar.extractfile(member).read()
                    parts[wanted[member.name]] = read_batch(raw, f"{path}:{member.name}")
            while tar.fileobj.read(1 << 20):  # to the end, where gzip checks its CRC and length
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DRMMError(f"{path}: cannot be read as a .tar.gz ({e}); it is corrupt or truncated:"
                        " delete it and download it again") from e
    missing = [name for name, b in wanted.items() if b not in parts]
    if missing:
        raise DRMMError(f"{path}: no {', '.join(missing)}; is this the CIFAR-10 *python* archive"
                        " (cifar-10-python.tar.gz)?")

    def join(batches):
        return (np.concatenate([parts[b][0] for b in batches]),
                np.concatenate([parts[b][1] for b in batches]))

    (x_train, y_train), (x_test, y_test) = join(TRAIN_BATCHES), join(TEST_BATCHES)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_cifar10(data_dir=None, verify: bool = True) -> dict[str, np.ndarray]:
    """The official tarball, found in --data-dir or the cache, or downloaded, md5-checked; or,
    where --data-dir holds no tarball but cifar10.npz, those arrays, sha256-checked."""
    if data_dir is not None:
        folder = Path(data_dir)
        tarballs = [folder / "cifar10" / ARCHIVE, folder / ARCHIVE]
        arrays = [folder / "cifar10" / NPZ, folder / NPZ]
        found = next((p for p in arrays if p.is_file()), None)
        if found is not None and not any(p.is_file() for p in tarballs):
            return read_cifar10_npz(found, verify)
    return read_cifar10_tarball(locate(ARCHIVE, MD5, URLS, "cifar10", data_dir, verify))


def read_cifar10_npz(path: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test of a cifar10.npz, each checked against ARRAY_SHA256."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ARRAY_SHA256 if k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise DRMMError(f"{path} cannot be read as an .npz ({e}); replace it, or put the"
                        f" official {ARCHIVE} in its folder") from e
    for key, digest in ARRAY_SHA256.items():
        if key not in arrays:
            raise DRMMError(f"{path} has no array {key!r}; it is not CIFAR-10 as arrays")
        if verify and hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest() \
                != digest:
            raise DRMMError(f"{path}: array {key} is not the official CIFAR-10 (sha256"
                            " mismatch); replace the file, or put the official"
                            f" {ARCHIVE} in its folder")
    return arrays
