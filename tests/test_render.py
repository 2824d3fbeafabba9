"""The synthetic renderer of section 5.4: determinism, latent ranges, each latent's effect, CLI."""

import argparse
import dataclasses

import numpy as np
import pytest

from drmm.data import load_dataset
from drmm.data.npz import load_npz
from drmm.errors import DRMMError
from drmm.synthetic import CLASS_NAMES, Z_NAMES, RenderConfig, render_dataset
from drmm.synthetic.raycast import render_object
from drmm.synthetic.render import render_scenes
from drmm.synthetic.scene import Scenes, light_direction
from drmm.synthetic.shapes import half_extent, object_classes, part

CFG = RenderConfig()


def test_same_seed_same_images_other_seed_other_images():
    a = render_dataset(20, 10, seed=3)
    b = render_dataset(20, 10, seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = render_dataset(20, 10, seed=4)
    assert not np.array_equal(a["x_train"], c["x_train"])


def test_images_do_not_depend_on_batch_size_and_test_set_not_on_n_train():
    a = render_dataset(20, 10, seed=1, batch_size=7)
    b = render_dataset(30, 10, seed=1, batch_size=500)
    np.testing.assert_array_equal(a["x_train"], b["x_train"][:20])
    np.testing.assert_array_equal(a["z_train"], b["z_train"][:20])
    for k in ("x_test", "y_test", "z_test"):
        np.testing.assert_array_equal(a[k], b[k])


def test_arrays_formats_and_latent_ranges():
    d = render_dataset(40, 20, seed=0)
    assert d["x_train"].shape == (40, 32, 32) and d["x_train"].dtype == np.uint8
    assert d["z_train"].shape == (40, len(Z_NAMES)) and d["z_train"].dtype == np.float32
    assert list(d["z_names"]) == list(Z_NAMES)
    assert list(d["class_names"]) == list(CLASS_NAMES) and len(CLASS_NAMES) == 10
    assert np.bincount(d["y_train"], minlength=10).tolist() == [4] * 10  # balanced
    z = np.concatenate([d["z_train"], d["z_test"]])
    for k, name in enumerate(Z_NAMES):
        lo, hi = getattr(CFG, name)
        assert lo <= z[:, k].min() and z[:, k].max() <= hi, name
        assert z[:, k].max() - z[:, k].min() > 0.5 * (hi - lo), name  # really varies
    assert d["x_train"].std() > 20  # not blank


def test_every_class_is_centred_and_scaled_to_unit_half_extent():
    for name, parts in zip(CLASS_NAMES, object_classes(), strict=True):
        lo = np.min([np.asarray(p.center) - half_extent(p) for p in parts], 0)
        hi = np.max([np.asarray(p.center) + half_extent(p) for p in parts], 0)
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9, err_msg=name)
        assert np.isclose((hi - lo).max() / 2, 1.0), name


def scenes(label: int, n: int, **latents) -> Scenes:
    """n scenes of one class on a black background, lit from the camera, latents overridable."""
    base = dict(slant=20.0, tilt=30.0, x=0.0, y=0.0, depth=4.0, light_azimuth=0.0,
                light_elevation=0.0)
    z = np.zeros((n, len(Z_NAMES)))
    for k, name in enumerate(Z_NAMES):
        z[:, k] = latents.get(name, base[name])
    bg = np.zeros((n, 7))
    bg[:, 4] = 3.0  # stripe frequency; amplitude 0, so the background is exactly 0
    return Scenes(np.full(n, label), z, np.ones(n), np.ones((n, 3)), bg)


