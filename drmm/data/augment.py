"""Data augmentation of a training batch, on the device, each image with its own draw.

"crop_flip" is the standard CIFAR-10 augmentation (a random crop of the image zero-padded by
4 pixels, and a horizontal flip half the time), which the authors' follow-up Neural Rendering
Model used on CIFAR-10; "translate" shifts each image by up to 2 pixels each way, no flip (for
digits, where a mirror image is another symbol). The DRMM paper used neither. Both halves of
the batch are augmented: the reconstruction target of an unlabeled image is the image the model
was shown. The draws come from torch's global generator on the batch's device, which the
checkpoint saves, so a resumed run stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop_flip", "translate")
PAD = 4  # pixels of zero padding around the image for crop_flip's random crop
SHIFT = 2  # translate: the largest shift, pixels each way


def random_crop(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C, H, W): per image, a random H x W crop of x zero-padded by `pad`
    pixels (0 is the mean of standardized images), mirrored left-right half the time if flip."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=x.device)  # (B, 1, 1) crop offsets
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=x.device)
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)  # (B, H, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)  # (B, 1, W)
    if flip:
        mirror = torch.rand(b, 1, 1, device=x.device) < 0.5  # (B, 1, 1)
        cols = torch.where(mirror, 2 * dx + w - 1 - cols, cols)  # the crop's columns, mirrored
    out = padded[torch.arange(b, device=x.device).view(b, 1, 1), :, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), laid out channels-last


def augment(batch: tuple, mode: str) -> tuple:
    """(x_lab, y_lab, x_unl) with both image halves augmented as `mode` says (x_unl may be
    None: a supervised-only batch)."""
    if mode == "none":
        return batch
    x_lab, y_lab, x_unl = batch
    pad, flip = (PAD, True) if mode == "crop_flip" else (SHIFT, False)
    return (random_crop(x_lab, pad, flip), y_lab,
            None if x_unl is None else random_crop(x_unl, pad, flip))
