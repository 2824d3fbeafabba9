"""One step of hard EM (section 4.1, Appendix A): the batch, the E-step, the M-step.

A step reads top to bottom: `make_batch` takes the step's images from the epoch's order and
augments them; `step_weights` gives each term of the objective (drmm.losses.TERMS) its weight at
this step, a pure function of the config and the global step; `e_step` runs the bottom-up pass
(c-hat and the switches a, t), the strong views' pass and the top-down rendering when a term
needs them; `drmm_objective` sums the terms; `train_step` is the M-step, one SGD update.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from drmm.config import Config
from drmm.data.augment import augment, strong_view
from drmm.data.images import Images
from drmm.distributed import Dist
from drmm.losses import TERMS, StepContext, drmm_objective
from drmm.model import DRMM, BottomUp, Switches


@dataclass
class Batch:
    """One step's images on the training device (this process's share of the global batch)."""

    x_lab: torch.Tensor  # (B_L, C, H, W) labeled images, augmented
    y_lab: torch.Tensor  # (B_L,) int64 their labels
    x_unl: torch.Tensor | None  # (B_U, C, H, W) unlabeled images, augmented; None: supervised
    x_strong: torch.Tensor | None = None  # (B_U, C, H, W) their strong views, for L_CON
    graph: tuple[torch.Tensor, torch.Tensor] | None = None  # (B_U,) x2 the graph prior's targets


def epoch_order(labeled: torch.Tensor, n_unl: int, gen: torch.Generator, n_lab: int | None = None):
    """Index streams for one epoch: a shuffle of the unlabeled set, and the labeled set
    replicated (each copy shuffled) to n_lab draws, by default the unlabeled set's size
    (Appendix A: half of each batch labeled)."""
    n_lab = n_unl if n_lab is None else n_lab
    reps = math.ceil(n_lab / len(labeled))
    lab = torch.cat([labeled[torch.randperm(len(labeled), generator=gen)] for _ in range(reps)])
    return lab[:n_lab], torch.randperm(n_unl, generator=gen)  # (n_lab,), (n_unl,)


def make_batch(cfg: Config, x_train: Images | torch.Tensor, y_train: torch.Tensor,
               order: tuple[torch.Tensor, torch.Tensor], step: int, weights: dict[str, float],
               graph: tuple[torch.Tensor, torch.Tensor] | None = None, dist: Dist | None = None
               ) -> Batch:
    """Step `step` of an epoch: its labeled and unlabeled images from the epoch's order (this
    rank's shard of each), augmented; the strong views of the unlabeled images (made from them
    before their shift) when L_CON is on; the graph prior's targets when its weight is not 0.

    x_train: (N, C, H, W) uint8 Images or float32, y_train: (N,) the training set on the device;
    order: epoch_order's (labeled, unlabeled) index streams; graph: (pseudo-labels (N,),
    certainties (N,)).
    """
    t, dist = cfg.train, dist or Dist()  # one process by default
    n_lab, n_unl = t.batch_split()
    lab_order, unl_order = order
    il = dist.shard(lab_order[step * n_lab:(step + 1) * n_lab]).to(x_train.device)  # (B_L,)
    iu = dist.shard(unl_order[step * n_unl:(step + 1) * n_unl]).to(x_train.device)  # (B_U,)
    x_unl = None if t.supervised_only else x_train[iu]  # (B_U, C, H, W) unshifted
    x_lab, y_lab, x_unl_shifted = augment((x_train[il], y_train[il], x_unl), t.augment)
    return Batch(
        x_lab, y_lab, x_unl_shifted,
        x_strong=(strong_view(x_unl, mirror=t.augment == "crop_flip")
                  if weights.get("con") and x_unl is not None else None),
        graph=(graph[0][iu], graph[1][iu]) if weights.get("graph") and graph is not None
        else None,
    )


def ramp(step: int, steps: float) -> float:
    """A weight's multiplier at a global step: from 0 up to 1 linearly over `steps` steps."""
    return min(1.0, step / steps) if steps > 0 else 1.0


