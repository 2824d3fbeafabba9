"""SVHN and CIFAR-10 loaders on small files the tests write in each official format, their
checksums, downloads and damaged copies; the preprocessing; the svhn / cifar10 presets."""

import hashlib
import io
import pickle
import tarfile
import urllib.error
import warnings

import numpy as np
import pytest
import scipy.io
import torch

from drmm.config import preset
from drmm.data import cifar10, load_dataset, svhn
from drmm.data.preprocess import apply_preprocess, channel_stats, contrast_normalize, fit_zca
from drmm.errors import DRMMError
from drmm.model import DRMM
from drmm.step import step_weights


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# SVHN: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0, MATLAB v5 files.


def write_svhn(folder, n_train=30, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.tile(np.arange(1, 11, dtype=np.uint8), n // 10 + 1)[:n, None]  # (N, 1), 1..10
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        arrays[split] = (x, y)
    return arrays


def test_svhn_mat_layout_and_label_ten_is_zero(tmp_path):
    arrays = write_svhn(tmp_path)
    x, y = svhn.read_svhn_mat(tmp_path / "train_32x32.mat")
    raw_x, raw_y = arrays["train"]
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    # image n, row h, column w, channel c sits at X[h, w, c, n] in the file
    assert x[7, 3, 20, 2] == raw_x[3, 20, 2, 7]
    np.testing.assert_array_equal(x[5], raw_x[:, :, :, 5])
    assert y[raw_y[:, 0] == 10].tolist() == [0] * int((raw_y == 10).sum())
    keep = raw_y[:, 0] != 10
    np.testing.assert_array_equal(y[keep], raw_y[keep, 0])
    assert sorted(set(y.tolist())) == list(range(10))


def test_svhn_load_dataset_with_checksums(tmp_path, monkeypatch):
    write_svhn(tmp_path / "svhn")
    monkeypatch.setattr(svhn, "FILES", {n: md5(tmp_path / "svhn" / n) for n in svhn.FILES})
    data = load_dataset("svhn", tmp_path)
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    assert data.num_classes == 10 and 0.0 <= data.x_train[:].min() and data.x_train[:].max() <= 1.0


def test_svhn_bad_checksum_is_refused(tmp_path):
    write_svhn(tmp_path)  # real layout, but not the official bytes
    with pytest.raises(DRMMError, match="bad checksum"):
        load_dataset("svhn", tmp_path)


def test_svhn_truncated_file(tmp_path):
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DRMMError, match="corrupt or truncated"):
        svhn.read_svhn_mat(path)
    with pytest.raises(DRMMError, match="truncated"):  # --no-verify skips md5, not the checks
        svhn.load_svhn(tmp_path, verify=False)


@pytest.mark.parametrize("x_shape, y_values, message", [
    ((20, 32, 32, 3), None, "uint8 \\(32, 32, 3, N\\)"),  # images first: not SVHN's layout
    ((32, 32, 3, 20), np.zeros((20, 1)), "1..10"),  # labels 0..9: not SVHN's labels
    ((32, 32, 3, 20), np.ones((19, 1)), "holds 20 images"),
])
def test_svhn_wrong_contents(tmp_path, x_shape, y_values, message):
    y = np.ones((20, 1), np.uint8) if y_values is None else y_values
    scipy.io.savemat(tmp_path / "f.mat", {"X": np.zeros(x_shape, np.uint8), "y": y})
    with pytest.raises(DRMMError, match=message):
        svhn.read_svhn_mat(tmp_path / "f.mat")


def test_svhn_download_into_cache_then_reuse(tmp_path, monkeypatch):
    """A missing file is downloaded from the official URL, checked, and cached atomically."""
    write_svhn(tmp_path / "src")
    blobs = {svhn.URL + n: (tmp_path / "src" / n).read_bytes() for n in svhn.FILES}
    monkeypatch.setattr(svhn, "FILES", {n: hashlib.md5(blobs[svhn.URL + n]).hexdigest()
                                        for n in svhn.FILES})
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        return io.BytesIO(blobs[url])

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    data = load_dataset("svhn")
    assert sorted(asked) == sorted(blobs) and len(data.y_train) == 30
    cached = sorted(p.name for p in (tmp_path / "cache" / "svhn").iterdir())
    assert cached == ["test_32x32.mat", "train_32x32.mat"]  # no .part files left behind
    load_dataset("svhn")
    assert len(asked) == 2  # the second load reads the cache


def test_svhn_failed_download_is_one_error(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DRMMError, match="--data-dir"):
        load_dataset("svhn")
    assert not list((tmp_path / "cache" / "svhn").glob("*"))  # nothing half-written


# ---------------------------------------------------------------------------------------------
# CIFAR-10: cifar-10-python.tar.gz with pickled batches {data: (N, 3072) uint8, labels: [...]}.


def batch_pickle(x, y, numpy1_names=True) -> bytes:
    d = {b"batch_label": b"fabricated", b"labels": [int(v) for v in y],
         b"data": x, b"filenames": [b"img.png"] * len(y)}
    raw = pickle.dumps(d, protocol=2)  # protocol 2 as the official Python 2 files
    if numpy1_names:  # the official files name NumPy 1's module
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return raw


def write_cifar(path, per_batch=4, seed=0, members=None):
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    kept = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in ["batches.meta", *reversed(names)]:  # not in reading order on purpose
            if name == "batches.meta":
                raw = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
            else:
                x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
                y = rng.integers(0, 10, per_batch)
                kept[name] = (x, y)
                raw = batch_pickle(x, y)
            if members is not None and name in names and name not in members:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return kept


def test_cifar_tarball_layout(tmp_path):
    kept = write_cifar(tmp_path / cifar10.ARCHIVE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # NumPy 1 names read without warning
        a = cifar10.read_cifar10_tarball(tmp_path / cifar10.ARCHIVE)
    assert a["x_train"].shape == (20, 32, 32, 3) and a["x_test"].shape == (4, 32, 32, 3)
    x1, y1 = kept["data_batch_1"]
    # row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major 32 x 32
    n, h, w, c = 2, 5, 17, 1
    assert a["x_train"][n, h, w, c] == x1[n, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(a["y_train"][:4], y1)  # data_batch_1 comes first
    np.testing.assert_array_equal(a["y_train"][16:], kept["data_batch_5"][1])
    np.testing.assert_array_equal(a["y_test"], kept["test_batch"][1])


def test_cifar_load_dataset_with_checksum(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    write_cifar(tmp_path / "cifar10" / cifar10.ARCHIVE)
    monkeypatch.setattr(cifar10, "MD5", md5(tmp_path / "cifar10" / cifar10.ARCHIVE))
    data = load_dataset("cifar10", tmp_path, preprocess="standardize")
    assert data.x_train.shape == (20, 3, 32, 32) and data.preprocess == "standardize"
    torch.testing.assert_close(data.x_train[:].mean(dim=(0, 2, 3)), torch.zeros(3),
                               atol=1e-5, rtol=0)


def test_cifar_bad_checksum_and_truncation(tmp_path):
    path = tmp_path / cifar10.ARCHIVE
    write_cifar(path)
    with pytest.raises(DRMMError, match="bad checksum"):
        load_dataset("cifar10", tmp_path)
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 4):  # the last cut only loses gzip's trailer
        path.write_bytes(raw[:cut])
        with pytest.raises(DRMMError, match="corrupt or truncated"):
            cifar10.load_cifar10(tmp_path, verify=False)


def test_cifar_arrays_in_data_dir_are_checked_and_used(tmp_path, monkeypatch):
    """--data-dir with cifar10.npz and no tarball: the arrays, each sha256-checked."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
              "y_train": (np.arange(20) % 10).astype(np.uint8),
              "x_test": rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8),
              "y_test": (np.arange(10) % 10).astype(np.uint8)}
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / cifar10.NPZ, **arrays)
    with pytest.raises(DRMMError, match="x_train is not the official CIFAR-10"):
        load_dataset("cifar10", tmp_path)
    monkeypatch.setattr(cifar10, "ARRAY_SHA256", {
        k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()})
    data = load_dataset("cifar10", tmp_path)
    assert data.x_train.shape == (20, 3, 32, 32) and data.num_classes == 10
    torch.testing.assert_close(data.x_train[3, 1], torch.from_numpy(arrays["x_train"][3, :, :, 1])
                               .float() / 255)


def test_cifar_arrays_of_the_shared_copy(shared_data):
    a = cifar10.load_cifar10(shared_data)
    assert a["x_train"].shape == (50000, 32, 32, 3) and np.bincount(a["y_test"]).tolist() == [
        1000] * 10


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path / "c.tar.gz", members=["data_batch_1", "test_batch"])
    with pytest.raises(DRMMError, match="data_batch_2"):
        cifar10.read_cifar10_tarball(tmp_path / "c.tar.gz")


class Planted:
    """Unpickling this would create a file: the restricted unpickler must refuse it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_cifar_pickle_cannot_run_code(tmp_path):
    victim = tmp_path / "created-by-pickle"
    raw = pickle.dumps({b"data": Planted(victim), b"labels": [0]}, protocol=2)
    with pytest.raises(DRMMError, match="not allowed"):
        cifar10.read_batch(raw, "planted")
    assert not victim.exists()


def test_cifar_batch_with_wrong_rows(tmp_path):
    raw = batch_pickle(np.zeros((3, 1024), np.uint8), [0, 1, 2])
    with pytest.raises(DRMMError, match="uint8 \\(N, 3072\\)"):
        cifar10.read_batch(raw, "grey batch")


# ---------------------------------------------------------------------------------------------
# Preprocessing: statistics from the training images only.


def test_standardize_uses_training_statistics_only():
    g = torch.Generator().manual_seed(0)
    x_train = torch.rand(200, 3, 4, 4, generator=g) * torch.tensor([1.0, 0.5, 0.2])[:, None, None]
    x_test = torch.rand(50, 3, 4, 4, generator=g) * 0.3 + 0.6  # another distribution
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    expected_test = (x_test - mean[:, None, None]) / std[:, None, None]
    tr, te, _ = apply_preprocess(x_train.clone(), x_test.clone(), "standardize")
    torch.testing.assert_close(tr.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(tr.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False),
                               torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(te, expected_test, atol=1e-5, rtol=1e-5)
    assert te.mean() > 0.5  # the test set keeps its own offset: it did not enter the statistics


def test_standardize_constant_channel_stays_finite():
    x = torch.rand(10, 2, 3, 3)
    x[:, 1] = 0.25
    mean, std = channel_stats(x)
    tr, _, _ = apply_preprocess(x.clone(), x[:2].clone(), "standardize")
    assert std[1] == 1.0 and torch.isfinite(tr).all() and tr[:, 1].abs().max() == 0


def test_zca_whitens_with_the_ladder_recipe():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(48, 48, generator=g)
    x_train = (torch.randn(2000, 48, generator=g) @ mixing).reshape(2000, 3, 4, 4)
    x_test = (torch.randn(100, 48, generator=g) @ mixing).reshape(100, 3, 4, 4)
    gcn_train = contrast_normalize(x_train.clone()).reshape(2000, -1).double()
    norms = gcn_train.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 55.0), rtol=1e-5, atol=0)  # scale 55
    # Independent reference in float64: cov = V diag(e) V^T, P = V diag((e + 0.1)^-1/2) V^T.
    mu = gcn_train.mean(dim=0)
    cov = (gcn_train - mu).T @ (gcn_train - mu) / len(gcn_train)
    e, v = torch.linalg.eigh(cov)
    p_ref = v @ torch.diag((e.clamp_min(0) + 0.1).rsqrt()) @ v.T
    gcn_test = contrast_normalize(x_test.clone()).reshape(100, -1).double()
    tr, te, _ = apply_preprocess(x_train.clone(), x_test.clone(), "zca")
    torch.testing.assert_close(te.reshape(100, -1).double(), (gcn_test - mu) @ p_ref,
                               atol=2e-3, rtol=2e-3)
    # The whitened training covariance is V diag(e / (e + 0.1)) V^T: near 1 on strong directions.
    w = tr.reshape(2000, -1).double()
    w_cov = (w - w.mean(0)).T @ (w - w.mean(0)) / len(w)
    torch.testing.assert_close(w_cov, v @ torch.diag(e / (e + 0.1)) @ v.T, atol=2e-3, rtol=0)
    mean, p = fit_zca(contrast_normalize(x_train.clone()))
    assert p.shape == (48, 48) and torch.allclose(p, p.T, atol=1e-5)


def test_gcn_centres_and_scales_each_image_alone():
    x_train, x_test = torch.rand(20, 3, 4, 4) + torch.rand(20, 1, 1, 1), torch.rand(5, 3, 4, 4)
    tr, te, _ = apply_preprocess(x_train.clone(), x_test.clone(), "gcn")
    for x in (tr, te):
        flat = x.reshape(len(x), -1)
        torch.testing.assert_close(flat.mean(1), torch.zeros(len(x)), atol=1e-5, rtol=0)
        torch.testing.assert_close(flat.norm(dim=1), torch.full((len(x),), 55.0))
    # an image's result does not depend on the others (no statistics shared across images)
    torch.testing.assert_close(te[0], apply_preprocess(x_train[:2].clone(), x_test[:1].clone(),
                                                       "gcn")[1][0])


def test_zca_refuses_huge_images():
    with pytest.raises(DRMMError, match="standardize"):
        apply_preprocess(torch.zeros(2, 3, 64, 64), torch.zeros(1, 3, 64, 64), "zca")


def test_unknown_preprocess_fails_before_reading_data(tmp_path):
    with pytest.raises(DRMMError, match="none.*standardize.*gcn.*zca"):
        load_dataset("svhn", tmp_path, preprocess="whiten")  # no SVHN file exists here


# ---------------------------------------------------------------------------------------------
# Presets: Table 6's weights for colour images; SVHN on ConvLarge, CIFAR-10 on the photo
# recipe's network (Table 4 itself runs ConvLarge: drmm reproduce table4).


@pytest.mark.parametrize("name, arch", [("svhn", "conv_large"), ("cifar10", "conv_photo")])
def test_colour_presets(name, arch):
    cfg = preset(name)
    lo = cfg.loss
    assert (cfg.model.arch, cfg.model.in_channels, cfg.model.image_size) == (arch, 3, 32)
    assert (lo.alpha_h, lo.alpha_rc, lo.alpha_kl, lo.alpha_nn) == (1.0, 0.5, 0.2, 0.5)
    assert cfg.train.preprocess == "standardize" and cfg.train.dataset == name
    model = DRMM(cfg.model)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert preset("mnist").train.preprocess == "none"  # MNIST stays in [0, 1]


def test_table4_runs_convlarge_with_the_papers_weights(tmp_path):
    from drmm.reproduce.plan import plan

    runs = plan("table4", "paper", ["+KL+NN"], [4000], [0], tmp_path, {}, {})
    cfg = runs[0].cfg
    assert cfg.model.arch == "conv_large" and cfg.train.augment == "none"
    weights = step_weights(cfg, 0, 10)  # the paper's step: not the preset's consistency term
    assert (weights["rc"], weights["kl"], weights["con"]) == (0.5, 0.2, 0.0)
