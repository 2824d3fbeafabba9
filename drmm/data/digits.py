"""scikit-learn's bundled digits: the offline default data set (no download).

1797 8x8 grayscale digits (values 0..16). A fixed, stratified test split of 500 images (the
same for every run and seed) is held out; the remaining 1297 are the training set. Images are
upsampled to 16x16 (bilinear) so that ConvSmall's two max-pools see a useful map, and scaled
to [0, 1] like MNIST.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TEST_SIZE = 500  # held-out images
SPLIT_SEED = 0  # fixed: the test split never depends on the run's seed
IMAGE_SIZE = 16  # pixels after upsampling


def load_digits_arrays() -> dict[str, np.ndarray]:
    """uint8 arrays x_train (1297, 16, 16), y_train, x_test (500, 16, 16), y_test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (N, 16, 16)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
