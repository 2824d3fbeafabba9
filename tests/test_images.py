"""Loaded images stay uint8 and give the float32 batches that converting the whole set would."""

import numpy as np
import pytest
import torch
from helpers import tiny_arrays, write_npz

from drmm.config import preset
from drmm.data import Images, load_dataset, to_tensor_images
from drmm.data.images import take
from drmm.data.preprocess import apply_preprocess
from drmm.step import epoch_order, make_batch


def rgb_arrays() -> dict[str, np.ndarray]:
    a = tiny_arrays()
    rng = np.random.default_rng(1)

    def colour(x):  # (N, H, W) -> (N, H, W, 3)
        return np.stack([x, 255 - x, rng.integers(0, 256, x.shape)], -1).astype(np.uint8)

    return {**a, "x_train": colour(a["x_train"]), "x_test": colour(a["x_test"])}


@pytest.mark.parametrize("mode", ["none", "standardize", "gcn", "zca"])
def test_uint8_storage_gives_the_float_conversion_of_the_whole_set(tmp_path, mode):
    a = rgb_arrays()
    data = load_dataset(write_npz(tmp_path / "d.npz", **a), preprocess=mode)
    assert data.x_train.pixels.dtype == torch.uint8 and data.x_test.pixels.dtype == torch.uint8
    assert data.x_train.nbytes == to_tensor_images(a["x_train"]).numel()  # a byte per value
    # the whole set made float32 first, then preprocessed: how the images were held before
    whole_train, whole_test, pre = apply_preprocess(to_tensor_images(a["x_train"]),
                                                    to_tensor_images(a["x_test"]), mode)
    idx = torch.tensor([5, 0, 79, 5, 33])  # any order, repeats allowed
    torch.testing.assert_close(data.x_train[idx], whole_train[idx])
    torch.testing.assert_close(data.x_test[:], whole_test)
    torch.testing.assert_close(torch.cat(data.x_train.split(30)), whole_train)
    assert data.x_train[idx].dtype == torch.float32 and data.x_train.shape == whole_train.shape


def test_a_training_batch_is_the_same_from_uint8_or_float_images(tmp_path):
    data = load_dataset(write_npz(tmp_path / "d.npz", **rgb_arrays()), preprocess="standardize")
    cfg = preset("cifar10")  # crop and mirror, strong views for the consistency term
    cfg.train.batch_size, cfg.train.labeled_batch = 20, 10
    labeled = torch.arange(0, 80, 8)  # (10,)
    batches = []
    for x in (data.x_train, data.x_train[:]):  # uint8 Images, then the float32 tensor
        gen = torch.Generator().manual_seed(0)
        order = epoch_order(labeled, len(x), gen, 4 * 10)
        torch.manual_seed(0)  # the augmentations' draws
        batches.append(make_batch(cfg, x, data.y_train, order, 2, {"con": 1.0}))
    for name in ("x_lab", "y_lab", "x_unl", "x_strong"):
        torch.testing.assert_close(getattr(batches[0], name), getattr(batches[1], name),
                                   rtol=0, atol=0, msg=name)


def test_take_keeps_uint8_and_int_indexing_is_refused(tmp_path):
    data = load_dataset(write_npz(tmp_path / "d.npz"))
    sub = take(data.x_train, torch.tensor([3, 1]))
    assert isinstance(sub, Images) and sub.pixels.dtype == torch.uint8 and len(sub) == 2
    torch.testing.assert_close(sub[:], data.x_train[torch.tensor([3, 1])], rtol=0, atol=0)
    with pytest.raises(TypeError, match="slice"):
        data.x_train[0]
    with pytest.raises(ValueError, match="uint8"):
        Images(torch.zeros(2, 1, 4, 4), data.preprocessor)
