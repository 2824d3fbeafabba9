"""A PNG of rendered samples: one row per class, at their true intensities (Figure 3's role)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from drmm.files import atomic_write


def save_class_grid(x: np.ndarray, y: np.ndarray, class_names, path: str | Path,
                    per_class: int = 10) -> None:
    """x: (N, H, W) uint8, y: (N,) labels; the first per_class images of each class in a row."""
    k = len(class_names)
    fig = Figure(figsize=(per_class * 0.8, k * 0.9))
    axes = fig.subplots(k, per_class, squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(y == c)[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(idx):
                ax.imshow(x[idx[j]], cmap="gray", vmin=0, vmax=255)  # no per-image stretch
        axes[c, 0].set_title(str(class_names[c]), fontsize=7, loc="left")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
