"""Semi-supervised training of the DRMM by hard EM (section 4.1, Appendix A), crash-safe.

Each step is one round of hard EM, `train_step`: the E-step (bottom-up inference of c-hat and
the switches, then the top-down reconstruction) and the objective of drmm.losses inside
`step_terms`, then the M-step as one SGD update. `train` reads straight through: setup, then
the epoch loop with the update in plain sight, evaluation, logging and checkpoints.

Reliability (docs/reliability.md): the checkpoint (drmm.run_state) is written atomically at
every epoch end and, with checkpoint_every = K, every K steps; a resumed run equals an
uninterrupted one exactly on CPU. The loss and the gradients are checked for NaN / inf before
opt.step(): a bad batch stops the run (naming the step and the loss terms; the last checkpoint
stays as it was) or, with skip_nonfinite, is skipped (no parameter or BatchNorm update) and
counted.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from drmm import distributed
from drmm.checkpoint import CHECKPOINT, save_checkpoint, state_dict_problem
from drmm.config import Config, validate
from drmm.data import Dataset, check_dataset, choose_labeled, load_dataset, read_indices
from drmm.data.augment import augment, strong_view
from drmm.errors import DRMMError, require_device, warn_slow_precision
from drmm.evaluate import confusion, error_rate, save_reconstructions, worst_confusion
from drmm.files import atomic_write, check_out_dir, remove_stale_temporaries
from drmm.graph_prior import graph_pseudo_labels
from drmm.losses import drmm_objective
from drmm.model import DRMM, BottomUp, Switches, feature_sizes
from drmm.run_state import (
    CHECKPOINT_FORMAT,
    RunState,
    check_resume,
    get_rng_states,
    load_run_state,
    position,
    set_rng_states,
)

RUN_FILES = (CHECKPOINT, "metrics.json", "metrics.jsonl", "config.json", "labeled_indices.npy")

# ----------------------------------------------------------------------------------------------
# One step of hard EM


def step_terms(model: DRMM, cfg: Config, x_lab, y_lab, x_unl, kl_scale: float = 1.0,
               graph=None, graph_scale: float = 0.0, x_strong=None) -> dict[str, torch.Tensor]:
    """E-step and objective for one batch; returns the named loss terms (graph attached).

    x_lab: (B/2, C, H, W) labeled images, y_lab: (B/2,), x_unl: (B/2, C, H, W) unlabeled
    (None for a supervised-only run); kl_scale multiplies alpha_kl (its warm-up); graph:
    (pseudo-labels (B/2,), certainties (B/2,)) of the unlabeled images for the graph prior,
    weighted by graph_scale (drmm/graph_prior.py); x_strong: (B/2, C, H, W) strong views of the
    unlabeled images for the consistency term L_CON (train.consistency; drmm/losses.py); the
    training loop makes them from the images before their shift, None makes them from x_unl.
    """
    t, lc = cfg.train, cfg.loss
    if t.supervised_only:  # the DCN baseline: bottom-up on the labeled half, cross-entropy only
        return drmm_objective(lc, model(x_lab), y_lab)
    if t.bn_mode == "separate":  # each half normalised with its own batch statistics
        bu_lab, bu_unl = model.bottom_up(x_lab), model.bottom_up(x_unl)
    else:
        bu = model.bottom_up(torch.cat([x_lab, x_unl]))
        bu_lab, bu_unl = split_bottom_up(bu, len(x_lab))
    con = {}  # L_CON's two views' scores; the strong views get their own BatchNorm statistics
    if t.consistency:
        x_strong = strong_view(x_unl) if x_strong is None else x_strong  # (B/2, C, H, W)
        con = {"logits_strong": model(x_strong), "logits_weak": bu_unl.logits,  # (B/2, K) each
               "con_weight": t.consistency}
    if graph is not None and lc.unsup_on == "all":  # the labeled images: their own labels
        graph = (torch.cat([y_lab, graph[0]]),  # (B,)
                 torch.cat([torch.ones_like(graph[1][:len(y_lab)]), graph[1]]))  # (B,)
    if not (lc.alpha_rc or lc.alpha_nn):  # nothing needs the rendering: skip the top-down pass
        logits_unsup = bu_unl.logits if lc.unsup_on == "unlabeled" else torch.cat(
            [bu_lab.logits, bu_unl.logits])  # (B/2 or B, K)
        return drmm_objective(lc, bu_lab.logits, y_lab, logits_unsup, kl_scale=kl_scale,
                              graph=graph, graph_scale=graph_scale, **con)
    td_unl = model.top_down(bu_unl)  # rendered from the predicted class c-hat
    if lc.unsup_on == "unlabeled":
        return drmm_objective(lc, bu_lab.logits, y_lab, bu_unl.logits, x_unl, td_unl.image,
                              td_unl.templates, kl_scale, graph, graph_scale, **con)
    td_lab = model.top_down(bu_lab, y_lab if lc.render_from == "label" else None)
    return drmm_objective(
        lc, bu_lab.logits, y_lab,
        torch.cat([bu_lab.logits, bu_unl.logits]),  # (B, K)
        torch.cat([x_lab, x_unl]),  # (B, C, H, W)
        torch.cat([td_lab.image, td_unl.image]),  # (B, C, H, W)
        [torch.cat(pair) for pair in zip(td_lab.templates, td_unl.templates, strict=True)],
        kl_scale, graph, graph_scale, **con,
    )


class Objective(nn.Module):
    """The model and the objective as one module: DistributedDataParallel synchronises the
    gradients of whatever its forward computes, so the whole E-step must run inside it."""

    def __init__(self, model: DRMM, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.kl_scale = 1.0  # the training loop sets it at each step (train.kl_warmup)
        self.graph_scale = 0.0  # and this one too (train.graph_prior)

    def forward(self, x_lab, y_lab, x_unl, graph=None, x_strong=None
                ) -> dict[str, torch.Tensor]:
        return step_terms(self.model, self.cfg, x_lab, y_lab, x_unl, self.kl_scale, graph,
                          self.graph_scale, x_strong)


class NonFiniteStep(Exception):
    """A batch gave a NaN or inf loss or gradient; nothing was updated."""

    def __init__(self, terms: dict[str, float]):
        self.terms = terms
        self.what = "loss" if not math.isfinite(terms["loss"]) else "gradient"
        super().__init__(f"non-finite {self.what}: {fmt(terms)}")


def train_step(stepper: nn.Module, model: DRMM, opt, sched, batch: tuple,
               autocast=None, check: bool = True, keep_bn_on_skip: bool = False,
               ema: AveragedModel | None = None) -> dict[str, torch.Tensor]:
    """One round of hard EM on batch = (x_lab, y_lab, x_unl[, graph, x_strong]): the E-step and
    objective (stepper, an Objective or its DDP wrapper), then the M-step (one optimiser
    update), one LR-schedule step and, if given, one update of the weight average `ema`.
    Returns the loss terms, detached.

    With `check`, a NaN or inf in the loss or in any gradient raises NonFiniteStep before
    opt.step(), so a bad batch never reaches the weights; the schedule still steps (it follows
    the step count), and with keep_bn_on_skip the BatchNorm statistics the forward pass moved
    are put back. The check is one host sync: free on CPU, a stall on CUDA.
    """
    if keep_bn_on_skip:  # the forward pass moves the BN statistics: keep a copy
        buffers = [b.clone() for b in model.buffers()]
    with autocast if autocast is not None else contextlib.nullcontext():
        terms = stepper(*batch)
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
    if ema is not None:
        ema.update_parameters(model)
    return {k: v.detach() for k, v in terms.items()}


# ----------------------------------------------------------------------------------------------
# Setup: data, labeled split, optimiser


def split_bottom_up(bu, n: int):
    """Split a joint bottom-up result into its first n images and the rest."""

    def part(sl):
        return BottomUp(
            logits=bu.logits[sl],
            switches=[Switches(s.a[sl], None if s.t is None else s.t[sl]) for s in bu.switches],
            top_size=bu.top_size,
        )

    return part(slice(0, n)), part(slice(n, None))


def epoch_order(labeled: torch.Tensor, n_unl: int, gen: torch.Generator, n_lab: int | None = None):
    """Index streams for one epoch: a shuffle of the unlabeled set, and the labeled set
    replicated (each copy shuffled) to n_lab draws, by default the unlabeled set's size
    (Appendix A: half of each batch labeled)."""
    n_lab = n_unl if n_lab is None else n_lab
    reps = math.ceil(n_lab / len(labeled))
    lab = torch.cat([labeled[torch.randperm(len(labeled), generator=gen)] for _ in range(reps)])
    return lab[:n_lab], torch.randperm(n_unl, generator=gen)  # (n_lab,), (n_unl,)


def warmup(step: int, steps: float) -> float:
    """A weight's multiplier at a global step: from 0 up to 1 linearly over `steps` steps."""
    return min(1.0, step / steps) if steps > 0 else 1.0


