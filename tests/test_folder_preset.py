"""A folder's preset follows its images: the grayscale recipe, or the photo recipe."""

import numpy as np
import pytest
import torch
from PIL import Image

from drmm.config import PRESETS, preset
from drmm.data.augment import strong_view


def write_folder(root, rgb: bool):
    rng = np.random.default_rng(0)
    for i in range(6):
        sub = root / "labeled" / ("a", "b")[i % 2] if i < 4 else root / "unlabeled"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (8, 8, 3) if rgb else (8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i}.png")
    return f"folder:{root}"


def test_grayscale_folders_get_the_mnist_recipe_and_say_so(tmp_path, capsys):
    cfg = preset(write_folder(tmp_path / "d", rgb=False))
    assert cfg.model.arch == "conv_small" and cfg.train.augment == "translate"
    assert cfg.train.graph_prior == 1.0 and cfg.train.consistency == 1.0
    assert cfg.train.labeled_batch == 20 and cfg.train.labels is None
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "grayscale images: the grayscale recipe" in note[0]


def test_colour_folders_get_the_photo_recipe(tmp_path, capsys):
    cfg = preset(write_folder(tmp_path / "d", rgb=True))
    assert cfg.model.arch == "conv_photo" and cfg.train.augment == "crop_flip"
    assert cfg.train.preprocess == "standardize" and cfg.train.graph_prior == 0.0
    assert cfg.train.consistency == 1.0 and cfg.loss.con_threshold == 0.8
    assert cfg.train.epochs == 50
    note = capsys.readouterr().err  # the one-line summary quotes the preset's own figures
    assert "colour images: the photo recipe" in note and "q(c|I) 0.8, Adam, 50 epochs" in note


@pytest.mark.parametrize("channels, arch", [(1, "conv_small"), (3, "conv_photo")])
def test_channels_flag_decides_the_recipe(tmp_path, channels, arch):
    folder = write_folder(tmp_path / "d", rgb=channels == 1)  # the files say the other kind
    assert preset(folder, channels, quiet=True).model.arch == arch


def test_the_folder_presets_are_not_data_set_names():
    assert {"folder", "folder_photo"} <= set(PRESETS)
    with pytest.raises(Exception, match="unknown dataset"):
        preset("folder_photo")


def test_photo_strong_views_are_mirrored_half_the_time():
    torch.manual_seed(0)
    x = torch.zeros(400, 1, 9, 9)
    x[:, :, 4, :2] = 1  # a bar at the left edge of the middle row
    out = strong_view(x, mirror=True)
    right = out[:, 0, 2:7, 5:].sum((1, 2)) > out[:, 0, 2:7, :4].sum((1, 2))  # (B,)
    assert 0.35 < right.float().mean() < 0.65  # about half moved to the right
    plain = strong_view(x)  # digits: never mirrored, the bar stays on the left
    assert not (plain[:, 0, 2:7, 5:].sum((1, 2)) > plain[:, 0, 2:7, :4].sum((1, 2))).any()
