"""Sampling images from a trained DRMM (generation process, section 3 / Appendix B, Eq. 11-14).

Generation renders top-down: choose a class c, take its top-level template mu_c (repeated over
the final feature map, as in the top-down E-step), draw the switches g = (t, a) of every layer,
and render with the tied conv weights transposed (DRMM.render).

The switch prior p(g | c) (the paper fixes none; this is ours): independent per position,
estimated from training images the model assigns to class c (its own c-hat, so unlabeled
images count too):
- a: Bernoulli, p(a = 1 | c) at each (layer, channel, y, x) = the fraction of those images
  whose ReLU was on there;
- t: categorical over the 4 positions of each 2x2 pooling window (upper left, upper right,
  lower left, lower right) at each (layer, channel, y, x) = how often each position won.
A class that no training image is assigned to falls back to the frequencies over all images.
Because the draws are independent, a sample keeps the per-position statistics of class c but
not their correlations; it is the DRMM's generative process under a factorised prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drmm.model import DRMM, Switches


@dataclass
class SwitchPrior:
    a: list[torch.Tensor]  # per layer, (K, C, H, W) p(a = 1 | c)
    t: list[torch.Tensor | None]  # per layer, (K, C, H/2, W/2, 4) p(t = k | c), None if no pool
    top_size: tuple[int, int]  # (h, w) of the final feature map, for the class template
    counts: torch.Tensor  # (K,) training images behind each class's frequencies


def window_position(t: torch.Tensor, width: int) -> torch.Tensor:
    """Flat max-pool indices into an H x W map -> position 0..3 in their 2x2 window."""
    return (t // width % 2) * 2 + t % width % 2  # (B, C, h, w) int64


def flat_index(k: torch.Tensor, width: int) -> torch.Tensor:
    """Position 0..3 of each 2x2 window, (B, C, h, w) -> flat index into the H x W map."""
    h, w = k.shape[-2:]
    i = torch.arange(h, device=k.device).view(h, 1)
    j = torch.arange(w, device=k.device).view(1, w)
    return (2 * i + k // 2) * width + 2 * j + k % 2  # (B, C, h, w) int64


@torch.no_grad()
def fit_switch_prior(model: DRMM, x: torch.Tensor, batch_size: int = 500) -> SwitchPrior:
    """Switch frequencies per predicted class over images x (N, C, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    k = model.config.num_classes
    a_sum: list[torch.Tensor] = []
    t_sum: list[torch.Tensor | None] = []
    counts = torch.zeros(k, device=x.device)
    top_size = None
    for i in range(0, len(x), batch_size):
        bu = model.bottom_up(x[i:i + batch_size])
        c = bu.c_hat  # (b,)
        counts += torch.bincount(c, minlength=k)
        top_size = bu.top_size
        for layer, s in enumerate(bu.switches):
            if layer == len(a_sum):
                a_sum.append(torch.zeros(k, *s.a.shape[1:], device=x.device))
                t_sum.append(None if s.t is None else
                             torch.zeros(k, *s.t.shape[1:], 4, device=x.device))
            a_sum[layer].index_add_(0, c, s.a.float())
            if s.t is not None:
                pos = window_position(s.t, s.a.shape[-1])  # (b, C, h, w)
                t_sum[layer].index_add_(0, c, torch.nn.functional.one_hot(pos, 4).float())
    model.train(was_training)

    def normalise(total: torch.Tensor) -> torch.Tensor:
        per_class = total / counts.clamp(min=1).view(-1, *[1] * (total.dim() - 1))
        overall = total.sum(0, keepdim=True) / counts.sum()  # for classes with no images
        empty = (counts == 0).view(-1, *[1] * (total.dim() - 1))
        return torch.where(empty, overall, per_class)

    return SwitchPrior(a=[normalise(s) for s in a_sum],
                       t=[None if s is None else normalise(s) for s in t_sum],
                       top_size=top_size, counts=counts)


@torch.no_grad()
def sample_images(model: DRMM, prior: SwitchPrior, classes: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Render one image per entry of classes (n,) with switches drawn from the prior.

    Returns (n, C_img, H, W). The generator must live on the prior's device.
    """
    switches = []
    for p_a, p_t in zip(prior.a, prior.t, strict=True):
        pa = p_a[classes]  # (n, C, H, W)
        a = torch.rand(pa.shape, generator=generator, device=pa.device) < pa  # (n, C, H, W) bool
        t = None
        if p_t is not None:
            pt = p_t[classes]  # (n, C, h, w, 4)
            k = torch.multinomial(pt.reshape(-1, 4), 1, generator=generator)  # (n*C*h*w, 1)
            t = flat_index(k.view(pt.shape[:-1]), pa.shape[-1])  # (n, C, h, w)
        switches.append(Switches(a=a, t=t))
    z = model.class_template(classes, prior.top_size)  # (n, C_L, h, w)
    return model.render(z, switches).image  # (n, C_img, H, W)
