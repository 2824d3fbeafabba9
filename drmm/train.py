"""Semi-supervised training of the DRMM by hard EM (section 4.1, Appendix A), crash-safe.

`train` reads as a table of contents: open the run (config, data, labeled split, a checkpoint to
continue), build the trainer (model, optimiser, data on the device, the graph prior's targets),
then the epoch loop: each step a guarded round of hard EM (drmm/step.py), each epoch's end an
evaluation, a record and a checkpoint; then the final metrics.

Reliability (docs/reliability.md): the checkpoint (drmm.checkpoint) is written atomically at
every epoch end and, with checkpoint_every = K, every K steps; a resumed run equals an
uninterrupted one exactly on CPU. The loss and the gradients are checked for NaN / inf before
opt.step(): a bad batch stops the run (naming the step and the loss terms; the last checkpoint
stays as it was) or, with skip_nonfinite, is skipped (no parameter or BatchNorm update) and
counted.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from drmm import distributed
from drmm.board import Board
from drmm.checkpoint import (
    CHECKPOINT,
    Checkpointer,
    RunState,
    check_resume,
    load_run_state,
    position,
    restore_run,
)
from drmm.config import Config, validate
from drmm.data import Dataset, Images, check_dataset, choose_labeled, load_dataset, read_indices
from drmm.errors import DRMMError, require_device, warn_slow_precision
from drmm.evaluate import save_reconstructions
from drmm.files import check_out_dir
from drmm.graph_prior import graph_pseudo_labels
from drmm.model import DRMM, feature_sizes
from drmm.progress import bar_shown
from drmm.records import (
    after_nonfinite,
    epoch_line,
    epoch_record,
    final_metrics,
    fmt,
    log_epoch,
    start_run_files,
    write_metrics,
)
from drmm.report import RunData, write_report
from drmm.scores import novelty_calibration
from drmm.step import (
    Batch,
    NonFiniteStep,
    Objective,
    epoch_order,
    make_batch,
    make_optimizer,
    step_weights,
    train_step,
)

# ----------------------------------------------------------------------------------------------
# The training run


def train(cfg: Config, out_dir: str | Path, resume: bool = False, data: Dataset | None = None,
          progress: bool = True, force_resume: bool = False) -> dict:
    """Train, evaluating after each epoch; writes RUN_DIR/{checkpoint.pt, metrics.json, ...}.

    resume: continue the run in out_dir from its checkpoint (refused if the config changed,
    unless force_resume, which continues anyway after listing the changes).
    """
    opened = open_run(cfg, out_dir, resume, data, force_resume)
    t = opened.cfg.train
    dist = distributed.setup(t.device, t.batch_split())  # one process unless under torchrun
    tr = None
    try:  # from here on, any exit leaves the process group and the writer closed
        tr = build_trainer(opened, dist, progress)
        for epoch in range(tr.run.epoch, t.epochs):
            started = train_epoch(tr, epoch)
            end_epoch(tr, epoch, started)
    finally:
        if tr is not None:
            tr.close()
        distributed.cleanup(dist)
    return finish(tr)


@dataclass
class OpenedRun:
    """A run checked and ready to build: nothing is written yet."""

    out: Path  # the run folder
    cfg: Config  # the run's config, with the model's input size read off the data
    data: Dataset
    labeled: np.ndarray  # (N_L,) the labeled training images' indices
    saved: dict | None  # the checkpoint a resumed run continues


def open_run(cfg: Config, out_dir, resume: bool, data: Dataset | None,
             force_resume: bool) -> OpenedRun:
    """Every check that can fail before any output is written or any training starts."""
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
    return OpenedRun(out, cfg, data, labeled, saved)


@dataclass
class Trainer:
    """What the epoch loop reads and moves."""

    cfg: Config
    out: Path  # the run folder (rank 0 writes it)
    dist: distributed.Dist  # this process's rank and device
    model: DRMM  # the network SGD moves, evaluated and saved
    stepper: nn.Module  # the E-step and objective: an Objective, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # the data order's generator
    run: RunState  # where the run stands; what the checkpoint continues from
    ckpt: Checkpointer
    x_train: Images | torch.Tensor  # (N, C, H, W) on the device
    y_train: torch.Tensor  # (N,)
    x_test: Images | torch.Tensor | None  # (M, C, H, W), or None: no test set
    y_test: torch.Tensor | None  # (M,)
    labeled: torch.Tensor  # (N_L,) the labeled images' indices, on the CPU
    class_names: list[str]
    graph: tuple[torch.Tensor, torch.Tensor] | None  # (N,) x2 the graph prior's targets
    steps_per_epoch: int
    autocast: torch.autocast  # bf16 autocast, or a disabled one
    wall0: float  # perf_counter at the run's start, the time before a resume included
    bar: tqdm
    writer: Board | None  # rank 0, if asked

    def close(self) -> None:
        self.bar.close()  # so that an error message stays one line
        if self.writer is not None:
            self.writer.close()


def build_trainer(opened: OpenedRun, dist: distributed.Dist, progress: bool) -> Trainer:
    """The model, optimiser and schedule (restored from the checkpoint if resuming), the data
    on the device, the run folder's files, and the graph prior's targets."""
    cfg, out, t = opened.cfg, opened.out, opened.cfg.train
    device, is_main = dist.device, dist.is_main  # only rank 0 writes files
    if is_main:
        warn_slow_precision(t.precision, device)
    model, stepper = build_model(cfg, dist)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    x_train, y_train, x_test, y_test = on_device(opened.data, device, t.channels_last)
    labeled = torch.from_numpy(opened.labeled)  # (N_L,)
    steps_per_epoch = len(x_train) // t.batch_split()[1]  # one pass over the unlabeled set
    if steps_per_epoch < 1:
        raise DRMMError(f"{t.batch_split()[1]} unlabeled images per step is more than the"
                        f" training set ({len(x_train)} images); use a smaller --batch-size")
    opt, sched = make_optimizer(model, cfg, steps_per_epoch * t.epochs)
    gen = torch.Generator().manual_seed(t.seed)  # the data order
    run = RunState(data_rng=gen.get_state())
    if opened.saved is not None:
        run, sched = restore_run(opened.saved, model, opt, sched, gen, cfg, steps_per_epoch,
                                 device)
        print(f"drmm: resuming {out} from its checkpoint at the"
              f" {position(run.epoch, run.step, steps_per_epoch)}", file=sys.stderr)
    ckpt = Checkpointer(out / CHECKPOINT, model, opt, sched, device, is_main, steps_per_epoch,
                        fixed={"n_train": len(x_train), "config": cfg.to_dict(),
                               "labeled_indices": labeled, "class_names": opened.data.class_names,
                               "preprocess": opened.data.preprocessor.state_dict()},
                        last_saved=opened.saved and position(run.epoch, run.step,
                                                             steps_per_epoch))
    if is_main:
        start_run_files(out, cfg, opened.labeled, run.history)
    wall0 = time.perf_counter() - run.wall_seconds  # the graph's time counts too
    graph = graph_targets(cfg, dist, x_train, y_train, labeled, run.epoch)
    writer = (Board(str(out / "tb"), purge_step=len(run.history) + 1)
              if is_main and t.tensorboard else None)  # purge: events past the checkpoint
    bar = tqdm(total=steps_per_epoch, disable=not bar_shown(progress and is_main),
               dynamic_ncols=True, leave=False)  # a log gets the epoch lines alone
    return Trainer(cfg, out, dist, model, stepper, opt, sched, gen, run, ckpt, x_train, y_train,
                   x_test, y_test, labeled, opened.data.class_names, graph, steps_per_epoch,
                   autocast, wall0, bar, writer)


def train_epoch(tr: Trainer, epoch: int) -> float:
    """The epoch's steps from where the run stands; returns the epoch's start (perf_counter,
    the time before a resume included)."""
    t, spe, run = tr.cfg.train, tr.steps_per_epoch, tr.run
    tr.model.train()
    order = epoch_order(tr.labeled, len(tr.x_train), tr.gen, spe * t.batch_split()[0])
    started = time.perf_counter() - run.epoch_seconds
    tr.bar.reset()
    tr.bar.update(run.step)
    tr.bar.set_description(f"epoch {epoch + 1}/{t.epochs}")
    for step in range(run.step, spe):
        weights = step_weights(tr.cfg, epoch * spe + step, spe)  # each term's, at this step
        batch = make_batch(tr.cfg, tr.x_train, tr.y_train, order, step, weights, tr.graph,
                           tr.dist)
        guarded_step(tr, batch, weights, epoch, step)
        run.step = step + 1
        if run.step % t.log_every == 0 or run.step == spe:
            tr.bar.set_postfix_str(fmt(run.means()), refresh=False)  # one host sync
        tr.bar.update(1)
        if t.checkpoint_every and run.step % t.checkpoint_every == 0 and run.step < spe:
            run.epoch_seconds = time.perf_counter() - started
            run.wall_seconds = time.perf_counter() - tr.wall0
            tr.ckpt.save(run)
    return started


def guarded_step(tr: Trainer, batch: Batch, weights: dict[str, float], epoch: int,
                 step: int) -> None:
    """One round of hard EM, counted in the run; a NaN / inf loss or gradient stops the run
    (the last checkpoint stays) or, with skip_nonfinite, skips the batch."""
    t, spe = tr.cfg.train, tr.steps_per_epoch
    # On CUDA the NaN check is a host sync: every log_every steps unless bad batches must be
    # skipped (a NaN then stops the run at the next check; the last checkpoint is still good).
    check = (tr.dist.device.type != "cuda" or t.skip_nonfinite
             or (step + 1) % t.log_every == 0 or step + 1 == spe)
    try:
        tr.run.add(train_step(tr.stepper, tr.model, tr.opt, tr.sched, batch, weights,
                              tr.autocast, check, keep_bn_on_skip=t.skip_nonfinite))
    except NonFiniteStep as e:
        where = f"step {epoch * spe + step + 1} (epoch {epoch + 1}, step {step + 1} of {spe})"
        if not t.skip_nonfinite:
            raise DRMMError(f"non-finite {e.what} at {where}: {fmt(e.terms)};"
                            f" {after_nonfinite(tr.ckpt.last_saved, tr.out)}") from None
        tr.run.epoch_skipped, tr.run.skipped = tr.run.epoch_skipped + 1, tr.run.skipped + 1
        tr.bar.write(f"skipped batch at {where}: non-finite {e.what} ({fmt(e.terms)})")


def end_epoch(tr: Trainer, epoch: int, started: float) -> None:
    """Evaluate, record, checkpoint and log the epoch. The last epoch's checkpoint also holds
    the novelty scale of `drmm predict` (the training images' 99th percentile of the novelty
    score, in eval mode: drmm/scores.py)."""
    run, t = tr.run, tr.cfg.train
    record = epoch_record(epoch, run.means(), run.epoch_skipped, tr.model, tr.x_test,
                          tr.y_test, tr.cfg, tr.opt.param_groups[0]["lr"],
                          time.perf_counter() - started, tr.wall0, tr.steps_per_epoch)
    tr.bar.write(epoch_line(record, run.means(), tr.class_names))
    run.finish_epoch(record, tr.gen.get_state())
    last = run.epoch == t.epochs and tr.dist.is_main  # rank 0 alone writes the checkpoint
    tr.ckpt.save(run, novelty_calibration(tr.model, tr.cfg, tr.x_train, t.eval_batch_size)
                 if last else None)
    if tr.dist.is_main:
        log_epoch(tr.out, record, tr.writer)
    if tr.writer is not None:  # the confusion matrix and renderings, within their time share
        tr.writer.epoch_figures(record, tr.model, tr.x_test, tr.y_test, tr.x_train,
                                tr.class_names, t.eval_batch_size, run.epoch == t.epochs)


def finish(tr: Trainer) -> dict:
    """The run's final metrics (metrics.json), a picture of test images rendered back, and the
    run's report (report.html)."""
    metrics = final_metrics(tr.run.history, tr.run.skipped, tr.cfg, len(tr.labeled),
                            len(tr.x_train), tr.class_names)
    if tr.dist.is_main:
        write_metrics(tr.out, metrics)
        save_reconstructions(tr.model, tr.x_test if tr.x_test is not None else tr.x_train,
                             tr.out / "reconstructions.png")
        if tr.cfg.train.report:
            write_report(tr.out, tr.model, tr.cfg, RunData(tr.x_train, tr.y_train, tr.x_test,
                         tr.y_test, tr.class_names, tr.labeled.numpy()), tr.run.history, metrics)
    return metrics


