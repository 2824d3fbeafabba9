"""Pictures of a run for a person: the confusion matrix, the learning curves, images beside
their renderings (section 4.1's top-down pass), as PNG bytes or RGB arrays.

Figures are matplotlib Figure objects drawn by the Agg canvas, never through pyplot's state:
the training process keeps whatever backend its user chose, and nothing needs a display.
The learning curves plot every loss term the records hold (`train_<name>` of drmm.losses.TERMS,
and their weighted sum `train_loss`), so a term added to the objective shows up by itself.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay

from drmm.losses import TERMS

VALUES_UP_TO = 20  # classes up to which the confusion matrix prints its counts in the cells


# ----------------------------------------------------------------------------------------------
# Figures


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_rgb(fig: Figure) -> np.ndarray:
    """The figure drawn as uint8 (H, W, 3) pixels (for TensorBoard's add_image)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)


def confusion_figure(counts, class_names: list[str], title: str = "") -> Figure:
    """The (K, K) confusion counts (rows: true class, columns: predicted) as a picture."""
    counts = np.asarray(counts)
    k = len(class_names)
    side = min(2.5 + 0.45 * k, 12.0)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.subplots()
    ConfusionMatrixDisplay(counts, display_labels=class_names).plot(
        ax=ax, colorbar=False, cmap="Blues", include_values=k <= VALUES_UP_TO,
        xticks_rotation="vertical" if max(map(len, class_names)) > 3 else "horizontal")
    ax.set(xlabel="predicted class", ylabel="true class")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def loss_terms(history: list[dict]) -> list[str]:
    """The loss terms the records hold, in the objective's order: "loss" (the weighted sum),
    then each term of drmm.losses.TERMS that was logged, then any other `train_` entry."""
    logged = {k[len("train_"):] for r in history for k in r if k.startswith("train_")}
    known = ["loss", *TERMS]
    return [t for t in known if t in logged] + sorted(logged - set(known))


def curves_figure(history: list[dict]) -> Figure | None:
    """Test error (%) and every loss term per epoch, one small panel each; None without
    records."""
    if not history:
        return None
    panels = ([("test error, %", "test_error", 100.0)]
              if any(r.get("test_error") is not None for r in history) else [])
    panels += [(f"train {t}", f"train_{t}", 1.0) for t in loss_terms(history)]
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    height = 2.3 * rows  # inches
    fig = Figure(figsize=(3.0 * cols, height))  # fixed margins (in inches): twice as fast as
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.45 / height, top=1 - 0.3 / height,
                        hspace=0.75, wspace=0.3)  # constrained layout, and as tidy here
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, key, scale) in zip(axes, panels, strict=False):
        points = [(r["epoch"], scale * r[key]) for r in history if r.get(key) is not None]
        ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(panels):]:
        ax.axis("off")
    return fig


# ----------------------------------------------------------------------------------------------
# Images


def stretched(x: torch.Tensor) -> np.ndarray:
    """Float images (N, C, H, W), whatever their preprocessing, as uint8 (N, H, W, C): each
    image min-max stretched to 0..255 (a rendering's range is its own)."""
    x = x.detach().float().cpu()  # (N, C, H, W)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    x = (x - lo) / (hi - lo + 1e-8)  # (N, C, H, W) in [0, 1]
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)


def as_hwc(pixels: torch.Tensor) -> np.ndarray:
    """uint8 pixels (N, C, H, W) as (N, H, W, C)."""
    return pixels.detach().cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, C)


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 image (H, W, 1) or (H, W, 3) as PNG bytes."""
    image = image[..., 0] if image.shape[-1] == 1 else image  # (H, W) or (H, W, 3)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def image_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Rows of uint8 images (each (N_r, H, W, C), one size) as one (H', W', 3) picture, white
    between images and after a short row."""
    h, w, c = rows[0].shape[1:]
    n = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[top:top + h, left:left + w] = img if c == 3 else img.repeat(3, axis=-1)
    return grid  # (H', W', 3)
