"""The DRMM network: shapes, gradients, switches, and the tied top-down pass as an adjoint."""

import pytest
import torch
import torch.nn.functional as F

from drmm.losses import LossConfig, StepContext, drmm_objective
from drmm.model import ARCHS, DRMM, Conv, DRMMLayer, MaxPool, ModelConfig, Switches, feature_sizes

# Each variant at the input size it is meant for (Table 6), and its channels.
VARIANTS = {"conv_small": (1, 28), "conv_large": (3, 32), "conv_photo": (3, 32),
            "conv_tiny": (1, 12)}


def make(arch: str, batch: int = 4, dtype=torch.float32):
    channels, size = VARIANTS[arch]
    model = DRMM(ModelConfig(arch=arch, in_channels=channels, image_size=size)).to(dtype)
    x = torch.rand(batch, channels, size, size, dtype=dtype)  # (B, C, H, W)
    return model, x


def test_every_variant_is_tested():
    assert set(VARIANTS) == set(ARCHS)


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_shapes_and_finite(arch):
    model, x = make(arch)
    bu = model.bottom_up(x)
    assert bu.logits.shape == (4, 10)
    assert torch.isfinite(bu.logits).all()
    assert torch.allclose(bu.q.sum(1), torch.ones(4))
    assert len(bu.switches) == len(model.layers)
    for layer, s in zip(model.layers, bu.switches, strict=True):
        assert s.a.dtype == torch.bool
        assert (s.t is not None) == layer.pooled
        if s.t is not None:
            assert s.t.shape[-2:] == (s.a.shape[-2] // 2, s.a.shape[-1] // 2)
    td = model.top_down(bu)
    assert td.image.shape == x.shape
    assert torch.isfinite(td.image).all()
    assert len(td.templates) == len(model.layers)
    assert bu.top_size == {"conv_photo": (4, 4), "conv_tiny": bu.top_size}.get(arch, (6, 6))


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_every_parameter_gets_a_gradient(arch):
    model, x = make(arch)
    bu_l, bu_u = model.bottom_up(x[:2]), model.bottom_up(x[2:])
    td = model.top_down(bu_u)
    ctx = StepContext(bu_l.logits, torch.tensor([1, 2]), bu_u.logits, x[2:], td.image,
                      td.templates, loss_cfg=LossConfig())
    terms = drmm_objective(ctx, {"ce": 1.0, "rc": 0.2, "kl": 1.0, "nn": 1.0})
    terms["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_feature_sizes_match_the_authors_arithmetic():
    assert feature_sizes(ARCHS["conv_small"](), 28) == [16, 14, 8, 6]
    assert feature_sizes(ARCHS["conv_large"](), 32) == [32, 34, 18, 16, 18, 8, 6, 6]


@pytest.mark.parametrize("arch,size,msg", [("conv_small", 30, "odd"), ("conv_small", 26, "odd"),
                                           ("conv_large", 4, "too small")])
def test_impossible_input_size_is_a_clear_error(arch, size, msg):
    with pytest.raises(ValueError, match=msg):
        DRMM(ModelConfig(arch=arch, image_size=size))


def test_wrong_input_shape_is_a_clear_error():
    model, x = make("conv_tiny")
    with pytest.raises(ValueError, match="expected images of shape"):
        model.check_input(x[:, :, :10])


def identity_layer(pooled: bool) -> DRMMLayer:
    """A 1x1, 1-channel layer whose BN is the identity, so the switches can be read off x."""
    eps = 2.0**-10  # torch 2.11 rejects eps = 0; a power of two keeps var + eps exactly 1
    layer = DRMMLayer(1, Conv(1, 1, "valid"), pooled, bn_eps=eps, bn_momentum=0.1)
    with torch.no_grad():
        layer.conv.weight.fill_(1.0)
        layer.bn.running_var.fill_(1.0 - eps)
    return layer.eval()  # running mean 0, var + eps = 1: BN(x) = x exactly


def test_switches_on_a_hand_made_input_with_ties():
    x = torch.tensor([[[[1.0, -2.0, 5.0, 5.0],
                        [0.5, -1.0, 5.0, 5.0],
                        [-3.0, -3.0, 0.0, 2.0],
                        [-3.0, -3.0, 2.0, 1.0]]]])  # (1, 1, 4, 4)
    out, s = identity_layer(pooled=True).up(x)
    assert torch.equal(s.a, x > 0)
    # Windows: top-left max 1 at (0,0); top-right four-way tie of 5 -> first = (0,2);
    # bottom-left all -3 -> first = (2,0); bottom-right tie of 2 at (2,3) and (3,2) -> (2,3).
    assert s.t.flatten().tolist() == [0 * 4 + 0, 0 * 4 + 2, 2 * 4 + 0, 2 * 4 + 3]
    onehot = s.t_onehot()[0, 0].int()
    assert onehot.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    assert torch.equal(out, F.max_pool2d(F.relu(x), 2))  # pooled output = max-pool of the ReLU


def test_top_down_unpools_to_the_winner_and_masks_with_a():
    x = torch.tensor([[[[1.0, -2.0], [0.5, -1.0]]]])  # (1, 1, 2, 2): winner (0,0)
    layer = identity_layer(pooled=True)
    _, s = layer.up(x)
    down = layer.down(torch.tensor([[[[3.0]]]]), s)
    assert down.tolist() == [[[[3.0, 0.0], [0.0, 0.0]]]]
    x = torch.tensor([[[[-1.0, -2.0], [-0.5, -4.0]]]])  # all off: a masks the winner
    _, s = layer.up(x)
    assert layer.down(torch.tensor([[[[3.0]]]]), s).abs().sum() == 0


@pytest.mark.parametrize("arch", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_kept_as_the_bottom_up_maps_or_as_bool_renders_the_same(arch, dtype):
    """The bottom-up pass keeps a as the maps it computed (positive where a ReLU is on) and at
    t's winners; switches given as bool a alone (sampled ones) read the winners off a: the same
    masks, and the same rendering and gradients bit for bit, in both precisions."""
    model, x = make(arch, batch=3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        bu = model.bottom_up(x)
        bare = [Switches(s.a, s.t) for s in bu.switches]  # bool a, no on_t: read off a
        kept, read = model.top_down(bu), model.render(model.class_template(bu.c_hat, bu.top_size),
                                                      bare)
    for s, b in zip(bu.switches, bare, strict=True):
        assert s.on.dtype == dtype and b.on.dtype == torch.bool
        if s.t is not None:
            assert torch.equal(s.a_at_t(), b.a_at_t())
    assert kept.image.dtype == dtype
    assert torch.equal(kept.image, read.image)
    w = model.layers[0].conv.weight
    (g_kept,), (g_read,) = (torch.autograd.grad(td.image.float().square().sum(), w,
                                                retain_graph=True) for td in (kept, read))
    assert torch.equal(g_kept, g_read)


def linear_bottom_up(model: DRMM, x: torch.Tensor, switches) -> torch.Tensor:
    """The bottom-up pass as a linear map of x with the switches fixed and no BatchNorm."""
    for layer, s in zip(model.layers, switches, strict=True):
        h = F.conv2d(x, layer.conv.weight, padding=layer.padding) * s.a  # (B, C, H, W)
        if s.t is not None:  # pick each window's winner, as the max-pool did
            h = h.flatten(2).gather(2, s.t.flatten(2)).view_as(s.t)  # (B, C, H/2, W/2)
        x = h
    return x  # (B, C_L, h, w)


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_top_down_is_the_adjoint_of_the_bottom_up_linear_map(arch):
    model, x0 = make(arch, batch=2, dtype=torch.float64)
    switches = model.bottom_up(x0).switches
    x = torch.randn_like(x0, requires_grad=True)
    fx = linear_bottom_up(model, x, switches)  # (B, C_L, h, w)
    y = torch.randn_like(fx)
    td = model.render(y, switches).image  # (B, C, H, W)
    # <BU(x), y> = <x, TD(y)>
    lhs, rhs = (fx * y).sum(), (x * td).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    # and TD(y) is autograd's vector-Jacobian product of BU at y
    (vjp,) = torch.autograd.grad(fx, x, y)
    assert torch.allclose(vjp, td, rtol=1e-10, atol=1e-10)


def test_class_template_is_the_adjoint_of_the_class_head():
    model, x = make("conv_tiny", dtype=torch.float64)
    bu = model.bottom_up(x)
    f = torch.randn(4, model.classifier.in_features, *bu.top_size, dtype=torch.float64,
                    requires_grad=True)
    c = torch.tensor([0, 3, 3, 9])
    # The head without bias, with the mean pool as a sum (the authors undo it by repetition).
    scores = f.sum(dim=(2, 3)) @ model.classifier.weight.T  # (B, K)
    (grad,) = torch.autograd.grad(scores.gather(1, c[:, None]).sum(), f)
    assert torch.allclose(grad, model.class_template(c, bu.top_size))


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_without_autograd_the_switches_are_bool_and_render_the_same(arch):
    """Without autograd nothing else holds the bottom-up maps, so the switches keep bool a (less
    memory): the same rendering bit for bit as with the maps."""
    model, x = make(arch, batch=3)
    with torch.no_grad():
        bu_bool = model.bottom_up(x)
        image_bool = model.top_down(bu_bool).image  # (B, C, H, W)
    bu_maps = model.bottom_up(x)
    for s, b in zip(bu_maps.switches, bu_bool.switches, strict=True):
        assert s.on.dtype != torch.bool and b.on.dtype == torch.bool
        assert torch.equal(s.a, b.a)
    assert torch.equal(model.top_down(bu_maps).image.detach(), image_bool)


def test_switches_carry_no_gradient():
    model, x = make("conv_tiny")
    for s in model.bottom_up(x.requires_grad_()).switches:
        assert not s.on.requires_grad and not s.a.requires_grad
        assert s.on_t is None or not s.on_t.requires_grad
        assert s.t is None or not s.t.requires_grad


def test_max_pool_layer_must_follow_a_conv():
    from drmm.model import ClassConv, MeanPool, group_layers

    with pytest.raises(ValueError, match="MaxPool must follow"):
        group_layers([MaxPool(), Conv(4, 3), ClassConv(), MeanPool()])
    with pytest.raises(ValueError, match="must end with"):
        group_layers([Conv(4, 3), MaxPool()])
