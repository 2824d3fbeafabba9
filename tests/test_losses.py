"""Each term of the objective against a value computed by hand, and the KL sign."""

import math

import pytest
import torch
import torch.nn.functional as F

from drmm.losses import (
    LossConfig,
    StepContext,
    consistency,
    cross_entropy,
    drmm_objective,
    kl_term,
    non_negativity,
    reconstruction,
)


def test_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # q = (1/2, 1/2), (3/4, 1/4)
    labels = torch.tensor([0, 1])
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert cross_entropy(logits, labels).item() == pytest.approx(expected)


def test_reconstruction_is_the_mean_over_pixels():
    image = torch.zeros(1, 1, 2, 2)
    rendered = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert reconstruction(image, rendered).item() == pytest.approx((1 + 4 + 9 + 16) / 4)


@pytest.mark.parametrize("mode,sign", [("entropy", -1.0), ("eq7", 1.0)])
def test_kl_by_hand(mode, sign):
    logits = torch.tensor([[math.log(3.0), 0.0]])  # q = (3/4, 1/4), prior (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_term(logits, mode).item() == pytest.approx(sign * kl)
    assert kl_term(torch.zeros(3, 5), mode).item() == pytest.approx(0.0, abs=1e-7)  # uniform q


def test_default_kl_rewards_confident_predictions():
    """The authors' sign: minimising L_KL sharpens q(c|I) (entropy minimisation)."""
    vague, confident = torch.tensor([[0.1, 0.0, 0.0]]), torch.tensor([[5.0, 0.0, 0.0]])
    assert kl_term(confident).item() < kl_term(vague).item()
    assert kl_term(confident, "eq7").item() > kl_term(vague, "eq7").item()
    # and its gradient step makes the prediction more confident
    logits = vague.clone().requires_grad_()
    kl_term(logits).backward()
    assert logits.grad[0, 0] < 0  # descending raises the leading class score


def test_kl_value_is_entropy_minus_log_k():
    logits = torch.randn(6, 10)
    q = logits.softmax(1)
    entropy = -(q * q.log()).sum(1).mean()
    assert kl_term(logits).item() == pytest.approx((entropy - math.log(10)).item(), abs=1e-6)


def test_unknown_kl_mode():
    with pytest.raises(ValueError, match="kl_mode"):
        kl_term(torch.zeros(1, 2), "bogus")


def test_non_negativity_by_hand():
    templates = [torch.tensor([-1.0, 2.0]), torch.tensor([[-3.0, 0.0, 0.0, 0.0]])]
    assert non_negativity(templates).item() == pytest.approx(1 / 2 + 9 / 4)


def test_objective_weights_and_named_terms():
    weights = {"ce": 2.0, "rc": 0.5, "kl": 0.25, "nn": 3.0}
    logits = torch.tensor([[math.log(3.0), 0.0]])
    image, rendered = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]])
    templates = [torch.tensor([-2.0])]
    ctx = StepContext(logits, torch.tensor([0]), logits, image, rendered, templates,
                      loss_cfg=LossConfig())
    terms = drmm_objective(ctx, weights)
    assert set(terms) == {"loss", "ce", "rc", "kl", "nn"}
    assert terms["rc"].item() == pytest.approx(5.0)
    assert terms["nn"].item() == pytest.approx(4.0)
    expected = 2 * terms["ce"] + 0.5 * 5.0 + 0.25 * terms["kl"] + 3.0 * 4.0
    assert terms["loss"].item() == pytest.approx(expected.item())
    supervised = drmm_objective(StepContext(logits, torch.tensor([0])), {"ce": 2.0})
    assert set(supervised) == {"loss", "ce"}  # no term reads what the context lacks
    assert supervised["loss"].item() == pytest.approx(2 * math.log(4 / 3))


def test_terms_are_summed_in_the_tables_order_at_their_weights():
    """The loss is built term by term in TERMS's order, each weight times its term, exactly
    (the order of a float sum is part of a run's numbers)."""
    torch.manual_seed(0)
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])  # (B, K), (B,)
    x, xr, z = torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8), [torch.randn(6, 2, 4, 4)]
    ctx = StepContext(logits, y, logits, x, xr, z, loss_cfg=LossConfig())
    weights = {"ce": 1.0, "rc": 0.2, "kl": 1.0, "nn": 1.0}
    terms = drmm_objective(ctx, weights)
    by_hand = 1.0 * terms["ce"]
    for name in ("rc", "kl", "nn"):
        by_hand = by_hand + weights[name] * terms[name]
    assert torch.equal(terms["loss"], by_hand)
    assert list(terms) == ["loss", "ce", "rc", "kl", "nn"]


def test_consistency_targets_the_weak_views_class_where_it_is_sure():
    """L_CON: cross-entropy of the strong view against the weak view's class, the unsure left
    out, and no gradient into the weak view (it is the target)."""
    weak = torch.tensor([[4.0, 0.0], [0.1, 0.0]], requires_grad=True)  # top q 0.982 and 0.525
    strong = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    by_hand = F.cross_entropy(strong[:1], torch.tensor([0])).item() / 2  # the sure one, mean of 2
    assert consistency(strong, weak, 0.95).item() == pytest.approx(by_hand)
    consistency(strong, weak, 0.95).backward()
    assert weak.grad is None and strong.grad[1].abs().sum() == 0 and strong.grad[0, 0] < 0
    ctx = StepContext(weak, torch.tensor([0, 1]), weak, logits_strong=strong, logits_weak=weak,
                      loss_cfg=LossConfig())
    terms = drmm_objective(ctx, {"ce": 1.0, "con": 2.0})
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + 2 * terms["con"].item())
