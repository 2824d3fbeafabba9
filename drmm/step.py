"""One step of hard EM (section 4.1, Appendix A): the batch, the weights, the E-step.

A step reads top to bottom: `step_weights` gives each term of the objective (drmm.losses.TERMS)
its weight at this step, a pure function of the config and the global step; `make_batch` takes
the step's images from the epoch's order, augments them, and adds what the weighted terms need
(strong views, graph targets); `Objective` runs the E-step (`e_step`: the bottom-up pass for
c-hat and the switches a, t, then the strong views' pass and the top-down rendering when a term
needs them) and sums the terms (drmm.losses.drmm_objective). The M-step, one optimiser update,
is in the training loop (drmm/train.py).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from drmm.config import Config
from drmm.data.augment import augment, strong_view
from drmm.data.images import Images
from drmm.distributed import Dist
from drmm.losses import (
    GRAPH,
    RENDERING,
    STRONG_VIEWS,
    TERMS,
    StepContext,
    drmm_objective,
    needed,
    ramp,
)
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


# train.unlabeled_ramp: the unlabeled images of a step start at this share of their number.
RAMP_START = 0.25


def unlabeled_per_step(cfg: Config, step: int, steps_per_epoch: int, world: int = 1) -> int:
    """Unlabeled images in global step `step` (all processes together): the batch's unlabeled
    share (TrainConfig.batch_split), or, in the first train.unlabeled_ramp epochs, a linear ramp
    up to it from RAMP_START of it, rounded down to a multiple of the processes. The ramp is a
    curriculum of the unlabeled batch (Fast FixMatch, arXiv 2309.03469): the early steps, whose
    classifier labels unlabeled images poorly, pass over fewer of them and cost less."""
    t = cfg.train
    n_unl = t.batch_split()[1]
    share = RAMP_START + (1 - RAMP_START) * ramp(step, t.unlabeled_ramp * steps_per_epoch)
    if t.supervised_only or share == 1.0:
        return n_unl
    return max(world, int(n_unl * share) // world * world)


def epoch_images(cfg: Config, epoch: int, steps_per_epoch: int, world: int = 1) -> int:
    """Training images the steps of epoch `epoch` pass bottom-up (all processes together)."""
    t = cfg.train
    n_lab, first = t.batch_split()[0], epoch * steps_per_epoch
    if t.supervised_only:
        return n_lab * steps_per_epoch
    return sum(n_lab + unlabeled_per_step(cfg, first + s, steps_per_epoch, world)
               for s in range(steps_per_epoch))


def make_batch(cfg: Config, x_train: Images | torch.Tensor, y_train: torch.Tensor,
               order: tuple[torch.Tensor, torch.Tensor], step: int, weights: dict[str, float],
               graph: tuple[torch.Tensor, torch.Tensor] | None = None, dist: Dist | None = None,
               unlabeled: int | None = None) -> Batch:
    """Step `step` of an epoch: its labeled and unlabeled images from the epoch's order (this
    rank's shard of each), augmented; what the terms of weight other than 0 need of the
    unlabeled images: their strong views (made from them before their shift), their graph
    prior targets.

    x_train: (N, C, H, W) uint8 Images or float32, y_train: (N,) the training set on the device;
    order: epoch_order's (labeled, unlabeled) index streams; graph: (pseudo-labels (N,),
    certainties (N,)); unlabeled: the step's unlabeled images, the first of its slice of the
    order (unlabeled_per_step; None: the whole slice).
    """
    t, dist = cfg.train, dist or Dist()  # one process by default
    n_lab, n_unl = t.batch_split()
    n_now = n_unl if unlabeled is None else unlabeled
    lab_order, unl_order = order
    il = dist.shard(lab_order[step * n_lab:(step + 1) * n_lab]).to(x_train.device)  # (B_L,)
    iu = dist.shard(unl_order[step * n_unl:step * n_unl + n_now]).to(x_train.device)  # (B_U,)
    x_unl = None if t.supervised_only else x_train[iu]  # (B_U, C, H, W) unshifted
    x_lab, y_lab, x_unl_shifted = augment((x_train[il], y_train[il], x_unl), t.augment)
    needs = needed(weights)
    return Batch(
        x_lab, y_lab, x_unl_shifted,
        x_strong=(strong_views(x_unl, cfg) if STRONG_VIEWS in needs and x_unl is not None
                  else None),
        graph=(graph[0][iu], graph[1][iu]) if GRAPH in needs and graph is not None else None,
    )


def strong_views(x_unl: torch.Tensor, cfg: Config) -> torch.Tensor:
    """(B_U, C, H, W) the consistency term's strong views of x_unl (B_U, C, H, W), drawn as the
    run's settings say: mirrored where its augmentation mirrors, colours jittered if asked."""
    t = cfg.train
    return strong_view(x_unl, mirror=t.augment == "crop_flip", colour=t.strong_view == "colour")