def step_weights(cfg: Config, step: int, steps_per_epoch: int) -> dict[str, float]:
    """Each term's weight at global step `step`: the value of its config field; the graph
    prior's field counts epochs, over which its weight falls from 1 to 0. A supervised-only
    run (the DCN baseline) has L_H alone."""
    if cfg.train.supervised_only:
        return {"ce": cfg.loss.alpha_h}
    weights = {name: config_value(cfg, term.weight) for name, term in TERMS.items()}
    weights["graph"] = 1 - ramp(step, cfg.train.graph_prior * steps_per_epoch)
    return weights


def config_value(cfg: Config, weight: str | float) -> float:
    """The value of a dotted config field ("loss.alpha_rc"), or a number as it is."""
    if isinstance(weight, str):
        section, key = weight.split(".")
        return getattr(getattr(cfg, section), key)
    return weight


def paper_step(cfg: Config) -> Config:
    """A copy of cfg whose step is the paper's: every term not in the paper's objective (Eq.
    5-8) switched off at its config field. Benchmarks and tests that mean the paper's step use
    it, so that a term a preset adds never changes what they time or train."""
    cfg = copy.deepcopy(cfg)
    for term in TERMS.values():
        if not term.paper and isinstance(term.weight, str):
            section, key = term.weight.split(".")
            setattr(getattr(cfg, section), key, 0.0)
    return cfg


# ----------------------------------------------------------------------------------------------
# E-step and objective


def split_bottom_up(bu: BottomUp, n: int) -> tuple[BottomUp, BottomUp]:
    """Split a joint bottom-up result into its first n images and the rest."""

    def part(sl):
        return BottomUp(
            logits=bu.logits[sl],
            switches=[Switches(s.a[sl], None if s.t is None else s.t[sl]) for s in bu.switches],
            top_size=bu.top_size,
        )

    return part(slice(0, n)), part(slice(n, None))


def e_step(model: DRMM, cfg: Config, batch: Batch, weights: dict[str, float]) -> StepContext:
    """The E-step on one batch: bottom-up inference of c-hat and the switches, then what the
    active terms need of the strong views' scores and of the top-down rendering from c-hat.
    The passes run in this order always (BatchNorm statistics and the gradient's summation
    order depend on it)."""
    t, lc = cfg.train, cfg.loss
    if t.supervised_only:  # the DCN baseline: bottom-up on the labeled half only
        return StepContext(model(batch.x_lab), batch.y_lab, loss_cfg=lc)  # (B_L, K)
    needs = frozenset().union(*(TERMS[n].needs for n, w in weights.items() if w and n in TERMS))
    x_lab, y_lab, x_unl = batch.x_lab, batch.y_lab, batch.x_unl
    if t.bn_mode == "separate":  # each half normalised with its own batch statistics
        bu_lab, bu_unl = model.bottom_up(x_lab), model.bottom_up(x_unl)
    else:
        bu_lab, bu_unl = split_bottom_up(model.bottom_up(torch.cat([x_lab, x_unl])), len(x_lab))
    ctx = StepContext(bu_lab.logits, y_lab, loss_cfg=lc, graph=batch.graph)
    if "strong_views" in needs:  # the strong views get their own BatchNorm statistics
        x_strong = (strong_view(x_unl, mirror=t.augment == "crop_flip") if batch.x_strong is None
                    else batch.x_strong)  # (B_U, C, H, W)
        ctx.logits_strong, ctx.logits_weak = model(x_strong), bu_unl.logits  # (B_U, K) each
    if batch.graph is not None and lc.unsup_on == "all":  # the labeled images: their labels
        ctx.graph = (torch.cat([y_lab, batch.graph[0]]),  # (B,)
                     torch.cat([torch.ones_like(batch.graph[1][:len(y_lab)]), batch.graph[1]]))
    rendering = "rendering" in needs  # else no top-down pass: nothing reads the rendering
    td_unl = model.top_down(bu_unl) if rendering else None  # rendered from the predicted c-hat
    if lc.unsup_on == "unlabeled":
        ctx.logits_unsup, ctx.images = bu_unl.logits, x_unl  # (B_U, K), (B_U, C, H, W)
        if rendering:
            ctx.rendered, ctx.templates = td_unl.image, td_unl.templates  # (B_U, C, H, W), z(l)
        return ctx
    td_lab = model.top_down(bu_lab) if rendering else None
    ctx.logits_unsup = torch.cat([bu_lab.logits, bu_unl.logits])  # (B, K)
    ctx.images = torch.cat([x_lab, x_unl])  # (B, C, H, W)
    if rendering:
        ctx.rendered = torch.cat([td_lab.image, td_unl.image])  # (B, C, H, W)
        ctx.templates = [torch.cat(pair) for pair in zip(td_lab.templates, td_unl.templates,
                                                         strict=True)]
    return ctx


