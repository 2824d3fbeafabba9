"""Data: the idx reader on fabricated files, the download cache, the split, digits, MNIST."""

import gzip
import hashlib

import numpy as np
import pytest

from drmm.data import labeled_split, load_dataset
from drmm.data.download import download, locate
from drmm.data.mnist import read_idx
from drmm.errors import DRMMError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)


def test_idx_reader_roundtrip(tmp_path, images):
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(read_idx(path, 3), images)
    plain = tmp_path / "labels"
    plain.write_bytes(idx_bytes(np.arange(7)))
    assert read_idx(plain, 1).tolist() == list(range(7))


def test_idx_reader_truncated_payload(tmp_path, images):
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)[:-5]))
    with pytest.raises(DRMMError, match="img.gz.*truncated"):
        read_idx(path, 3)


def test_idx_reader_truncated_gzip_stream(tmp_path, images):
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-10])
    with pytest.raises(DRMMError, match="img.gz.*corrupt or truncated"):
        read_idx(path, 3)


def test_idx_reader_corrupt_gzip(tmp_path):
    path = tmp_path / "img.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DRMMError, match="img.gz"):
        read_idx(path, 3)


def test_idx_reader_bad_magic(tmp_path, images):
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(DRMMError, match="bad magic"):
        read_idx(path, 1)  # a 3-d file read as labels


def test_locate_checks_md5_of_local_copies(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "f.bin").write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    assert locate("f.bin", good, [], "set", tmp_path) == tmp_path / "set" / "f.bin"
    with pytest.raises(DRMMError, match="f.bin: bad checksum"):
        locate("f.bin", "0" * 32, [], "set", tmp_path)


def test_locate_missing_data_dir(tmp_path):
    with pytest.raises(DRMMError, match="does not exist"):
        locate("f.bin", "0" * 32, [], "set", tmp_path / "nope")


def test_download_is_atomic_and_checked(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "cache" / "f.bin"
    with pytest.raises(DRMMError, match="could not download"):
        download([src.as_uri()], dest, "0" * 32)  # wrong checksum
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no partial file left behind
    download([src.as_uri()], dest, hashlib.md5(b"payload").hexdigest())
    assert dest.read_bytes() == b"payload"


def test_split_is_class_balanced_disjoint_and_stable():
    labels = np.repeat(np.arange(10), 30)
    np.random.default_rng(1).shuffle(labels)
    idx = labeled_split(labels, 50, 10, seed=3)
    assert len(idx) == len(set(idx.tolist())) == 50  # no index twice
    assert np.bincount(labels[idx], minlength=10).tolist() == [5] * 10
    assert np.array_equal(idx, labeled_split(labels, 50, 10, seed=3))
    assert not np.array_equal(idx, labeled_split(labels, 50, 10, seed=4))


@pytest.mark.parametrize("n,msg", [(55, "not divisible"), (400, "more than"), (0, "positive")])
def test_split_rejects_bad_label_counts(n, msg):
    with pytest.raises(DRMMError, match=msg):
        labeled_split(np.repeat(np.arange(10), 30), n, 10, seed=0)


def test_digits_default_dataset():
    data = load_dataset("digits")
    assert data.x_train.shape == (1297, 1, 16, 16) and data.x_test.shape == (500, 1, 16, 16)
    assert 0.0 <= data.x_train[:].min() and data.x_train[:].max() <= 1.0
    assert data.num_classes == 10
    again = load_dataset("digits")  # the test split never moves
    assert (again.y_test == data.y_test).all()


def test_unknown_dataset():
    with pytest.raises(DRMMError, match="unknown dataset"):
        load_dataset("imagenet")


def test_real_mnist(shared_data):
    data = load_dataset("mnist", shared_data)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train.numpy()).tolist()[:3] == [5923, 6742, 5958]
