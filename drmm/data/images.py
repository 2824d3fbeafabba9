"""Images kept as uint8 and made float32 a batch at a time, on the device that holds them.

A loaded data set keeps its decoded pixels as they came from the files: one byte per value, a
quarter of the float32 tensor a model takes (a 200,000-image folder at 64 px: 2.3 GiB instead of
9.2 GiB). Indexing gives the float32 images as preprocessing leaves them, the same values the
whole set would give converted at once: x / 255, then the run's Preprocessor.
"""

from __future__ import annotations

import numpy as np
import torch

from drmm.data.preprocess import Preprocessor


class Images:
    """uint8 pixels (N, C, H, W) that index like the float32 tensor of their preprocessed images.

    `images[idx]` (a slice or an index tensor) is float32 (n, C, H, W); `len`, `shape`, `device`,
    `split` and `to` behave as a tensor's, so training, evaluation and scoring take an Images or
    a float tensor alike.
    """

    def __init__(self, pixels: torch.Tensor, preprocessor: Preprocessor):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise ValueError(f"Images holds uint8 (N, C, H, W) pixels, not {pixels.dtype}"
                             f" {tuple(pixels.shape)}")
        self.pixels = pixels  # (N, C, H, W) uint8
        self.preprocessor = preprocessor

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, int):
            raise TypeError("index Images with a slice or an index tensor: x[i:i + 1]")
        x = self.pixels[idx].float().div_(255.0)  # (n, C, H, W) in [0, 1]: a fresh tensor
        return self.preprocessor(x)  # (n, C, H, W) float32, transformed in place

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape  # (N, C, H, W)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def split(self, size: int) -> list[torch.Tensor]:
        """Float batches of `size` images, in order (as torch.Tensor.split)."""
        return [self[i:i + size] for i in range(0, len(self), size)]

    def to(self, device, memory_format: torch.memory_format = torch.contiguous_format) -> Images:
        pixels = self.pixels.to(device).contiguous(memory_format=memory_format)  # (N, C, H, W)
        return Images(pixels, self.preprocessor)

    @property
    def nbytes(self) -> int:
        return self.pixels.numel() * self.pixels.element_size()


def take(x: Images | torch.Tensor, idx) -> Images | torch.Tensor:
    """The images at `idx` in x's own form: uint8 Images stay uint8 (x[idx] would make them
    float32 at once), a tensor is indexed."""
    return Images(x.pixels[idx], x.preprocessor) if isinstance(x, Images) else x[idx]


def to_pixels(x) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) array -> uint8 tensor (N, C, H, W), one copy at most."""
    a = np.asarray(x, dtype=np.uint8)
    if a.ndim == 3:
        return torch.from_numpy(a if a.flags.writeable else a.copy())[:, None]  # (N, 1, H, W)
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W): a copy