def step_weights(cfg: Config, step: int, steps_per_epoch: int) -> dict[str, float]:
    """Each term's weight at global step `step`: its setting along its schedule (Term.weight_at).
    A supervised-only run (the DCN baseline) has L_H alone."""
    if cfg.train.supervised_only:
        return {"ce": cfg.loss.alpha_h}
    return {name: term.weight_at(cfg, step, steps_per_epoch) for name, term in TERMS.items()}


def paper_step(cfg: Config) -> Config:
    """A copy of cfg whose step is the paper's (loss.paper_only): every term of TERMS not in the
    paper's objective (Eq. 5-8) off, whatever its weight. Benchmarks, tests and the paper's
    schedules use it, so that a term a preset or a user adds never changes what they run."""
    cfg = copy.deepcopy(cfg)
    cfg.loss.paper_only = True
    return cfg


# ----------------------------------------------------------------------------------------------
# E-step and objective


def split_bottom_up(bu: BottomUp, n: int) -> tuple[BottomUp, BottomUp]:
    """Split a joint bottom-up result into its first n images and the rest."""

    def part(sl):
        return BottomUp(
            logits=bu.logits[sl],
            switches=[Switches(s.on[sl], None if s.t is None else s.t[sl],
                               None if s.on_t is None else s.on_t[sl]) for s in bu.switches],
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
    needs = needed(weights)
    x_lab, y_lab, x_unl = batch.x_lab, batch.y_lab, batch.x_unl
    if t.bn_mode == "separate":  # each half normalised with its own batch statistics
        bu_lab, bu_unl = model.bottom_up(x_lab), model.bottom_up(x_unl)
    else:
        bu_lab, bu_unl = split_bottom_up(model.bottom_up(torch.cat([x_lab, x_unl])), len(x_lab))
    ctx = StepContext(bu_lab.logits, y_lab, loss_cfg=lc, graph=batch.graph)
    if STRONG_VIEWS in needs:  # the strong views get their own BatchNorm statistics
        x_strong = (strong_views(x_unl, cfg) if batch.x_strong is None
                    else batch.x_strong)  # (B_U, C, H, W)
        ctx.logits_strong, ctx.logits_weak = model(x_strong), bu_unl.logits  # (B_U, K) each
    if batch.graph is not None and lc.unsup_on == "all":  # the labeled images: their labels
        ctx.graph = (torch.cat([y_lab, batch.graph[0]]),  # (B,)
                     torch.cat([torch.ones_like(batch.graph[1][:len(y_lab)]), batch.graph[1]]))
    rendering = RENDERING in needs  # else no top-down pass: nothing reads the rendering
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


class Objective(nn.Module):
    """The model and the objective as one module: the E-step and the weighted terms of one batch,
    {"loss", "ce", "rc", ...}. DistributedDataParallel synchronises the gradients of whatever
    its forward computes, so the whole E-step runs inside it."""

    def __init__(self, model: DRMM, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch: Batch, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        return drmm_objective(e_step(self.model, self.cfg, batch, weights), weights)
