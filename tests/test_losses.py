"""Each term of the objective against a value computed by hand, and the KL sign."""

import math

import pytest
import torch
import torch.nn.functional as F

from drmm.losses import (
    LossConfig,
    class_balance,
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


def test_kl_threshold_leaves_the_undecided_out():
    confident, vague = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.2, 0.0]])
    both = torch.cat([confident, vague])  # (2, 2): top q 0.993 and 0.550
    assert kl_term(both, threshold=0.9).item() == pytest.approx(kl_term(confident).item() / 2)
    assert kl_term(both, threshold=0.0).item() == pytest.approx(kl_term(both).item())
    logits = both.clone().requires_grad_()
    kl_term(logits, threshold=0.9).backward()
    assert logits.grad[1].abs().sum() == 0  # no push on the undecided image


def test_unknown_kl_mode():
    with pytest.raises(ValueError, match="kl_mode"):
        kl_term(torch.zeros(1, 2), "bogus")


def test_class_balance_by_hand():
    """KL of the batch's mean prediction against the uniform prior; 0 for a balanced batch."""
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # q_bar = (3/4, 1/4)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert class_balance(logits).item() == pytest.approx(expected)
    confident_balanced = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # each sure, together balanced
    assert class_balance(confident_balanced).item() == pytest.approx(0.0, abs=1e-7)


def test_balance_plus_entropy_is_minus_mutual_information():
    """a_BAL = a_KL: H(q(c|I)) - log K + KL(q_bar || p) = H(q(c|I)) - H(q_bar) = -I(c; I)."""
    logits = torch.randn(8, 10)
    q = logits.softmax(1)  # (B, K)
    q_bar = q.mean(0)  # (K,)
    mutual_info = -(q_bar * q_bar.log()).sum() + (q * q.log()).sum(1).mean()
    total = kl_term(logits) + class_balance(logits)
    assert total.item() == pytest.approx(-mutual_info.item(), abs=1e-6)


def test_class_balance_pushes_the_crowded_class_down():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 0.5]]).requires_grad_()  # class 0 crowded
    class_balance(logits).backward()
    assert (logits.grad[:, 0] > logits.grad[:, 1]).all()  # descending lowers class 0's scores


def test_non_negativity_by_hand():
    templates = [torch.tensor([-1.0, 2.0]), torch.tensor([[-3.0, 0.0, 0.0, 0.0]])]
    assert non_negativity(templates).item() == pytest.approx(1 / 2 + 9 / 4)


def test_objective_weights_and_named_terms():
    cfg = LossConfig(alpha_h=2.0, alpha_rc=0.5, alpha_kl=0.25, alpha_nn=3.0)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    image, rendered = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]])
    templates = [torch.tensor([-2.0])]
    terms = drmm_objective(cfg, logits, torch.tensor([0]), logits, image, rendered, templates)
    assert set(terms) == {"loss", "ce", "rc", "kl", "nn"}
    assert terms["rc"].item() == pytest.approx(5.0)
    assert terms["nn"].item() == pytest.approx(4.0)
    expected = 2 * terms["ce"] + 0.5 * 5.0 + 0.25 * terms["kl"] + 3.0 * 4.0
    assert terms["loss"].item() == pytest.approx(expected.item())
    supervised = drmm_objective(cfg, logits, torch.tensor([0]))
    assert set(supervised) == {"loss", "ce"}
    assert supervised["loss"].item() == pytest.approx(2 * math.log(4 / 3))
    balanced = drmm_objective(LossConfig(alpha_bal=0.5), logits, torch.tensor([0]), logits,
                              image, rendered, templates)
    assert balanced["bal"].item() == pytest.approx(class_balance(logits).item())
    plain = drmm_objective(LossConfig(), logits, torch.tensor([0]), logits, image, rendered,
                           templates)
    assert "bal" not in plain
    expected = plain["loss"] + 0.5 * balanced["bal"]
    assert balanced["loss"].item() == pytest.approx(expected.item())


def test_consistency_targets_the_weak_views_class_where_it_is_sure():
    """L_CON: cross-entropy of the strong view against the weak view's class, the unsure left
    out, and no gradient into the weak view (it is the target)."""
    weak = torch.tensor([[4.0, 0.0], [0.1, 0.0]], requires_grad=True)  # top q 0.982 and 0.525
    strong = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    by_hand = F.cross_entropy(strong[:1], torch.tensor([0])).item() / 2  # the sure one, mean of 2
    assert consistency(strong, weak, 0.95).item() == pytest.approx(by_hand)
    consistency(strong, weak, 0.95).backward()
    assert weak.grad is None and strong.grad[1].abs().sum() == 0 and strong.grad[0, 0] < 0
    terms = drmm_objective(LossConfig(alpha_rc=0, alpha_nn=0, alpha_kl=0), weak,
                           torch.tensor([0, 1]), weak, logits_strong=strong, logits_weak=weak,
                           con_weight=2.0)
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + 2 * terms["con"].item())
