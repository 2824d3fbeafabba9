"""Sampling images from a trained DRMM (generation process, section 3 / Appendix B, Eq. 11-14).

Generation renders top-down: choose a class c, take its top-level template mu_c (repeated over
the final feature map, as in the top-down E-step), draw the switches g = (t, a) of every layer,
and render with the tied conv weights transposed (DRMM.render).

The switch prior p(g | c) (the paper fixes none; this is ours) is a mixture of factorised
priors, fitted on training images the model assigns to class c (its own c-hat, so unlabeled
images count too):
- the images of class c are clustered into M components (k-means on their top layer's
  a-switches, which say which high-level parts are present); p(m | c) = the component's share;
- within component m the switches are independent per position:
  a: Bernoulli, p(a = 1 | c, m) at each (layer, channel, y, x) = the fraction of the component's
  images whose ReLU was on there;
  t: categorical over the 4 positions of each 2x2 pooling window (upper left, upper right,
  lower left, lower right) at each (layer, channel, y, x) = how often each position won.
A draw picks m ~ p(m | c), then every switch independently given (c, m). With M = 1 this is
the fully factorised prior: it keeps the per-position statistics of class c but none of their
correlations, so its samples are grainy, averaged shapes (results/samples_mnist_factorised.png).
The components put the correlations back coarsely: switches that fire together in the images of
one component are drawn together, and the samples take distinct, cleaner shapes
(results/samples_mnist.png). A class no training image is assigned to
falls back to the frequencies over all images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drmm.model import DRMM, Switches


@dataclass
class SwitchPrior:
    a: list[torch.Tensor]  # per layer, (K*M, C, H, W) p(a = 1 | c, m), row c*M + m
    t: list[torch.Tensor | None]  # per layer, (K*M, C, H/2, W/2, 4) p(t = k | c, m); None: no pool
    top_size: tuple[int, int]  # (h, w) of the final feature map, for the class template
    counts: torch.Tensor  # (K,) training images behind each class's frequencies
    weights: torch.Tensor  # (K, M) p(m | c): each component's share of its class's images


def window_position(t: torch.Tensor, width: int) -> torch.Tensor:
    """Flat max-pool indices into an H x W map -> position 0..3 in their 2x2 window."""
    return (t // width % 2) * 2 + t % width % 2  # (B, C, h, w) int64


def flat_index(k: torch.Tensor, width: int) -> torch.Tensor:
    """Position 0..3 of each 2x2 window, (B, C, h, w) -> flat index into the H x W map."""
    h, w = k.shape[-2:]
    i = torch.arange(h, device=k.device).view(h, 1)
    j = torch.arange(w, device=k.device).view(1, w)
    return (2 * i + k // 2) * width + 2 * j + k % 2  # (B, C, h, w) int64


def cluster_within_classes(features: torch.Tensor, classes: torch.Tensor, k: int, m: int,
                           seed: int = 0) -> torch.Tensor:
    """Component 0..m-1 of each image (N,): k-means (scikit-learn) on features (N, D) per class."""
    from sklearn.cluster import KMeans

    component = torch.zeros_like(classes)  # (N,)
    for c in range(k):
        rows = (classes == c).nonzero().flatten()
        n_c = min(m, len(rows))
        if n_c > 1:
            km = KMeans(n_clusters=n_c, n_init=3, random_state=seed)
            labels = km.fit_predict(features[rows].cpu().numpy())
            component[rows] = torch.as_tensor(labels, dtype=classes.dtype, device=classes.device)
    return component


@torch.no_grad()
def fit_switch_prior(model: DRMM, x: torch.Tensor, batch_size: int = 500,
                     components: int = 1, seed: int = 0) -> SwitchPrior:
    """Switch frequencies per predicted class and component over images x (N, C, H, W).

    Runs in eval mode (BatchNorm running statistics). components = M, the mixture components
    per class (1: the factorised prior); seed seeds k-means.
    """
    was_training = model.training
    model.eval()
    k, m = model.config.num_classes, components
    classes, tops = [], []
    for i in range(0, len(x), batch_size):  # pass 1: c-hat and the features to cluster on
        bu = model.bottom_up(x[i:i + batch_size])
        classes.append(bu.c_hat)  # (b,)
        tops.append(bu.switches[-1].a.flatten(1).float())  # (b, C_L*h*w) top a-switches
    classes = torch.cat(classes)  # (N,)
    component = (cluster_within_classes(torch.cat(tops), classes, k, m, seed) if m > 1
                 else torch.zeros_like(classes))  # (N,)
    group = classes * m + component  # (N,) row of the prior tables
    a_sum: list[torch.Tensor] = []
    t_sum: list[torch.Tensor | None] = []
    top_size = None
    # Pass 2 recomputes the switches rather than keeping pass 1's: for thousands of images they
    # would take gigabytes, and a bottom-up pass over them takes seconds.
    for i in range(0, len(x), batch_size):  # pass 2: count the switches per (class, component)
        bu = model.bottom_up(x[i:i + batch_size])
        g = group[i:i + batch_size]  # (b,)
        top_size = bu.top_size
        for layer, s in enumerate(bu.switches):
            if layer == len(a_sum):
                a_sum.append(torch.zeros(k * m, *s.a.shape[1:], device=x.device))
                t_sum.append(None if s.t is None else
                             torch.zeros(k * m, *s.t.shape[1:], 4, device=x.device))
            a_sum[layer].index_add_(0, g, s.a.float())
            if s.t is not None:
                pos = window_position(s.t, s.a.shape[-1])  # (b, C, h, w)
                t_sum[layer].index_add_(0, g, torch.nn.functional.one_hot(pos, 4).float())
    model.train(was_training)
    group_counts = torch.bincount(group, minlength=k * m).float()  # (K*M,)
    counts = group_counts.view(k, m).sum(1)  # (K,)
    weights = group_counts.view(k, m) / counts.clamp(min=1).unsqueeze(1)  # (K, M)
    weights[counts == 0, 0] = 1.0  # an empty class draws its one fallback component

    def normalise(total: torch.Tensor) -> torch.Tensor:
        shape = (-1, *[1] * (total.dim() - 1))
        per_group = total / group_counts.clamp(min=1).view(shape)
        overall = total.sum(0, keepdim=True) / group_counts.sum()  # for empty classes
        empty = (group_counts == 0).view(shape)
        return torch.where(empty, overall, per_group)

    return SwitchPrior(a=[normalise(s) for s in a_sum],
                       t=[None if s is None else normalise(s) for s in t_sum],
                       top_size=top_size, counts=counts, weights=weights)


@torch.no_grad()
def sample_images(model: DRMM, prior: SwitchPrior, classes: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Render one image per entry of classes (n,) with switches drawn from the prior.

    Returns (n, C_img, H, W). The generator must live on the prior's device.
    """
    m = prior.weights.shape[1]
    component = torch.multinomial(prior.weights[classes], 1, generator=generator)  # (n, 1)
    group = classes * m + component.flatten()  # (n,) rows of the prior tables
    switches = []
    for p_a, p_t in zip(prior.a, prior.t, strict=True):
        pa = p_a[group]  # (n, C, H, W)
        a = torch.rand(pa.shape, generator=generator, device=pa.device) < pa  # (n, C, H, W) bool
        t = None
        if p_t is not None:
            pt = p_t[group]  # (n, C, h, w, 4)
            k = torch.multinomial(pt.reshape(-1, 4), 1, generator=generator)  # (n*C*h*w, 1)
            t = flat_index(k.view(pt.shape[:-1]), pa.shape[-1])  # (n, C, h, w)
        switches.append(Switches(on=a, t=t))
    z = model.class_template(classes, prior.top_size)  # (n, C_L, h, w)
    return model.render(z, switches).image  # (n, C_img, H, W)
