"""Data augmentation of a training batch, on the device, each image with its own draw.

"crop_flip" is the standard CIFAR-10 augmentation (a random crop of the image zero-padded by
4 pixels, and a horizontal flip half the time), which the authors' follow-up Neural Rendering
Model used on CIFAR-10; "translate" shifts each image by up to 2 pixels each way, no flip (for
digits, where a mirror image is another symbol); "affine" adds to those shifts a rotation and a
rescaling, resampled bilinearly, for the slant and size of handwriting that a few labeled
digits do not cover (on MNIST-100 it ended worse than translate alone: docs/recipe.md). The DRMM
paper used none of them. Both halves of the batch are augmented: the reconstruction target of an
unlabeled image is the image the model was shown. `strong_view` is the second view of the
optional consistency term (drmm/losses.py, L_CON): "affine" and a square cut out, and with
`colour` a change of brightness, contrast and saturation as well, as FixMatch's RandAugment
changes photos' colours (Sohn et al., 2020; Cubuk et al., 2020; the strength is SimCLR's colour
jitter for CIFAR-10). The draws come from torch's global generator on the batch's device, which
the checkpoint saves, so a resumed run stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop_flip", "translate", "affine")
PAD = 4  # pixels of zero padding around the image for crop_flip's random crop
SHIFT = 2  # translate, affine: the largest shift, pixels each way
ROTATE = 10.0  # affine: the largest rotation, degrees either way
SCALE = 0.1  # affine: the largest change of size, a fraction either way (0.9x to 1.1x)
CUTOUT = 0.4  # strong_view: side of the square set to 0, a fraction of the image's side
STRONG_VIEWS = ("affine", "colour")  # train.strong_view: the consistency term's second view
JITTER = 0.4  # colour: the largest change of brightness (standard deviations), contrast and
#               saturation (fractions), each way


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


def random_affine(x: torch.Tensor, rotate: float, scale: float, shift: int) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C, H, W): per image, a rotation about the centre by up to `rotate`
    degrees, a zoom by a factor in [1 - scale, 1 + scale] and a shift of up to `shift` pixels
    each way, all uniform; bilinear, zero outside the image. The shift is drawn in the input's
    frame, so in the output it is turned and zoomed too (at most 2.55 px each way for 10
    degrees, 1.1x and 2 px)."""
    b, _, h, w = x.shape
    u = torch.rand(b, 4, device=x.device) * 2 - 1  # (B, 4) uniform in [-1, 1)
    angle = u[:, 0] * rotate * torch.pi / 180  # (B,) radians
    zoom = 1 + u[:, 1] * scale  # (B,) > 1 draws the digit larger
    cos, sin = angle.cos() / zoom, angle.sin() / zoom  # (B,) output -> input coordinates
    # affine_grid's coordinates run from -1 to 1 across the image: a pixel is 2/W (or 2/H) wide
    tx, ty = u[:, 2] * shift * 2 / w, u[:, 3] * shift * 2 / h  # (B,) the shifts, grid units
    theta = torch.stack([torch.stack([cos, -sin, tx], 1),
                         torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)  # (B, C, H, W)


def cutout(x: torch.Tensor, size: float) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C, H, W): per image, a square of side size * H (and * W) set to 0
    (the background of [0, 1] digits, the mean of standardized images), its centre uniform over
    the image, so it may hang over the edge (DeVries and Taylor, 2017)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)  # (B, 1, 1) the square's centre
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    ry, rx = round(size * h / 2), round(size * w / 2)  # half sides, pixels
    rows = torch.arange(h, device=x.device).view(1, h, 1)  # (1, H, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)  # (1, 1, W)
    inside = ((rows - cy).abs() < ry) & ((cols - cx).abs() < rx)  # (B, H, W)
    return x.masked_fill(inside.unsqueeze(1), 0.0)  # (B, C, H, W)


def colour_jitter(x: torch.Tensor, jitter: float) -> torch.Tensor:
    """x (B, C, H, W) standardized -> (B, C, H, W): per image, its brightness shifted by up to
    `jitter` standard deviations, its contrast about its own mean and (colour images) its
    saturation about its grey each scaled by a factor in [1 - jitter, 1 + jitter], uniform."""
    b = len(x)
    u = torch.rand(b, 3, 1, 1, 1, device=x.device) * 2 - 1  # (B, 3, 1, 1, 1) uniform in [-1, 1)
    x = x + u[:, 0] * jitter  # (B, C, H, W) brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = mean + (x - mean) * (1 + u[:, 1] * jitter)  # (B, C, H, W) contrast
    if x.shape[1] == 3:
        grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        x = grey + (x - grey) * (1 + u[:, 2] * jitter)  # (B, C, H, W) saturation
    return x


def strong_view(x: torch.Tensor, mirror: bool = False, colour: bool = False) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C, H, W): the consistency term's view, turned, zoomed, shifted and
    with a square cut out (the FixMatch recipe's cutout on top of "affine"); with `mirror`
    (photos: the training augmentation mirrors them too), mirrored left-right half the time;
    with `colour`, its brightness, contrast and saturation changed first (colour_jitter)."""
    if mirror:
        flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5  # (B, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)  # (B, C, H, W)
    if colour:
        x = colour_jitter(x, JITTER)  # (B, C, H, W)
    return cutout(random_affine(x, ROTATE, SCALE, SHIFT), CUTOUT)


def augment_images(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x (B, C, H, W) augmented as `mode` says, each image with its own draw."""
    if mode == "affine":
        return random_affine(x, ROTATE, SCALE, SHIFT)
    pad, flip = (PAD, True) if mode == "crop_flip" else (SHIFT, False)
    return random_crop(x, pad, flip)


def augment(batch: tuple, mode: str) -> tuple:
    """(x_lab, y_lab, x_unl) with both image halves augmented as `mode` says (x_unl may be
    None: a supervised-only batch)."""
    if mode == "none":
        return batch
    x_lab, y_lab, x_unl = batch
    return (augment_images(x_lab, mode), y_lab,
            None if x_unl is None else augment_images(x_unl, mode))