def centroid(img: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted (column, row) centre of an image on a black background."""
    rows, cols = np.indices(img.shape)
    return (img * cols).sum() / img.sum(), (img * rows).sum() / img.sum()


@pytest.mark.parametrize("label", range(10))
def test_x_moves_the_object_right_and_y_moves_it_down(label):
    shift = np.array([-0.25, 0.0, 0.25])
    for name, axis in (("x", 0), ("y", 1)):
        imgs = render_scenes(scenes(label, 3, **{name: shift}), CFG)
        pos = [centroid(im)[axis] for im in imgs]
        assert pos[0] < pos[1] < pos[2], (name, pos)
        # 0.25 half-widths = 4 pixels at 32x32; the silhouette's centroid is near the centre
        assert 2.5 < (pos[2] - pos[0]) / 2 < 5.5, (name, pos)


@pytest.mark.parametrize("label", range(10))
def test_depth_shrinks_the_object_in_place(label):
    depth = np.array([3.0, 4.5, 6.0])
    masks = render_scenes(scenes(label, 3, depth=depth), CFG) > 0
    area = masks.sum((1, 2))
    assert area[0] > area[1] > area[2], area
    assert area[0] / area[2] > 2.5  # about (6 / 3)^2 = 4 minus edge blur
    # The silhouette scales about the fixed image point of the object's centre: its centroid's
    # offset from there shrinks as 1 / depth.
    offset = np.array([centroid(m) for m in masks]) - 15.5  # (3, 2) pixels
    np.testing.assert_allclose(offset, offset[:1] * depth[0] / depth[:, None], atol=1.0)


@pytest.mark.parametrize("label", range(10))
def test_slant_and_tilt_change_the_silhouette(label):
    for name, values in (("slant", [-15.0, 45.0]), ("tilt", [-60.0, 60.0])):
        a, b = render_scenes(scenes(label, 2, **{name: np.array(values)}), CFG) > 0
        assert (a != b).mean() > 0.01, name  # more than 10 of the 1024 pixels differ


@pytest.mark.parametrize("label", range(10))
def test_light_direction_changes_the_shading(label):
    for name, values in (("light_azimuth", [-70.0, 70.0]), ("light_elevation", [0.0, 60.0])):
        a, b = render_scenes(scenes(label, 2, **{name: np.array(values)}), CFG)
        assert np.abs(a - b).mean() > 0.003, name
        np.testing.assert_array_equal(a > 0, b > 0)  # the silhouette stays


@pytest.mark.parametrize("azimuth,elevation", [(-60, 0), (60, 0), (0, 50), (45, 30), (-45, 50)])
def test_a_sphere_is_brightest_towards_the_light(azimuth, elevation):
    """Lambertian shading: the lit side of a sphere points where the light comes from."""
    sphere = [part("ellipsoid", (0, 0, 0), (1, 1, 1))]
    s = scenes(0, 2, light_azimuth=np.array([azimuth, 0.0]),
               light_elevation=np.array([elevation, 0.0]))
    img, frontal = render_object(sphere, s, CFG).numpy()
    offset = np.subtract(centroid(img), centroid(frontal))  # (column, row) pixels
    to_light = light_direction(np.array([azimuth]), np.array([elevation]))[0, :2]  # (x, y down)
    cos = offset @ to_light / np.linalg.norm(offset) / np.linalg.norm(to_light)
    assert cos > 0.95, (offset, to_light)


def run_cli(argv):
    from drmm.synthetic import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_render_command_writes_a_trainable_npz_and_a_grid(tmp_path, capsys):
    out = tmp_path / "syn.npz"
    assert run_cli(["render", "--n-train", "20", "--n-test", "10", "--seed", "2",
                    "--out", str(out), "--quiet", "--per-class", "2"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert (tmp_path / "syn_samples.png").stat().st_size > 1000
    arrays = load_npz(out)
    np.testing.assert_array_equal(arrays["x_test"], render_dataset(20, 10, seed=2)["x_test"])
    data = load_dataset(f"npz:{out}")
    assert data.image_shape == (1, 32, 32) and data.num_classes == 10


def test_render_command_rejects_bad_arguments(tmp_path):
    with pytest.raises(DRMMError, match="must end in .npz"):
        run_cli(["render", "--out", str(tmp_path / "x.zip"), "--n-train", "20"])
    with pytest.raises(DRMMError, match="at least 10"):
        run_cli(["render", "--out", str(tmp_path / "x.npz"), "--n-train", "5"])
    assert not list(tmp_path.iterdir())


def test_render_command_is_registered():
    from drmm.cli import COMMANDS

    names = {m.__name__ for m in COMMANDS}
    assert {"drmm.synthetic.cli", "drmm.analysis.cli", "drmm.analysis.sample"} <= names


def test_config_ranges_are_ordered():
    for f in dataclasses.fields(RenderConfig):
        v = getattr(CFG, f.name)
        if isinstance(v, tuple):
            assert v[0] <= v[1], f.name