def make_optimizer(model: DRMM, cfg: Config, total_steps: int):
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


def prepare(cfg: Config, data: Dataset | None = None):
    """Check the config, load the data and check it against the model, choose the labeled split.

    Fills in cfg.model's input size and class count from the data (pass a copy to keep yours).
    Every bad input (config value, data file, data set, label count, image size) stops here with
    a one-line DRMMError, before any output is written or any training starts.
    """
    validate(cfg)
    t = cfg.train
    given = read_indices(t.labeled_indices) if t.labeled_indices else None  # before the data
    if data is None:
        data = load_dataset(t.dataset, t.data_dir, verify=t.verify, preprocess=t.preprocess,
                            channels=t.channels, image_size=t.image_size,
                            unlabeled=t.unlabeled, seed=t.seed)
    elif t.unlabeled is not None:
        raise DRMMError("train.unlabeled subsets data sets loaded by name; with a Dataset"
                        " given, cut its training set yourself and leave unlabeled unset")
    check_dataset(data)
    c, h, w = data.image_shape
    if h != w:
        raise DRMMError(f"images are {h}x{w}; only square images are supported")
    try:
        feature_sizes(cfg.model.specs(), h)
    except ValueError as e:
        raise DRMMError(f"dataset {data.name}: --arch {cfg.model.arch} cannot take {h}x{w} images"
                        f" ({e}); choose another --arch or resize the images") from e
    cfg.model.in_channels, cfg.model.image_size = c, h
    cfg.model.num_classes = data.num_classes
    labeled = choose_labeled(data.y_train.numpy(), data.num_classes, t.labels, t.seed, given)
    return data, labeled


