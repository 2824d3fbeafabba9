"""The prepared-arrays format (`--dataset npz:PATH`): what it accepts and what it refuses."""

import numpy as np
import pytest
import torch

from drmm.data import load_arrays, load_dataset
from drmm.data.npz import load_npz
from drmm.errors import DRMMError


def arrays(n_train=40, n_test=10, shape=(8, 8, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
    }


def save(tmp_path, d, name="set.npz"):
    path = tmp_path / name
    np.savez(path, **d)
    return path


def test_round_trip_rgb_with_extra_keys(tmp_path):
    d = arrays()
    d["z_train"] = np.ones((40, 2))  # extra keys ride along untouched
    path = save(tmp_path, d)
    got = load_npz(path)
    np.testing.assert_array_equal(got["x_train"], d["x_train"])
    np.testing.assert_array_equal(got["z_train"], d["z_train"])
    data = load_dataset(f"npz:{path}")
    assert data.x_train.shape == (40, 3, 8, 8) and data.num_classes == 4
    # channel c of image n is the last axis of the file: (N, H, W, C) -> (N, C, H, W)
    assert data.x_train[3, 2, 1, 5] == pytest.approx(d["x_train"][3, 1, 5, 2] / 255)


def test_grayscale_and_uint8_labels(tmp_path):
    d = arrays(shape=(6, 6))
    d["y_train"], d["y_test"] = d["y_train"].astype(np.uint8), d["y_test"].astype(np.uint8)
    data = load_dataset(f"npz:{save(tmp_path, d)}", preprocess="standardize")
    assert data.x_train.shape == (40, 1, 6, 6) and data.y_train.dtype == torch.int64
    assert abs(float(data.x_train[:].mean())) < 1e-5  # standardised with the training statistics


def bad(key, value):
    def change(d):
        d[key] = value(d) if callable(value) else value
        return d
    return change


@pytest.mark.parametrize("change, message", [
    (lambda d: {k: v for k, v in d.items() if k != "y_train"}, "missing keys \\['y_train'\\]"),
        (lambda d: {k: v for k, v in d.items() if k != "y_test"}, "x_test / y_test without"),
        (bad("y_train", lambda d: d["y_train"] - 2), "below -1"),
        (bad("y_train", lambda d: np.full_like(d["y_train"], -1)), "every y_train label is -1"),
    (bad("x_train", lambda d: d["x_train"].astype(np.float32)), "must be uint8"),
    (bad("x_train", lambda d: d["x_train"][..., :2]), "C = 1 or 3"),
    (bad("x_train", lambda d: d["x_train"].reshape(40, -1)), "expected \\(N, H, W\\)"),
    (bad("y_train", lambda d: d["y_train"][:-1]), "one label per image"),
    (bad("y_test", lambda d: d["y_test"].astype(np.float64)), "must be integers"),
    (bad("y_test", lambda d: d["y_test"] - 1), "negative labels"),
    (bad("y_train", lambda d: np.where(d["y_train"] == 2, 1, d["y_train"])), "classes \\[2\\]"),
    (bad("x_test", lambda d: d["x_test"][:, :4]), "differ in shape"),
])
def test_invalid_files_are_refused(tmp_path, change, message):
    path = save(tmp_path, change(arrays()))
    with pytest.raises(DRMMError, match=message):
        load_arrays(f"npz:{path}")


def test_truncated_and_missing_files(tmp_path):
    path = save(tmp_path, arrays())
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DRMMError, match="not a readable .npz"):
        load_npz(path)
    with pytest.raises(DRMMError, match="does not exist"):
        load_npz(tmp_path / "absent.npz")


def test_real_cifar10_copy(shared_data):
    """../shared/data/cifar10/cifar10.npz is the official CIFAR-10, read as prepared arrays."""
    path = shared_data / "cifar10" / "cifar10.npz"
    if not path.is_file():
        pytest.skip("no cifar10.npz in ../shared/data")
    a = load_npz(path)
    assert a["x_train"].shape == (50000, 32, 32, 3) and a["x_test"].shape == (10000, 32, 32, 3)
    assert np.bincount(a["y_train"]).tolist() == [5000] * 10
    assert np.bincount(a["y_test"]).tolist() == [1000] * 10
    red = a["x_train"][..., 0].mean(dtype=np.float64)  # the README's training mean, channel 0
    assert red == pytest.approx(125.307, abs=1e-3)
