"""The DRMM semi-supervised objective (paper section 4.1, Eq. 5-8), separate from the network.

    L = a_H * L_H + a_RC * L_RC + a_KL * L_KL + a_NN * L_NN
        (+ a_BAL * L_BAL, s * L_G, w * L_CON: options)

- L_H  (Eq. 5): cross-entropy of q(c|I) against the labels, mean over the labeled images.
- L_RC (Eq. 6): reconstruction error ||I - I_hat||^2. Like the authors' code we take the mean over
  pixels (Eq. 6's per-image sum divided by C*H*W), so a_RC does not depend on the image size.
- L_KL (Eq. 7): the KL term with a uniform class prior p(c) = 1/K. The sign matters:
    * "entropy" (default, the authors' released code): L_KL = -KL(q || p) = H(q) - log K.
      Minimising it *sharpens* q(c|I) on unlabeled images: entropy minimisation. This is what
      produced the paper's numbers (MNIST-100: 13.41 % -> 1.36 % with the KL term).
    * "eq7" (Eq. 7 read literally): L_KL = +KL(q || p). Minimising it pushes q(c|I) toward the
      uniform prior; kept for ablation.
    `kl_threshold` > 0 leaves out images whose top q(c|I) is below it (FixMatch's mask).
- L_NN (Eq. 8): non-negativity penalty sum_l mean(relu(-z(l))^2) over the top-down templates
  z(l) before masking (means, as the authors' code, where Eq. 8 writes sums).
- L_BAL (not in the paper; off by default): KL(q_bar || p) of the batch's mean prediction
  q_bar(c) = mean_n q(c|I_n) against the uniform prior; with a_BAL = a_KL the two terms sum to
  H(q(c|I)) - H(q_bar) = -I(c; I), the mutual-information objective of RIM (Krause et al., 2010)
  and IMSAT (Hu et al., 2017). Both options were tried against entropy minimisation settling a
  cluster of unlabeled images in a wrong class (MNIST seed 1: its crossbar 7s called 3); neither
  fixes it (results/recipe.md, section 7).
- L_G (not in the paper; off by default): the graph prior, a cross-entropy against pseudo-labels
  from label spreading over a nearest-neighbour graph of the images, each weighted by its
  certainty (Iscen et al., 2019; drmm/graph_prior.py). Its weight s falls from 1 to 0 over the
  first `train.graph_prior` epochs: it decides which class such a cluster joins, then leaves.

- L_CON (not in the paper; off by default, on in the mnist preset): consistency under a strong
  augmentation, as FixMatch (Sohn et al., 2020), at the weight w = `train.consistency` (a
  schedule's choice, like the graph prior): each unlabeled image's class c-hat under the
  training augmentation (the bottom-up pass the E-step already made) is the target of a
  cross-entropy on a second, strongly augmented view of it (turned, zoomed, a square cut out:
  drmm/data/augment.py), for the images whose top q(c|I) is at least `con_threshold`. It asks
  that a digit missing a stroke or slanted otherwise keep its class, a label-free signal for
  variants no labeled image shows.

Which images enter L_RC, L_KL, L_NN is `unsup_on`: "unlabeled" (the authors' default) or "all";
with "all", `render_from` = "label" renders the labeled images from their label, not c-hat (as the
authors' follow-up, the Neural Rendering Model, does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KL_MODES = ("entropy", "eq7")


@dataclass
class LossConfig:
    alpha_h: float = 1.0  # weight of the labeled cross-entropy L_H
    alpha_rc: float = 0.2  # weight of the reconstruction error L_RC
    alpha_kl: float = 1.0  # weight of the KL term L_KL (0 disables it)
    alpha_nn: float = 1.0  # weight of the non-negativity penalty L_NN (0 disables it)
    alpha_bal: float = 0.0  # weight of the class-balance term L_BAL (not in the paper; 0: off)
    kl_mode: str = "entropy"  # "entropy" (authors' code, default) or "eq7" (paper's sign)
    kl_threshold: float = 0.0  # L_KL only on images whose top q(c|I) is at least this (0: all)
    unsup_on: str = "unlabeled"  # images for RC/KL/NN: "unlabeled" half or "all" of the batch
    render_from: str = "c_hat"  # unsup_on "all": render labeled images from c_hat (paper) | label
    con_threshold: float = 0.95  # L_CON only on images whose top q(c|I) is at least this


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_H, Eq. 5: mean over labeled images of -log q(c_n | I_n)."""
    return F.cross_entropy(logits, labels)  # ()