def restore(model, ema, opt, sched, gen: torch.Generator, saved: dict, cfg: Config,
            steps_per_epoch: int, device) -> tuple[RunState, object]:
    """Load a checkpoint into a run that continues it: model, weight average, optimiser, RNG
    states, the data order's generator at the epoch's start; returns the RunState and the LR
    schedule. If the run's length or rates changed (a longer run, or forced), the decay is
    planned anew from the current rate to lr_final at the new last step, in the shape the
    config now names."""
    run = RunState.from_checkpoint(saved)
    run.sums = {k: v.to(device) for k, v in run.sums.items()}
    gen.set_state(run.data_rng)  # the generator as it was at the epoch's start
    steps_left = steps_per_epoch * (cfg.train.epochs - run.epoch) - run.step
    try:
        model.load_state_dict(saved.get("online_model", saved["model"]))
        if ema is not None:
            ema.module.load_state_dict(saved["model"])
            ema.n_averaged.fill_(1)  # (only 0, "copy at the next update", matters to it)
        opt.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise DRMMError(f"the checkpoint does not fit this config ({state_dict_problem(e)});"
                        " resume with the run's own settings") from e
    set_rng_states(saved["rng"], device)
    was, t = Config.from_dict(saved["config"]).train, cfg.train
    if (was.epochs, was.lr, was.lr_final, was.decay) == (t.epochs, t.lr, t.lr_final, t.decay):
        sched.load_state_dict(saved["scheduler"])
        return run, sched
    for group in opt.param_groups:  # a changed lr rescales the current rate
        group["lr"] *= t.lr / was.lr
    lr_final = min(t.lr_final, opt.param_groups[0]["lr"])  # never climb back up
    return run, make_scheduler(opt, t.decay, lr_final, steps_left)