# ----------------------------------------------------------------------------------------------
# Setup: data, labeled split, model


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
                            channels=t.channels, image_size=t.image_size, resize=t.resize,
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


def on_device(data: Dataset, device, channels_last: bool):
    """The whole data set on the training device, batched by index from there (airbench).
    Loaded images stay uint8 there, each batch made float32 on the device as it is indexed."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(data.x_train, Images):
        x_train = data.x_train.to(device, memory_format=layout)  # (N, C, H, W) uint8
    else:
        x_train = data.x_train.to(device).contiguous(memory_format=layout)  # (N, C, H, W)
    y_train = data.y_train.to(device)  # (N,)
    x_test = data.x_test.to(device) if data.has_test else None  # (M, C, H, W) or none
    y_test = data.y_test.to(device) if data.has_test else None  # (M,)
    return x_train, y_train, x_test, y_test


def build_model(cfg: Config, dist: distributed.Dist) -> tuple[DRMM, nn.Module]:
    """The model on this rank's device, and the module a training step calls: its Objective,
    wrapped in DistributedDataParallel under torchrun (with SyncBatchNorm if asked)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    model = DRMM(cfg.model).to(dist.device, memory_format=layout)
    stepper = Objective(model, cfg)  # the step's forward: E-step and objective
    if dist.enabled:
        if t.sync_bn:
            stepper = nn.SyncBatchNorm.convert_sync_batchnorm(stepper)
            model = stepper.model
        stepper = DistributedDataParallel(
            stepper, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return model, stepper


def graph_targets(cfg: Config, dist: distributed.Dist, x_train: Images | torch.Tensor,
                  y_train: torch.Tensor, labeled: torch.Tensor, epoch: int):
    """The graph prior's (pseudo-labels (N,), certainties (N,)) of every training image, if
    its weight is not yet 0 at `epoch`; else None. Minutes of CPU work: rank 0 alone spreads
    the labels, the others wait for its broadcast."""
    t = cfg.train
    if not t.graph_prior or t.supervised_only or epoch >= t.graph_prior:
        return None
    if dist.is_main:
        graph = graph_pseudo_labels(x_train, labeled, y_train[labeled].cpu().numpy(),
                                    cfg.model.num_classes,
                                    log=lambda m: print(f"drmm: {m}", file=sys.stderr))
    else:
        graph = (torch.empty(len(x_train), dtype=torch.long, device=dist.device),  # (N,)
                 torch.empty(len(x_train), device=dist.device))  # (N,)
    distributed.broadcast_from_main(dist, graph)
    return graph
