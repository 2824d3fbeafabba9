"""The DRMM semi-supervised objective (paper section 4.1, Eq. 5-8), separate from the network.

    L = a_H * L_H + a_RC * L_RC + a_KL * L_KL + a_NN * L_NN  (+ w_G * L_G + w_CON * L_CON)

- L_H  (Eq. 5): cross-entropy of q(c|I) against the labels, mean over the labeled images.
- L_RC (Eq. 6): reconstruction error ||I - I_hat||^2. Like the authors' code we take the mean over
  pixels (Eq. 6's per-image sum divided by C*H*W), so a_RC does not depend on the image size.
- L_KL (Eq. 7): the KL term with a uniform class prior p(c) = 1/K. The sign matters:
    * "entropy" (default, the authors' released code): L_KL = -KL(q || p) = H(q) - log K.
      Minimising it *sharpens* q(c|I) on unlabeled images: entropy minimisation. This is what
      produced the paper's numbers (MNIST-100: 13.41 % -> 1.36 % with the KL term).
    * "eq7" (Eq. 7 read literally): L_KL = +KL(q || p). Minimising it pushes q(c|I) toward the
      uniform prior; kept for ablation.
- L_NN (Eq. 8): non-negativity penalty sum_l mean(relu(-z(l))^2) over the top-down templates
  z(l) before masking (means, as the authors' code, where Eq. 8 writes sums).
- L_G (not in the paper): the graph prior, a cross-entropy against pseudo-labels from label
  spreading over a nearest-neighbour graph of the images, each weighted by its certainty (Iscen
  et al., 2019; drmm/graph_prior.py). Its weight falls from 1 to 0 over the first
  `train.graph_prior` epochs (its schedule, `fade`): it decides which class a cluster of
  unlabeled images joins, then leaves (on in the mnist preset).
- L_CON (not in the paper): consistency under a strong augmentation, as FixMatch (Sohn et al.,
  2020), at the weight `train.consistency`: each unlabeled image's class c-hat under the
  training augmentation is the target of a cross-entropy on a second, strongly augmented view
  of it (turned, zoomed, a square cut out, on photos also mirrored and its colours jittered:
  drmm/data/augment.py), for the images whose top q(c|I) is at least `con_threshold` (on in
  every preset but npz and svhn).

Which images enter L_RC, L_KL, L_NN and L_G is `unsup_on`: "unlabeled" (the authors' default) or
"all". The objective is a table of named terms, TERMS, the one place a term is defined: its value
on a StepContext (what the E-step found on one batch), its weight (a config field or a number)
and that weight's schedule over the run, the inputs it needs beyond the bottom-up pass, and
whether it is the paper's. The step's weights, the batch's optional parts, validation, the
paper's step (`paper_only`), the flags and the run summaries all derive from it.
`drmm_objective` sums the terms whose weight is not 0, in the table's order, and returns every
one by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from drmm.model import as_stored

KL_MODES = ("entropy", "eq7")


@dataclass
class LossConfig:
    alpha_h: float = 1.0  # weight of the labeled cross-entropy L_H
    alpha_rc: float = 0.2  # weight of the reconstruction error L_RC
    alpha_kl: float = 1.0  # weight of the KL term L_KL (0 disables it)
    alpha_nn: float = 1.0  # weight of the non-negativity penalty L_NN (0 disables it)
    kl_mode: str = "entropy"  # "entropy" (authors' code, default) or "eq7" (paper's sign)
    unsup_on: str = "unlabeled"  # images for RC/KL/NN: "unlabeled" half or "all" of the batch
    con_threshold: float = 0.95  # L_CON only on images whose top q(c|I) is at least this
    paper_only: bool = False  # the paper's objective alone (Eq. 5-8): every other term off


# ----------------------------------------------------------------------------------------------
# The terms' mathematics


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_H, Eq. 5: mean over labeled images of -log q(c_n | I_n)."""
    return F.cross_entropy(logits, labels)  # ()