def step_terms(model: DRMM, cfg: Config, batch: Batch, weights: dict[str, float]
               ) -> dict[str, torch.Tensor]:
    """E-step and objective for one batch: the named loss terms, graph attached."""
    return drmm_objective(e_step(model, cfg, batch, weights), weights)


class Objective(nn.Module):
    """The model and the objective as one module: DistributedDataParallel synchronises the
    gradients of whatever its forward computes, so the whole E-step must run inside it."""

    def __init__(self, model: DRMM, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: Batch, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        return step_terms(self.model, self.cfg, batch, weights)


# ----------------------------------------------------------------------------------------------
# M-step


def make_optimizer(model: DRMM, cfg: Config, total_steps: int):
    """The M-step's optimiser and its learning-rate schedule over `total_steps` steps."""
    t = cfg.train
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                              weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return opt, make_scheduler(opt, t.decay, t.lr_final, total_steps)


def make_scheduler(opt, decay: str, lr_final: float, steps: int):
    """The learning rate from the optimiser's current rate down to lr_final at the last of
    `steps` steps: exponentially (the paper) or along a half cosine."""
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]  # where the schedule starts from
    lr = opt.param_groups[0]["lr"]
    if decay == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps - 1, 1), eta_min=lr_final)
    gamma = (lr_final / lr) ** (1.0 / max(steps - 1, 1))  # lr -> lr_final per step
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


class NonFiniteStep(Exception):
    """A batch gave a NaN or inf loss or gradient; nothing was updated."""

    def __init__(self, terms: dict[str, float]):
        self.terms = terms
        self.what = "loss" if not math.isfinite(terms["loss"]) else "gradient"
        super().__init__(f"non-finite {self.what}")


def train_step(stepper: nn.Module, model: DRMM, opt, sched, batch: Batch,
               weights: dict[str, float], autocast=None, check: bool = True,
               keep_bn_on_skip: bool = False) -> dict[str, torch.Tensor]:
    """One round of hard EM: the E-step and objective (stepper, an Objective or its DDP
    wrapper), then the M-step (one optimiser update) and one LR-schedule step. Returns the loss
    terms, detached.

    With `check`, a NaN or inf in the loss or in any gradient raises NonFiniteStep before
    opt.step(), so a bad batch never reaches the weights; the schedule still steps (it follows
    the step count), and with keep_bn_on_skip the BatchNorm statistics the forward pass moved
    are put back. The check is one host sync: free on CPU, a stall on CUDA.
    """
    if keep_bn_on_skip:  # the forward pass moves the BN statistics: keep a copy
        buffers = [b.clone() for b in model.buffers()]
    with autocast if autocast is not None else contextlib.nullcontext():
        terms = stepper(batch, weights)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if check and not torch.isfinite(
            terms["loss"].detach()
            + sum(p.grad.sum() for p in model.parameters() if p.grad is not None)).item():
        if keep_bn_on_skip:
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers, strict=True):
                    b.copy_(saved)
        with warnings.catch_warnings():  # "scheduler stepped before optimizer"
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
        raise NonFiniteStep({k: v.item() for k, v in terms.items()})
    opt.step()
    sched.step()
    return {k: v.detach() for k, v in terms.items()}
