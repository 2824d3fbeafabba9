"""The Deep Rendering Mixture Model: bottom-up inference and top-down rendering.

Read top to bottom: layer specs -> presets -> config -> one DRMM layer -> the model.

Paper: Nguyen et al., "Semi-Supervised Learning with the Deep Rendering Mixture Model" (2016).
- Section 3 / Eq. 1-4: generation renders an image from a class template c through per-layer
  nuisance switches g = (t, a); z(l) are the intermediate rendered templates.
- Section 4.1, E-step bottom-up: the CNN pass (conv -> BatchNorm -> ReLU -> max-pool) infers
  c-hat and the switches: a = which ReLUs are on, t = which position won each 2x2 max-pool window.
- Section 4.1, E-step top-down: render I-hat from c-hat with the inferred switches, using the
  same (tied) conv weights transposed, with no BatchNorm and no bias (Appendix B).
- Appendix A, Table 6: the ConvSmall and ConvLarge architectures.

Choices where the paper is silent follow the authors' code (shared/notes/authors-implementation.md):
the class layer is a mean pool followed by a linear map with bias (the same linear map as the
10x1x1 class conv before the mean pool), the top-down pass starts from the *predicted* class for
every image, and the mean pool is undone by plain repetition (no division by H*W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Layer specs: an architecture is a list of these, as in Table 6.

# Theano border modes -> padding for a k x k kernel at stride 1.
BORDER_PADDING = {"full": lambda k: k - 1, "half": lambda k: k // 2, "valid": lambda k: 0}


@dataclass(frozen=True)
class Conv:
    """k x k convolution, stride 1, no bias; followed by BatchNorm and ReLU bottom-up."""

    out_channels: int  # number of filters
    kernel: int  # kernel size k (square)
    border: str = "valid"  # Theano border mode: full (pad k-1), half (pad k//2), valid (pad 0)

    @property
    def padding(self) -> int:
        if self.border not in BORDER_PADDING:
            raise ValueError(f"unknown border mode {self.border!r}; use full, half or valid")
        return BORDER_PADDING[self.border](self.kernel)


@dataclass(frozen=True)
class MaxPool:
    """Non-overlapping 2x2 max-pool; its argmax is the translation switch t."""


@dataclass(frozen=True)
class ClassConv:
    """The 1x1 class conv: one template vector per class (Table 6's '10x1x1')."""


@dataclass(frozen=True)
class MeanPool:
    """Mean over the whole final feature map (Table 6's 'Meanpool 6x6')."""


LayerSpec = Conv | MaxPool | ClassConv | MeanPool

# ----------------------------------------------------------------------------------------------
# Presets (Table 6). Variants are plain lists; add yours to ARCHS.


def conv_small() -> list[LayerSpec]:
    """ConvSmall, the MNIST network of Table 6 (28x28 -> 6x6 before the mean pool)."""
    return [
        Conv(32, 5, "full"), MaxPool(),
        Conv(64, 3, "valid"), Conv(64, 3, "full"), MaxPool(),
        Conv(128, 3, "valid"),
        ClassConv(), MeanPool(),
    ]  # fmt: skip


def conv_large() -> list[LayerSpec]:
    """ConvLarge, the SVHN / CIFAR-10 network of Table 6 (32x32 -> 6x6 before the mean pool)."""
    return [
        Conv(96, 3, "half"), Conv(96, 3, "full"), Conv(96, 3, "full"), MaxPool(),
        Conv(192, 3, "valid"), Conv(192, 3, "full"), Conv(192, 3, "valid"), MaxPool(),
        Conv(192, 3, "valid"), Conv(192, 1, "valid"),
        ClassConv(), MeanPool(),
    ]  # fmt: skip


def conv_photo() -> list[LayerSpec]:
    """A fast network for colour photos of 32-64 px (not in the paper), after airbench's plain
    three-block conv-BatchNorm-pool network: a narrow first layer at full resolution, then three
    blocks whose first conv widens and pools and whose second works at the pooled size, so that
    most of the work is done at a quarter of the pixels. 32x32 -> 4x4 before the mean pool;
    about a fifth of ConvLarge's multiply-adds."""
    return [
        Conv(32, 3, "half"),
        Conv(64, 3, "half"), MaxPool(), Conv(64, 3, "half"),
        Conv(128, 3, "half"), MaxPool(), Conv(128, 3, "half"),
        Conv(256, 3, "half"), MaxPool(), Conv(256, 3, "half"),
        ClassConv(), MeanPool(),
    ]  # fmt: skip


def conv_tiny() -> list[LayerSpec]:
    """A two-layer toy network for tests and quick experiments (not in the paper)."""
    return [Conv(8, 3, "full"), MaxPool(), Conv(16, 3, "valid"), ClassConv(), MeanPool()]


ARCHS = {"conv_small": conv_small, "conv_large": conv_large, "conv_photo": conv_photo,
         "conv_tiny": conv_tiny}

# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class ModelConfig:
    arch: str = "conv_small"  # key of ARCHS
    in_channels: int = 1  # image channels (1 grayscale, 3 RGB)
    image_size: int = 28  # input height = width, pixels
    num_classes: int = 10  # number of object classes c
    bn_eps: float = 1e-5  # BatchNorm epsilon (the authors' Theano code used 1e-10)
    bn_momentum: float = 0.1  # BatchNorm running-average momentum (PyTorch convention)

    def specs(self) -> list[LayerSpec]:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {sorted(ARCHS)}")
        return ARCHS[self.arch]()


def group_layers(specs: list[LayerSpec]) -> list[tuple[Conv, bool]]:
    """Split a spec list into (conv, followed_by_maxpool) pairs; check the class head."""
    if len(specs) < 3 or not (isinstance(specs[-2], ClassConv) and isinstance(specs[-1], MeanPool)):
        raise ValueError("an architecture must end with ClassConv(), MeanPool()")
    groups: list[tuple[Conv, bool]] = []
    for spec in specs[:-2]:
        if isinstance(spec, Conv):
            groups.append((spec, False))
        elif isinstance(spec, MaxPool):
            if not groups or groups[-1][1]:
                raise ValueError("a MaxPool must follow a Conv (BatchNorm is only after convs)")
            groups[-1] = (groups[-1][0], True)
        else:
            raise ValueError(f"{type(spec).__name__} may only appear at the end of an architecture")
    if not groups:
        raise ValueError("an architecture needs at least one Conv")
    return groups


def feature_sizes(specs: list[LayerSpec], image_size: int) -> list[int]:
    """Spatial size after each conv layer (after its pool, if any); raises on impossible sizes."""
    sizes, size = [], image_size
    for i, (conv, pooled) in enumerate(group_layers(specs)):
        size = size + 2 * conv.padding - conv.kernel + 1
        if size < 1:
            raise ValueError(
                f"input size {image_size} is too small: conv layer {i}"
                f" ({conv.kernel}x{conv.kernel}, {conv.border}) would output {size}x{size};"
                " use a larger image_size"
            )
        if pooled:
            if size % 2:
                raise ValueError(
                    f"input size {image_size} does not fit: the 2x2 max-pool after conv layer {i}"
                    f" gets an odd {size}x{size} map; pick an image_size that gives even sizes"
                )
            size //= 2
        sizes.append(size)
    return sizes


# ----------------------------------------------------------------------------------------------
# One DRMM layer: conv -> BN -> ReLU (-> 2x2 max-pool) bottom-up, its transpose top-down.


def keep(z: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """z where on > 0, else 0, in z's dtype: the rendering's a-mask. For a real-valued `on` this
    is ReLU's backward, one vectorised pass over z and on; a bool mask costs a comparison
    bottom-up and a cast in every product, forward and backward (four times the pass)."""
    if on.dtype == torch.bool:
        return z * on
    return torch.ops.aten.threshold_backward(z, on.to(z.dtype), 0)


def held(x: torch.Tensor) -> torch.Tensor:
    """x as a switch map (Switches.on): x itself, detached, while autograd keeps it for the
    backward pass anyway; without autograd nothing else would hold it, so the bool x > 0 is kept
    (a quarter of a float32 map's memory; it renders the same, bit for bit)."""
    return x.detach() if torch.is_grad_enabled() else x > 0


@dataclass
class Switches:
    """Latent nuisance switches of one layer, inferred bottom-up (carry no gradient).

    a: which ReLUs are on, (BN output > 0), at the conv's output resolution. It is kept as a map
       whose positive entries are the ReLUs that are on (`on`, bool or real), the map the
       bottom-up pass computes anyway: the ReLU's output, or the BatchNorm output the max-pool
       reads. Autograd holds these maps for the backward pass already, so keeping them costs no
       memory in training, and no comparison is made unless `a` is read; without autograd the
       bool is kept (`held`).
    t: which position of each 2x2 window won the max-pool, as the flat index into the conv's
       H x W map that torch.max_pool2d returns (None when the layer has no pool). Ties go to
       the first maximum in row-major order (top-left, top-right, bottom-left, bottom-right).
       Indices are the cheapest exact form; `t_onehot` gives the one-hot mask of the paper.
    """

    on: torch.Tensor  # (B, C, H, W) positive exactly where a ReLU is on (bool, or a real map)
    t: torch.Tensor | None  # (B, C, H/2, W/2) int64, or None
    on_t: torch.Tensor | None = None  # (B, C, H/2, W/2) `on` at t's winners; None: read off on

    @property
    def a(self) -> torch.Tensor:
        return self.on > 0  # (B, C, H, W) bool

    def on_at_t(self) -> torch.Tensor:
        """`on` at each window's winner, (B, C, H/2, W/2): the only ReLUs a pooled layer's
        rendering passes through (kept from the bottom-up pass, else read off `on`)."""
        if self.on_t is not None:
            return self.on_t
        flat = self.on.reshape(*self.on.shape[:2], -1)  # (B, C, H*W)
        return flat.gather(2, self.t.reshape(*self.t.shape[:2], -1)).view(self.t.shape)

    def a_at_t(self) -> torch.Tensor:
        return self.on_at_t() > 0  # (B, C, H/2, W/2) bool: a at each window's winner

    def t_onehot(self) -> torch.Tensor | None:
        if self.t is None:
            return None
        ones = torch.ones(self.t.shape, dtype=torch.float32, device=self.t.device)
        hot = F.max_unpool2d(ones, self.t, 2, output_size=self.on.shape[-2:])  # (B, C, H, W)
        return hot.bool()


class DRMMLayer(nn.Module):
    def __init__(
        self, in_channels: int, spec: Conv, pooled: bool, bn_eps: float, bn_momentum: float
    ):
        super().__init__()
        self.padding = spec.padding
        self.pooled = pooled
        # No bias: the rendering templates are the conv weights alone (Appendix B).
        self.conv = nn.Conv2d(in_channels, spec.out_channels, spec.kernel, padding=self.padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(spec.out_channels, eps=bn_eps, momentum=bn_momentum)

    def up(self, x: torch.Tensor, switches: bool = True) -> tuple[torch.Tensor, Switches | None]:
        """Bottom-up E-step for one layer; without `switches` (a pass nothing renders from) none
        are kept: the same output, and no map is held for a rendering after the step."""
        h = self.bn(self.conv(x))  # (B, C, H, W) pre-ReLU
        if not switches:
            h = F.max_pool2d(h, 2) if self.pooled else h  # (B, C, H', W')
            return F.relu(h), None
        if self.pooled:
            # max commutes with ReLU, so pooling the pre-ReLU map gives the paper's pooled output
            # and t is the argmax of the BN output, as in the authors' code. a is taken before
            # the ReLU: h > 0 at full size, the pooled output > 0 at the winners.
            pooled, t = F.max_pool2d(h, 2, return_indices=True)  # (B, C, H/2, W/2), t int64
            out = F.relu(pooled)  # (B, C, H/2, W/2)
            return out, Switches(on=held(h), t=t, on_t=held(out))
        out = F.relu(h)  # (B, C, H, W): positive exactly where h > 0
        return out, Switches(on=held(out), t=None)

    def down(self, z: torch.Tensor, s: Switches) -> torch.Tensor:
        """Top-down rendering for one layer: un-pool with t, mask with a, tied conv transposed.

        z: (B, C, H', W') the rendered template at this layer's output resolution.
        Returns the template one layer down, (B, C_in, H_in, W_in).
        """
        if s.t is not None:
            # Nearest-neighbour upsampling followed by the one-hot t mask is exactly max-unpool;
            # it keeps only each window's winner, so the a mask is applied before it, at a
            # quarter of the size (the same values). Un-pooling only moves values: it runs in
            # z's dtype (autocast would widen a bf16 map to float32 and back).
            z = keep(z, s.on_at_t())  # (B, C, H/2, W/2) the paths whose ReLU was on
            with torch.autocast(z.device.type, enabled=False):
                z = F.max_unpool2d(z, s.t, 2, output_size=s.on.shape[-2:])  # (B, C, H, W)
        else:
            z = keep(z, s.on)  # (B, C, H, W) the paths whose ReLU was on
        # conv_transpose2d with the same weight and padding is the adjoint of conv2d (stride 1).
        z = F.conv_transpose2d(z, self.conv.weight, padding=self.padding)  # (B, C_in, H_in, W_in)
        return z


# ----------------------------------------------------------------------------------------------
# The model


def as_stored(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) as its memory holds it: a channels_last map as its (B, H, W, C) view, any
    other as it is. A reduction over it gives the same values, and the gradient that autograd
    sends back has x's layout; through the NCHW view of a channels_last map it comes back
    contiguous, and the backward kernels that then meet two layouts (ReLU's, a product's) run
    several times slower."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1)  # (B, H, W, C)
    return x


@dataclass
class BottomUp:
    """Result of the bottom-up E-step."""

    logits: torch.Tensor  # (B, K) class scores; q(c|I) = softmax(logits)
    switches: list[Switches | None]  # one per conv layer, bottom to top (None: not kept)
    top_size: tuple[int, int]  # (h, w) of the final feature map before the mean pool

    @property
    def q(self) -> torch.Tensor:
        return self.logits.softmax(dim=1)  # (B, K)

    @property
    def c_hat(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)  # (B,) int64


@dataclass
class TopDown:
    """Result of the top-down E-step."""

    image: torch.Tensor  # (B, C_img, H, W) the rendered image I-hat
    templates: list[torch.Tensor]  # z(l) before masking, top layer first, for L_NN (Eq. 8)


class DRMM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        specs = config.specs()
        groups = group_layers(specs)
        feature_sizes(specs, config.image_size)  # fail early, with a clear message
        layers, channels = [], config.in_channels
        for conv, pooled in groups:
            layers.append(DRMMLayer(channels, conv, pooled, config.bn_eps, config.bn_momentum))
            channels = conv.out_channels
        self.layers = nn.ModuleList(layers)
        # The class conv: column c of its weight is the top-level template mu_c (Eq. 2).
        self.classifier = nn.Linear(channels, config.num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"expected images of shape (B, {c}, {s}, {s}), got {tuple(x.shape)}")

    def bottom_up(self, x: torch.Tensor, switches: bool = True) -> BottomUp:
        """E-step bottom-up: the CNN pass, returning class scores and the switches (without
        `switches`, a list of None: for a pass that renders nothing)."""
        kept = []
        for layer in self.layers:
            x, s = layer.up(x, switches)  # (B, C_l, H_l, W_l)
            kept.append(s)
        stored = as_stored(x)  # (B, C_L, h, w) or its (B, h, w, C_L) view
        pooled = stored.mean(dim=(1, 2) if stored is not x else (2, 3))  # (B, C_L) mean pool
        logits = self.classifier(pooled)  # (B, K)
        return BottomUp(logits=logits, switches=kept, top_size=tuple(x.shape[-2:]))

    def class_template(self, c: torch.Tensor, top_size: tuple[int, int]) -> torch.Tensor:
        """mu_c repeated over the final map: undoes the mean pool (no division, as the authors)."""
        mu = self.classifier.weight[c]  # (B, C_L) rows of W = the class templates
        return mu[:, :, None, None].expand(-1, -1, *top_size)  # (B, C_L, h, w)

    def render(self, z: torch.Tensor, switches: list[Switches]) -> TopDown:
        """Render top-down from a top-level template z (B, C_L, h, w) with fixed switches."""
        templates = []
        for layer, s in zip(reversed(self.layers), reversed(switches), strict=True):
            # z before masking is the paper's intermediate rendered template z(l). For a pooled
            # layer it is kept at pooled resolution: the nearest-neighbour upsampled template has
            # the same mean of relu(-z)^2, at a quarter of the memory.
            templates.append(z)
            z = layer.down(z, s)  # (B, C_{l-1}, H_{l-1}, W_{l-1})
        return TopDown(image=z, templates=templates)

    def top_down(self, bu: BottomUp, c: torch.Tensor | None = None) -> TopDown:
        """E-step top-down: render I-hat from c (default: the predicted c-hat) and bu's switches."""
        c = bu.c_hat if c is None else c  # (B,)
        return self.render(self.class_template(c, bu.top_size), bu.switches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores only (plain CNN inference; no switches kept)."""
        return self.bottom_up(x, switches=False).logits  # (B, K)
