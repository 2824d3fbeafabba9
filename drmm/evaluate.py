"""Test error with BatchNorm running statistics (Appendix A) and reconstruction pictures."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from drmm.files import atomic_write
from drmm.model import DRMM


@torch.no_grad()
def predicted_classes(model: DRMM, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """c-hat for images x, (N,) on x's device, in eval mode (running BN statistics)."""
    was_training = model.training
    model.eval()
    pred = torch.cat([model(b).argmax(dim=1) for b in x.split(batch_size)])  # (N,)
    model.train(was_training)
    return pred


def count_confusion(y: torch.Tensor, pred: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) counts of images by true class (row) and predicted class (column)."""
    return torch.bincount(y * k + pred, minlength=k * k).view(k, k).cpu()  # (K, K)


def confusion(model: DRMM, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
              ) -> torch.Tensor:
    """(K, K) confusion counts of the model on images x with labels y, in eval mode."""
    return count_confusion(y, predicted_classes(model, x, batch_size), model.config.num_classes)


def error_rate(counts: torch.Tensor) -> float:
    """Fraction of misclassified images in a confusion matrix."""
    total = counts.sum().item()
    return (total - counts.diagonal().sum().item()) / total  # wrong / all: exact, as 215 / 10000


def worst_confusion(counts: torch.Tensor) -> tuple[int, int, int]:
    """(true class, predicted class, images) of the largest off-diagonal cell: a class split
    between two labels (a mode of one class learned as another) shows up here first."""
    off = counts.clone().fill_diagonal_(-1)  # (K, K)
    i = int(off.argmax())
    return i // counts.shape[1], i % counts.shape[1], int(off.flatten()[i])


def test_error(model: DRMM, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of misclassified images, in eval mode (running BN statistics)."""
    return error_rate(confusion(model, x, y, batch_size))


@torch.no_grad()
def reconstruct(model: DRMM, x: torch.Tensor) -> torch.Tensor:
    """I-hat for images x, rendered top-down from the predicted class, in eval mode."""
    was_training = model.training
    model.eval()
    image = model.top_down(model.bottom_up(x)).image  # (B, C, H, W)
    model.train(was_training)
    return image


def save_image_grid(rows: list[torch.Tensor], path: str | Path, titles: list[str]) -> None:
    """Save rows of images (each (N, C, H, W); N may differ) as one PNG, one titled row each."""
    n = max(r.shape[0] for r in rows)
    fig = Figure(figsize=(n * 1.0, len(rows) * 1.25))  # no pyplot: the user's backend stays
    axes = fig.subplots(len(rows), n, squeeze=False,
                        gridspec_kw=dict(wspace=0.05, hspace=0.35))
    for r, (images, title) in enumerate(zip(rows, titles, strict=True)):
        for i in range(n):
            axes[r, i].axis("off")
            if i >= len(images):  # a shorter row: blank cells
                continue
            img = images[i].detach().float().cpu()  # (C, H, W)
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            lo, hi = img.min(), img.max()  # each image stretched to its own range
            axes[r, i].imshow(((img - lo) / (hi - lo + 1e-8)).numpy(), cmap="gray")
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def save_reconstructions(model: DRMM, x: torch.Tensor, path: str | Path, n: int = 10) -> None:
    """Test images (top row) beside their top-down reconstructions (bottom row)."""
    save_image_grid([x[:n], reconstruct(model, x[:n])], path,
                    ["test images", "reconstructions I-hat (each image min-max scaled)"])