def reconstruction(image: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
    """L_RC, Eq. 6 divided by C*H*W: mean squared error over every pixel."""
    return F.mse_loss(rendered, image)  # ()


def kl_term(logits: torch.Tensor, mode: str = "entropy", threshold: float = 0.0) -> torch.Tensor:
    """L_KL, Eq. 7 with a uniform prior p(c) = 1/K; see the module docstring for the sign.

    With a threshold, images whose top class probability is below it add 0 (the mean still
    divides by every image): the undecided are not pushed toward their current guess.
    """
    if mode not in KL_MODES:
        raise ValueError(f"unknown kl_mode {mode!r}; use one of {KL_MODES}")
    log_q = logits.log_softmax(dim=1)  # (B, K)
    kl = (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(dim=1)  # (B,) KL(q || p) >= 0
    if threshold > 0:
        kl = kl * (log_q.detach().max(dim=1).values.exp() >= threshold)  # (B,) the decided only
    return -kl.mean() if mode == "entropy" else kl.mean()  # ()


def class_balance(logits: torch.Tensor) -> torch.Tensor:
    """L_BAL: KL(q_bar || p) of the batch's mean prediction against the uniform prior p = 1/K."""
    q_bar = logits.softmax(dim=1).mean(dim=0)  # (K,) the batch's class marginal
    return (q_bar * (q_bar.clamp_min(1e-12).log() + math.log(logits.shape[1]))).sum()  # ()


def graph_prior(logits: torch.Tensor, pseudo: torch.Tensor, certainty: torch.Tensor
                ) -> torch.Tensor:
    """L_G: mean over images of certainty * -log q(pseudo-label | I)."""
    return (certainty * F.cross_entropy(logits, pseudo, reduction="none")).mean()  # ()


def consistency(logits_strong: torch.Tensor, logits_weak: torch.Tensor, threshold: float
                ) -> torch.Tensor:
    """L_CON: mean over images of -log q(c-hat | strong view), c-hat the weak view's class, for
    the images whose weak-view top q(c|I) is at least threshold (the others add 0)."""
    q_weak = logits_weak.detach().softmax(dim=1)  # (B, K) the target side takes no gradient
    confident, c_hat = q_weak.max(dim=1)  # (B,), (B,)
    ce = F.cross_entropy(logits_strong, c_hat, reduction="none")  # (B,)
    return (ce * (confident >= threshold)).mean()  # ()


def non_negativity(templates: list[torch.Tensor]) -> torch.Tensor:
    """L_NN, Eq. 8 with means: sum over layers of mean(relu(-z)^2)."""
    return sum(F.relu(-z).pow(2).mean() for z in templates)  # ()


def drmm_objective(
    cfg: LossConfig,
    logits_lab: torch.Tensor,  # (B_l, K) labeled images' class scores
    labels: torch.Tensor,  # (B_l,) int64
    logits_unsup: torch.Tensor | None = None,  # (B_u, K) scores of the images that enter RC/KL/NN
    images: torch.Tensor | None = None,  # (B_u, C, H, W) those images
    rendered: torch.Tensor | None = None,  # (B_u, C, H, W) their top-down reconstructions
    templates: list[torch.Tensor] | None = None,  # their z(l), for L_NN
    kl_scale: float = 1.0,  # multiplies a_KL (a warm-up ramps it from 0 to 1)
    graph: tuple[torch.Tensor, torch.Tensor] | None = None,  # (B_u,) pseudo-labels, certainties
    graph_scale: float = 0.0,  # weight of L_G (0: the term is left out)
    logits_strong: torch.Tensor | None = None,  # (B_U, K) strong views of the unlabeled images
    logits_weak: torch.Tensor | None = None,  # (B_U, K) the same images' E-step scores, for L_CON
    con_weight: float = 0.0,  # weight of L_CON (0: the term is left out)
) -> dict[str, torch.Tensor]:
    """The weighted objective and its named terms {"loss", "ce", "rc", "kl", "nn", "bal",
    "graph", "con"}.

    With only logits_lab and labels this is the supervised (DCN) objective, loss = a_H * ce.
    A term whose weight is 0 is neither computed nor returned (rendered and templates may then
    be None).
    """
    terms = {"ce": cross_entropy(logits_lab, labels)}
    loss = cfg.alpha_h * terms["ce"]
    if logits_unsup is not None:
        if cfg.alpha_rc:
            terms["rc"] = reconstruction(images, rendered)
            loss = loss + cfg.alpha_rc * terms["rc"]
        if cfg.alpha_kl:
            terms["kl"] = kl_term(logits_unsup, cfg.kl_mode, cfg.kl_threshold)
            loss = loss + kl_scale * cfg.alpha_kl * terms["kl"]
        if cfg.alpha_nn:
            terms["nn"] = non_negativity(templates)
            loss = loss + cfg.alpha_nn * terms["nn"]
        if cfg.alpha_bal:
            terms["bal"] = class_balance(logits_unsup)
            loss = loss + cfg.alpha_bal * terms["bal"]
        if graph is not None and graph_scale:
            terms["graph"] = graph_prior(logits_unsup, *graph)
            loss = loss + graph_scale * terms["graph"]
        if con_weight:
            terms["con"] = consistency(logits_strong, logits_weak, cfg.con_threshold)
            loss = loss + con_weight * terms["con"]
    return {"loss": loss, **terms}