def reconstruction(image: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
    """L_RC, Eq. 6 divided by C*H*W: mean squared error over every pixel."""
    return F.mse_loss(rendered, image)  # ()


def kl_term(logits: torch.Tensor, mode: str = "entropy") -> torch.Tensor:
    """L_KL, Eq. 7 with a uniform prior p(c) = 1/K; see the module docstring for the sign."""
    if mode not in KL_MODES:
        raise ValueError(f"unknown kl_mode {mode!r}; use one of {KL_MODES}")
    log_q = logits.log_softmax(dim=1)  # (B, K)
    kl = (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(dim=1)  # (B,) KL(q || p) >= 0
    return -kl.mean() if mode == "entropy" else kl.mean()  # ()


def non_negativity(templates: list[torch.Tensor]) -> torch.Tensor:
    """L_NN, Eq. 8 with means: sum over layers of mean(relu(-z)^2), each mean in float32 (a
    reduction of bf16 templates accumulates in float32; its result is cast back up). Each
    template is read as stored (drmm.model.as_stored: the same values, a faster backward)."""
    return sum(F.relu(-as_stored(z)).pow(2).mean().float() for z in templates)  # ()


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


# ----------------------------------------------------------------------------------------------
# The objective: named terms of one context


@dataclass
class StepContext:
    """What the terms of one step read: the E-step's results on one batch (drmm/step.py).

    The "unsup" images are those `unsup_on` names: the unlabeled half, or the whole batch.
    A field no active term needs is None (the top-down pass, the strong views).
    """

    logits_lab: torch.Tensor  # (B_L, K) the labeled images' class scores
    labels: torch.Tensor  # (B_L,) int64 their labels
    logits_unsup: torch.Tensor | None = None  # (B_u, K) the unsup images' scores
    images: torch.Tensor | None = None  # (B_u, C, H, W) the unsup images
    rendered: torch.Tensor | None = None  # (B_u, C, H, W) their top-down renderings I-hat
    templates: list[torch.Tensor] | None = None  # their z(l), top layer first, for L_NN
    graph: tuple[torch.Tensor, torch.Tensor] | None = None  # (B_u,) pseudo-labels, certainties
    logits_weak: torch.Tensor | None = None  # (B_U, K) the unlabeled images' E-step scores
    logits_strong: torch.Tensor | None = None  # (B_U, K) the scores of their strong views
    loss_cfg: LossConfig | None = None  # the objective's settings (kl_mode, con_threshold)


def ramp(step: int, steps: float) -> float:
    """A multiplier at a global step: from 0 up to 1 linearly over `steps` steps."""
    return min(1.0, step / steps) if steps > 0 else 1.0


def constant(setting: float, step: int, steps_per_epoch: int) -> float:
    """A weight that is its setting at every step."""
    return setting


def fade(epochs: float, step: int, steps_per_epoch: int) -> float:
    """A weight that falls from 1 to 0 over the first `epochs` epochs (the setting)."""
    return 1 - ramp(step, epochs * steps_per_epoch)


# The inputs a term may need beyond the bottom-up pass: the top-down rendering of the unsup
# images, the strong views of the unlabeled images, the graph prior's pseudo-labels.
RENDERING, STRONG_VIEWS, GRAPH = "rendering", "strong_views", "graph"


@dataclass(frozen=True)
class Term:
    """One term of the objective."""

    value: Callable[[StepContext], torch.Tensor]  # the term on one batch, a scalar
    weight: str | float  # its weight setting's config field ("loss.alpha_rc"), or a number
    paper: bool = False  # part of the paper's objective (Eq. 5-8)
    needs: frozenset[str] = frozenset()  # inputs beyond bottom-up: RENDERING, STRONG_VIEWS, GRAPH
    schedule: Callable[[float, int, int], float] = constant  # (setting, step, steps/epoch) -> w

    def setting(self, cfg) -> float:
        """Its weight setting in a config: the dotted field's value, or the number."""
        if isinstance(self.weight, str):
            section, key = self.weight.split(".")
            return getattr(getattr(cfg, section), key)
        return self.weight

    def weight_at(self, cfg, step: int, steps_per_epoch: int) -> float:
        """Its weight at global step `step`: 0 in the paper's step unless it is the paper's."""
        if cfg.loss.paper_only and not self.paper:
            return 0.0
        return self.schedule(self.setting(cfg), step, steps_per_epoch)


# The objective's terms, in the order they are summed. Adding a term: its function of the
# context and its entry here, its weight's config field (a LossConfig field: flag, validation
# and summaries follow), its test.
TERMS: dict[str, Term] = {
    "ce": Term(lambda c: cross_entropy(c.logits_lab, c.labels), "loss.alpha_h", paper=True),
    "rc": Term(lambda c: reconstruction(c.images, c.rendered), "loss.alpha_rc", paper=True,
               needs=frozenset({RENDERING})),
    "kl": Term(lambda c: kl_term(c.logits_unsup, c.loss_cfg.kl_mode), "loss.alpha_kl",
               paper=True),
    "nn": Term(lambda c: non_negativity(c.templates), "loss.alpha_nn", paper=True,
               needs=frozenset({RENDERING})),
    "graph": Term(lambda c: graph_prior(c.logits_unsup, *c.graph), "train.graph_prior",
                  needs=frozenset({GRAPH}), schedule=fade),
    "con": Term(lambda c: consistency(c.logits_strong, c.logits_weak, c.loss_cfg.con_threshold),
                "train.consistency", needs=frozenset({STRONG_VIEWS})),
}


def needed(weights: dict[str, float]) -> frozenset[str]:
    """The inputs the terms with a weight other than 0 need (RENDERING, STRONG_VIEWS, GRAPH)."""
    return frozenset().union(*(TERMS[n].needs for n, w in weights.items() if w and n in TERMS))


def in_float32(ctx: StepContext) -> StepContext:
    """ctx with every floating-point tensor in float32 (a bf16 autocast step's are bf16)."""

    def f32(x):
        if isinstance(x, torch.Tensor):
            return x.float() if x.is_floating_point() else x
        if isinstance(x, (list, tuple)):
            return type(x)(f32(v) for v in x)
        return x

    # The templates z(l) stay as they are: copying every layer's map to float32 cost 2 % of a
    # bf16 step, and non_negativity's means accumulate in float32 anyway.
    return dataclasses.replace(ctx, **{f.name: f32(getattr(ctx, f.name))
                                       for f in dataclasses.fields(ctx) if f.name != "templates"})


def drmm_objective(ctx: StepContext, weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """The weighted objective and its named terms {"loss", "ce", "rc", "kl", "nn", ...}.

    weights: each term's weight at this step (drmm.step.step_weights). A term whose weight is 0
    or missing is neither computed nor returned (its context fields may then be None).
    """
    # In float32 always: under bf16 autocast the terms would keep 8 bits of mantissa.
    with torch.autocast(ctx.logits_lab.device.type, enabled=False):
        ctx, terms, loss = in_float32(ctx), {}, None
        for name, term in TERMS.items():
            w = weights.get(name, 0.0)
            if not w:
                continue
            terms[name] = term.value(ctx)  # ()
            loss = w * terms[name] if loss is None else loss + w * terms[name]  # ()
        if loss is None:  # every weight 0 at this step (a faded graph prior alone): zero loss
            terms["ce"] = TERMS["ce"].value(ctx)  # ()
            loss = 0.0 * terms["ce"]  # () still a function of the weights, for backward()
    return {"loss": loss, **terms}
