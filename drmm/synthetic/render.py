"""The synthetic data set of section 5.4: rendered images with their latents, from one seed.

`render_dataset` returns the prepared-arrays format (drmm/data/npz.py): x_train, y_train,
x_test, y_test (uint8 images, int64 labels) plus z_train, z_test (float32, one column per
latent, see drmm/synthetic/scene.py), z_names and class_names.

Determinism: the seed is split (numpy SeedSequence) into a train and a test stream, and each
into a scene stream and a noise stream, each drawn image by image. So the test set does not
depend on --n-train, a larger training set extends a smaller one, and the images do not depend
on the batch size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from drmm.synthetic.raycast import render_object
from drmm.synthetic.scene import Z_NAMES, RenderConfig, Scenes, sample_scenes
from drmm.synthetic.shapes import CLASS_NAMES, object_classes


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads, then restore. One thread is the default: the per-class
    tensors are small, and on a 2-core machine busy with training runs, two threads took 6x as
    long as one (500 images: 3.5 s against 0.56 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render_scenes(scenes: Scenes, cfg: RenderConfig, classes=None, threads: int = 1
                  ) -> np.ndarray:
    """Noise-free float32 images (n, H, W) in [0, 1], one class at a time."""
    classes = classes if classes is not None else object_classes()
    out = np.empty((len(scenes), cfg.image_size, cfg.image_size), np.float32)
    with torch_threads(threads):
        for c in np.unique(scenes.labels):
            idx = np.flatnonzero(scenes.labels == c)
            out[idx] = render_object(classes[c], scenes.take(idx), cfg).numpy()
    return out


def to_uint8(images: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((images + noise) * 255.0), 0, 255).astype(np.uint8)


def render_split(n: int, seed: np.random.SeedSequence, cfg: RenderConfig, batch_size: int = 500,
                 on_batch: Callable[[int], None] | None = None, threads: int = 1):
    """n images (uint8 (n, H, W)), labels (n,) and latents (n, 7) float32."""
    scene_seed, noise_seed = seed.spawn(2)
    scenes = sample_scenes(n, len(CLASS_NAMES), scene_seed, cfg)
    noise_rng = np.random.default_rng(noise_seed)
    classes = object_classes()
    x = np.empty((n, cfg.image_size, cfg.image_size), np.uint8)
    for i in range(0, n, batch_size):
        idx = np.arange(i, min(i + batch_size, n))
        images = render_scenes(scenes.take(idx), cfg, classes, threads)  # (b, H, W)
        noise = noise_rng.standard_normal(images.shape) * cfg.noise_std  # drawn in image order
        x[idx] = to_uint8(images, noise)
        if on_batch is not None:
            on_batch(len(idx))
    return x, scenes.labels, scenes.z.astype(np.float32)


def render_dataset(n_train: int, n_test: int, seed: int, cfg: RenderConfig | None = None,
                   batch_size: int = 500, on_batch: Callable[[int], None] | None = None,
                   threads: int = 1) -> dict:
    """The whole data set as a dict of arrays, ready for np.savez."""
    cfg = cfg or RenderConfig()
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train, z_train = render_split(n_train, train_seed, cfg, batch_size, on_batch,
                                             threads)
    x_test, y_test, z_test = render_split(n_test, test_seed, cfg, batch_size, on_batch, threads)
    return {
        "x_train": x_train, "y_train": y_train, "z_train": z_train,
        "x_test": x_test, "y_test": y_test, "z_test": z_test,
        "z_names": np.array(Z_NAMES), "class_names": np.array(CLASS_NAMES),
    }


def images_per_second(n: int, seed: int = 0, cfg: RenderConfig | None = None,
                      batch_size: int = 500, threads: int = 1) -> tuple[float, float]:
    """Render n images once; returns (seconds, images per second)."""
    t0 = time.perf_counter()
    render_split(n, np.random.SeedSequence(seed), cfg or RenderConfig(), batch_size,
                 threads=threads)
    seconds = time.perf_counter() - t0
    return seconds, n / seconds