def on_device(data: Dataset, device, channels_last: bool):
    """The whole data set on the training device, batched by index from there (airbench)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x_train = data.x_train.to(device).contiguous(memory_format=layout)  # (N, C, H, W)
    y_train = data.y_train.to(device)  # (N,)
    x_test = data.x_test.to(device) if data.has_test else None  # (M, C, H, W) or none
    y_test = data.y_test.to(device) if data.has_test else None  # (M,)
    return x_train, y_train, x_test, y_test


# ----------------------------------------------------------------------------------------------
# The training run


def train(cfg: Config, out_dir: str | Path, resume: bool = False, data: Dataset | None = None,
          progress: bool = True, force_resume: bool = False) -> dict:
    """Train, evaluating after each epoch; writes RUN_DIR/{checkpoint.pt, metrics.json, ...}.

    resume: continue the run in out_dir from its checkpoint (refused if the config changed,
    unless force_resume, which continues anyway after listing the changes).
    """
    out = check_out_dir(out_dir)  # a bad --out fails now, not after loading the data
    saved = load_run_state(out / CHECKPOINT) if resume else None
    if saved is None and (out / CHECKPOINT).exists():
        raise DRMMError(f"{out} already holds a run ({CHECKPOINT}); continue it with --resume"
                        f" {out}, or pass another --out")
    cfg = copy.deepcopy(cfg)  # prepare() fills in the model's input size; the caller's stays
    data, labeled = prepare(cfg, data)
    t = cfg.train
    if saved is not None:
        check_resume(out, saved, cfg, labeled, len(data.x_train), force_resume)
    require_device(t.device)
    if t.sync_bn and torch.device(t.device).type != "cuda":
        raise DRMMError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); drop it")
    n_lab, n_unl = t.batch_split()  # labeled and unlabeled images per step
    dist = distributed.setup(t.device, (n_lab, n_unl))  # one process unless under torchrun
    writer, bar = None, None
    try:  # from here on, any exit leaves the process group and the writer closed
        device, is_main = dist.device, dist.is_main  # only rank 0 writes files
        if is_main:
            warn_slow_precision(t.precision, device)
        model, objective, stepper = build_model(cfg, dist)
        # With train.ema, an exponential moving average of the weights is what is evaluated and
        # saved as the model (its BatchNorm statistics measured anew, see recompute_bn);
        # `model` is what SGD moves.
        ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=False)
               if t.ema else None)
        final = ema.module if ema is not None else model  # the network evaluated and saved
        autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                  enabled=t.precision == "bf16")
        x_train, y_train, x_test, y_test = on_device(data, device, t.channels_last)
        labeled_t = torch.from_numpy(labeled)
        steps_per_epoch = len(x_train) // n_unl  # an epoch: one pass over the unlabeled set
        if steps_per_epoch < 1:
            raise DRMMError(f"{n_unl} unlabeled images per step is more than the training set"
                            f" ({len(x_train)} images); use a smaller --batch-size")
        opt, sched = make_optimizer(model, cfg, steps_per_epoch * t.epochs)
        gen = torch.Generator().manual_seed(t.seed)  # the data order
        run = RunState(data_rng=gen.get_state())
        if saved is not None:
            run, sched = restore(model, ema, opt, sched, gen, saved, cfg, steps_per_epoch, device)
            print(f"drmm: resuming {out} from its checkpoint at the"
                  f" {position(run.epoch, run.step, steps_per_epoch)}", file=sys.stderr)
        ckpt = Checkpointer(out / CHECKPOINT, model, final, opt, sched, device, is_main,
                            steps_per_epoch,
                            fixed={"n_train": len(x_train), "config": cfg.to_dict(),
                                   "labeled_indices": labeled_t, "class_names": data.class_names,
                                   "preprocess": data.preprocessor.state_dict()},
                            last_saved=saved and position(run.epoch, run.step, steps_per_epoch))
        if is_main:
            start_run_files(out, cfg, labeled, run.history)
            writer = (SummaryWriter(str(out / "tb"), purge_step=len(run.history) + 1)
                      if t.tensorboard else None)  # purge: events past the checkpoint
        wall0 = time.perf_counter() - run.wall_seconds  # the graph's time counts too
        graph = None  # (pseudo-labels (N,), certainties (N,)) of the training images
        if t.graph_prior and not t.supervised_only and run.epoch < t.graph_prior:
            if is_main:  # minutes of CPU work: rank 0 alone spreads the labels, the others wait
                graph = graph_pseudo_labels(x_train, labeled, y_train[labeled_t].cpu().numpy(),
                                            cfg.model.num_classes,
                                            log=lambda m: print(f"drmm: {m}", file=sys.stderr))
            else:
                graph = (torch.empty(len(x_train), dtype=torch.long, device=device),  # (N,)
                         torch.empty(len(x_train), device=device))  # (N,)
            distributed.broadcast_from_main(dist, graph)
        bar = tqdm(total=steps_per_epoch, disable=not (progress and is_main), dynamic_ncols=True,
                   leave=False)
        for epoch in range(run.epoch, t.epochs):
            model.train()
            lab_order, unl_order = epoch_order(labeled_t, len(x_train), gen,
                                               steps_per_epoch * n_lab)
            t0 = time.perf_counter() - run.epoch_seconds
            bar.reset()
            bar.update(run.step)
            bar.set_description(f"epoch {epoch + 1}/{t.epochs}")
            for step in range(run.step, steps_per_epoch):
                # this rank's shard of each part of the global batch (all of it in one process)
                il = dist.shard(lab_order[step * n_lab:(step + 1) * n_lab]).to(device)  # (B_L/W,)
                iu = dist.shard(unl_order[step * n_unl:(step + 1) * n_unl]).to(device)  # (B_U/W,)
                x_unl = None if t.supervised_only else x_train[iu]  # (B_U, C, H, W) unshifted
                batch = augment((x_train[il], y_train[il], x_unl), t.augment)
                # the graph prior's weight: from 1 down to 0 over its first train.graph_prior epochs
                objective.graph_scale = 1 - warmup(epoch * steps_per_epoch + step,
                                                   t.graph_prior * steps_per_epoch)
                use_graph = graph is not None and objective.graph_scale > 0
                batch = (*batch, (graph[0][iu], graph[1][iu]) if use_graph else None,  # (B_U,) x2
                         strong_view(x_unl) if t.consistency and x_unl is not None else None)
                # On CUDA the NaN check is a host sync: every log_every steps unless bad batches
                # must be skipped (a NaN then stops the run at the next check; the last
                # checkpoint is still good).
                check = (device.type != "cuda" or t.skip_nonfinite
                         or (step + 1) % t.log_every == 0 or step + 1 == steps_per_epoch)
                objective.kl_scale = warmup(epoch * steps_per_epoch + step,
                                            t.kl_warmup * steps_per_epoch)
                try:
                    run.add(train_step(stepper, model, opt, sched, batch, autocast, check,
                                       keep_bn_on_skip=t.skip_nonfinite, ema=ema))
                except NonFiniteStep as e:
                    where = (f"step {epoch * steps_per_epoch + step + 1} (epoch {epoch + 1}, step"
                             f" {step + 1} of {steps_per_epoch})")
                    if not t.skip_nonfinite:
                        raise DRMMError(f"non-finite {e.what} at {where}: {fmt(e.terms)};"
                                        f" {after_nonfinite(ckpt.last_saved, out)}") from None
                    run.epoch_skipped, run.skipped = run.epoch_skipped + 1, run.skipped + 1
                    bar.write(f"skipped batch at {where}: non-finite {e.what} ({fmt(e.terms)})")
                run.step = step + 1
                if run.step % t.log_every == 0 or run.step == steps_per_epoch:
                    bar.set_postfix_str(fmt(run.means()), refresh=False)  # one host sync
                bar.update(1)
                if t.checkpoint_every and run.step % t.checkpoint_every == 0 \
                        and run.step < steps_per_epoch:
                    run.epoch_seconds = time.perf_counter() - t0
                    run.wall_seconds = time.perf_counter() - wall0
                    if ema is not None:  # the saved average must be usable as it stands
                        recompute_bn(final, x_train)
                    ckpt.save(run)
            if ema is not None:
                recompute_bn(final, x_train)
            record = end_of_epoch(run, epoch, final, x_test, y_test, t, opt,
                                  time.perf_counter() - t0, wall0, steps_per_epoch)
            bar.write(f"epoch {epoch + 1}: {describe_error(record['test_error'])}"
                      f"{describe_confusion(record['worst_confusion'], data.class_names)}"
                      f"  {fmt(run.means())}  ({record['images_per_s']:.0f} img/s)")
            run.finish_epoch(record, gen.get_state())
            ckpt.save(run)
            if is_main:
                log_epoch(out, record, writer)
    finally:
        if bar is not None:
            bar.close()  # so that an error message stays one line
        if writer is not None:
            writer.close()
        distributed.cleanup(dist)
    metrics = final_metrics(run, cfg, len(labeled), len(x_train))
    if is_main:
        atomic_write(out / "metrics.json",
                     lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        save_reconstructions(final, x_test if x_test is not None else x_train,
                             out / "reconstructions.png")
    return metrics


def recompute_bn(model: DRMM, x_train: torch.Tensor, images: int = 5000, batch: int = 500):
    """The BatchNorm statistics of a weight average, measured afresh on the first `images`
    training images. (Averaging the statistics along with the weights gave chance-level test
    error: each step's statistics belong to that step's weights; results/recipe.md.)"""
    update_bn((x_train[i:i + batch] for i in range(0, min(images, len(x_train)), batch)), model)


def build_model(cfg: Config, dist: distributed.Dist) -> tuple[DRMM, Objective, nn.Module]:
    """The model on this rank's device, its Objective, and the module a training step calls:
    the Objective, wrapped in DistributedDataParallel under torchrun (with SyncBatchNorm if
    asked)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    model = DRMM(cfg.model).to(dist.device, memory_format=layout)
    objective = stepper = Objective(model, cfg)  # the step's forward: E-step and objective
    if dist.enabled:
        if t.sync_bn:
            objective = stepper = nn.SyncBatchNorm.convert_sync_batchnorm(stepper)
            model = stepper.model
        stepper = DistributedDataParallel(
            stepper, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return model, objective, stepper


class Checkpointer:
    """Writes the run's checkpoint (rank 0), after every rank has checked the weights."""

    def __init__(self, path: Path, model, final, opt, sched, device, is_main: bool,
                 steps_per_epoch: int, fixed: dict, last_saved: str | None):
        self.path, self.model, self.opt, self.sched = path, model, opt, sched
        self.final = final  # the model that is evaluated and used: model, or its average
        self.device, self.is_main, self.steps_per_epoch = device, is_main, steps_per_epoch
        self.fixed = fixed  # what every checkpoint of the run holds alike: config, split, ...
        self.last_saved = last_saved  # where the last good checkpoint stands, in words

    def save(self, run: RunState) -> None:
        where = position(run.epoch, run.step, self.steps_per_epoch)
        state = self.final.state_dict()  # parameters and BatchNorm running statistics
        # "model" is what eval, predict and sample load; "online_model" what SGD moves, if other
        online = {} if self.final is self.model else {"online_model": self.model.state_dict()}
        # Every rank holds the same weights, so every rank raises here alike: none is left
        # waiting for the others.
        if not all(v.isfinite().all() for sd in (state, *online.values())
                   for v in sd.values() if v.is_floating_point()):
            raise DRMMError(f"the model's weights became non-finite by the {where}; not saved,"
                            f" the last good checkpoint (at the {self.last_saved}) is kept."
                            " Lower --lr")
        if self.is_main:
            run.rng = get_rng_states(self.device)
            save_checkpoint(self.path, {
                "format": CHECKPOINT_FORMAT, **run.to_checkpoint(), **self.fixed, "model": state,
                **online, "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict()})
        self.last_saved = where


# ----------------------------------------------------------------------------------------------
# Records, logs and messages


def end_of_epoch(run: RunState, epoch: int, model, x_test, y_test, t, opt, seconds: float,
                 wall0: float, steps_per_epoch: int) -> dict:
    """The epoch's record: test error, mean loss terms, learning rate, speed."""
    counts = confusion(model, x_test, y_test, t.eval_batch_size) if x_test is not None else None
    images = steps_per_epoch * (t.batch_split()[0] if t.supervised_only else t.batch_size)
    seconds = max(seconds, 1e-9)  # the epoch's training time, over every process that ran it
    return {
        "epoch": epoch + 1,
        "test_error": error_rate(counts) if counts is not None else None,  # None: no test set
        # (true class, predicted class, test images): the largest mix-up, e.g. a lost mode
        "worst_confusion": list(worst_confusion(counts)) if counts is not None else None,
        **{f"train_{k}": v for k, v in run.means().items()},
        "lr": opt.param_groups[0]["lr"],
        "skipped_batches": run.epoch_skipped,
        "epoch_seconds": seconds,
        "images_per_s": images / seconds,  # global batch: all ranks together
        "wall_seconds": time.perf_counter() - wall0,
    }


def start_run_files(out: Path, cfg: Config, labeled: np.ndarray, history: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:  # temporaries of writes that a crash cut short
        remove_stale_temporaries(out / name)
    atomic_write(out / "labeled_indices.npy", lambda f: np.save(f, labeled))
    atomic_write(out / "config.json",
                 lambda f: f.write(json.dumps(cfg.to_dict(), indent=2).encode()))
    # The history in the checkpoint is the truth: drop lines of epochs a crash did not save.
    atomic_write(out / "metrics.jsonl",
                 lambda f: f.write("".join(json.dumps(r) + "\n" for r in history).encode()))


def log_epoch(out: Path, record: dict, writer) -> None:
    try:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise DRMMError(f"cannot write {out / 'metrics.jsonl'} ({e.strerror or e}); the"
                        f" checkpoint is saved: free disk space, then --resume {out}") from e
    if writer is not None:
        for k, v in record.items():
            if isinstance(v, (int, float)):  # not the worst_confusion triple
                writer.add_scalar(k, v, record["epoch"])
        writer.flush()


def final_metrics(run: RunState, cfg: Config, n_labeled: int, n_train: int) -> dict:
    t = cfg.train
    errors = [r["test_error"] for r in run.history if r["test_error"] is not None]
    return {
        "test_error": run.history[-1]["test_error"],  # None: no test set
        "best_test_error": min(errors) if errors else None,  # read off the test set
        # (true class, predicted class, test images) at the end; None in older runs
        "worst_confusion": run.history[-1].get("worst_confusion"),
        "epochs": t.epochs,
        "labels": n_labeled,  # the labeled images used, however they were chosen
        "train_images": n_train,  # N_U: the unlabeled set, all training images trained on
        "seed": t.seed,
        "dataset": t.dataset,
        "arch": cfg.model.arch,
        "supervised_only": t.supervised_only,
        "skipped_batches": run.skipped,  # batches with a NaN / inf loss or gradient, not learned
        "wall_seconds": run.history[-1]["wall_seconds"],
        "test_error_curve": [r["test_error"] for r in run.history],
    }


def after_nonfinite(last_saved: str | None, out: Path) -> str:
    if last_saved:
        return (f"the last good checkpoint (at the {last_saved}) is kept: lower --lr and start a"
                f" new run, or continue with --resume {out} --skip-nonfinite to skip such"
                " batches")
    return ("no checkpoint was written yet: lower --lr, or pass --skip-nonfinite to skip such"
            " batches")


def describe_error(err: float | None) -> str:
    return "no test set" if err is None else f"test error {100 * err:.2f} %"


def describe_confusion(worst: list[int] | None, class_names: list[str]) -> str:
    if not worst or worst[2] == 0:
        return ""
    true, pred, n = worst
    return f" (most often: {n} test {class_names[true]} called {class_names[pred]})"


def fmt(means: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" if abs(v) < 1e5 else f"{k} {v:.3e}" for k, v in means.items())
