"""Semi-supervised training of the DRMM by hard EM (section 4.1, Appendix A), crash-safe.

`train` reads as a table of contents: open the run (config, data, labeled split, a checkpoint to
continue), build the trainer (model, optimiser, data on the device, the graph prior's targets),
then the epoch loop, each epoch's end an evaluation, a record and a checkpoint; then the final
metrics. `train_epoch` is the training loop on one screen, as nanoGPT's: each step the terms'
weights and the batch, the forward pass (E-step and objective, drmm/step.py), zero_grad,
backward, the finite check, the optimiser's and the schedule's step.

Reliability (docs/reliability.md): the checkpoint (drmm.checkpoint) is written atomically at
every epoch end and, with checkpoint_every = K, every K steps; a resumed run equals an
uninterrupted one exactly on CPU. The loss and the gradients are checked for NaN / inf before
opt.step(): a bad batch stops the run (naming the step and the loss terms; the last checkpoint
stays as it was) or, with skip_nonfinite, is skipped (no parameter or BatchNorm update) and
counted.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
import warnings
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
    ID_KEY,
    Checkpointer,
    RunState,
    check_resume,
    load_run_state,
    position,
    restore_run,
)
from drmm.config import Config, TrainConfig, validate
from drmm.data import Dataset, Images, check_dataset, choose_labeled, load_dataset, read_indices
from drmm.data.split import warn_unlabeled_classes
from drmm.errors import DRMMError, require_device
from drmm.evaluate import confusion, save_reconstructions
from drmm.files import check_out_dir
from drmm.graph_prior import graph_pseudo_labels
from drmm.losses import GRAPH, needed
from drmm.model import DRMM, feature_sizes
from drmm.optim import make_optimizer
from drmm.precision import announce_precision, resolve_precision, step_autocast
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
from drmm.run_folder import check_new_run_folder, one_run_per_folder
from drmm.run_folder import run_id as folder_run_id
from drmm.scores import novelty_calibration
from drmm.step import (
    Objective,
    epoch_images,
    epoch_order,
    make_batch,
    step_weights,
    unlabeled_per_step,
)

# ----------------------------------------------------------------------------------------------
# The training run


@one_run_per_folder  # out_dir's lock, held by this process from its first check to its last write
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
        # Under torchrun, no rank leaves the process group while another still works: a gloo
        # peer that closes its connections under a rank still running can abort that rank.
        distributed.barrier(dist)
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
    run_id: str  # the run's id, in config.json and in every checkpoint (drmm/run_folder.py)


def open_run(cfg: Config, out_dir, resume: bool, data: Dataset | None,
             force_resume: bool) -> OpenedRun:
    """Every check that can fail before any output is written or any training starts."""
    out = check_out_dir(out_dir)  # a bad --out fails now, not after loading the data
    saved = load_run_state(out / CHECKPOINT) if resume else None
    if saved is None and (out / CHECKPOINT).exists():
        raise DRMMError(f"{out} already holds a run ({CHECKPOINT}); continue it with --resume"
                        f" {out}, or pass another --out")
    if saved is None:
        check_new_run_folder(out)  # never a fresh run over a folder of the user's files
    run_id = folder_run_id(out, saved)  # a checkpoint of another run's folder is refused
    cfg = copy.deepcopy(cfg)  # prepare() fills in the model's input size; the caller's stays
    data, labeled = prepare(cfg, data)
    t = cfg.train
    if saved is not None:
        check_resume(out, saved, cfg, labeled, len(data.x_train), force_resume)
    require_device(t.device)
    if t.sync_bn and torch.device(t.device).type != "cuda":
        raise DRMMError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); drop it")
    return OpenedRun(out, cfg, data, labeled, saved, run_id)


@dataclass(kw_only=True)
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
    data: Dataset  # the data set, its images and labels on the device
    labeled: torch.Tensor  # (N_L,) the labeled images' indices, on the CPU
    graph: tuple[torch.Tensor, torch.Tensor] | None  # (N,) x2 the graph prior's targets
    steps_per_epoch: int
    wall0: float  # perf_counter at the run's start, the time before a resume included
    bar: tqdm
    writer: Board | None  # rank 0, if asked
    precision: tuple[str, str]  # the step's precision, fp32 or bf16, and why (precision.py)

    def close(self) -> None:
        self.bar.close()  # so that an error message stays one line
        if self.writer is not None:
            self.writer.close()


def build_trainer(opened: OpenedRun, dist: distributed.Dist, progress: bool) -> Trainer:
    """The model, optimiser and schedule (restored from the checkpoint if resuming), the data
    on the device, the run folder's files, and the graph prior's targets."""
    cfg, out, t = opened.cfg, opened.out, opened.cfg.train
    precision = resolve_precision(t.precision, dist.device)  # ("bf16", why) or ("fp32", why)
    if dist.is_main:  # only rank 0 writes files and warns
        announce_precision(*precision, dist.device)
    model, stepper = build_model(cfg, dist)
    data = on_device(opened.data, dist.device, t.channels_last)
    labeled = torch.from_numpy(opened.labeled)  # (N_L,)
    spe = len(data.x_train) // t.batch_split()[1]  # steps per epoch: one pass over N_U
    if spe < 1:
        raise DRMMError(f"{t.batch_split()[1]} unlabeled images per step is more than the"
                        f" training set ({len(data.x_train)} images); use a smaller --batch-size")
    opt, sched = make_optimizer(model, cfg, spe * t.epochs)
    gen = torch.Generator().manual_seed(t.seed)  # the data order
    run = RunState(data_rng=gen.get_state())
    if opened.saved is not None:
        run, sched = restore_run(opened.saved, model, opt, sched, gen, cfg, spe, dist.device)
        print(f"drmm: resuming {out} from its checkpoint at the"
              f" {position(run.epoch, run.step, spe)}", file=sys.stderr)
    ckpt = Checkpointer(out / CHECKPOINT, model, opt, sched, dist.device, dist.is_main, spe,
                        fixed={"n_train": len(data.x_train), "config": cfg.to_dict(),
                               "labeled_indices": labeled, "class_names": data.class_names,
                               "preprocess": data.preprocessor.state_dict(),
                               ID_KEY: opened.run_id},
                        last_saved=opened.saved and position(run.epoch, run.step, spe))
    wall0 = time.perf_counter() - run.wall_seconds  # the graph's time counts too
    graph = graph_targets(cfg, dist, data, labeled, run.epoch, spe)
    if dist.is_main:  # the first files: every check that can refuse the run is behind us
        start_run_files(out, cfg, opened.labeled, run.history, opened.run_id)
    writer = (Board(str(out / "tb"), purge_step=len(run.history) + 1)
              if dist.is_main and t.tensorboard else None)  # purge: events past the checkpoint
    bar = tqdm(total=spe, disable=not bar_shown(progress and dist.is_main), dynamic_ncols=True,
               leave=False)  # a log gets the epoch lines alone
    return Trainer(cfg=cfg, out=out, dist=dist, model=model, stepper=stepper, opt=opt,
                   sched=sched, gen=gen, run=run, ckpt=ckpt, data=data, labeled=labeled,
                   graph=graph, steps_per_epoch=spe, wall0=wall0, bar=bar, writer=writer,
                   precision=precision)


def train_epoch(tr: Trainer, epoch: int) -> float:
    """The epoch's steps from where the run stands, each a round of hard EM: the E-step and the
    objective (tr.stepper), then the M-step, one optimiser update and one LR-schedule step.
    A NaN or inf in the loss or in any gradient is caught before opt.step(), so a bad batch
    never reaches the weights (skip_batch). Returns the epoch's start (perf_counter, the time
    before a resume included)."""
    cfg, t, run, model, spe = tr.cfg, tr.cfg.train, tr.run, tr.model, tr.steps_per_epoch
    autocast = step_autocast(tr.precision[0], tr.dist.device)
    model.train()
    order = epoch_order(tr.labeled, len(tr.data.x_train), tr.gen, spe * t.batch_split()[0])
    started = time.perf_counter() - run.epoch_seconds
    tr.bar.reset()
    tr.bar.update(run.step)
    tr.bar.set_description(f"epoch {epoch + 1}/{t.epochs}")
    for step in range(run.step, spe):
        weights = step_weights(cfg, epoch * spe + step, spe)  # each term's, at this step
        n_unl = unlabeled_per_step(cfg, epoch * spe + step, spe, tr.dist.world)  # the ramp's
        batch = make_batch(cfg, tr.data.x_train, tr.data.y_train, order, step, weights,
                           tr.graph, tr.dist, n_unl)
        # the forward pass moves the BatchNorm statistics: a batch to be skipped puts them back
        buffers = [b.clone() for b in model.buffers()] if t.skip_nonfinite else None
        with autocast:
            terms = tr.stepper(batch, weights)  # E-step and objective: {"loss", "ce", ...}
        tr.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        # The finite check is one host sync: free on CPU, a stall on CUDA, where it runs every
        # log_every steps unless bad batches must be skipped (a NaN then stops the run at the
        # next check; the last checkpoint is still good).
        check = (tr.dist.device.type != "cuda" or t.skip_nonfinite
                 or (step + 1) % t.log_every == 0 or step + 1 == spe)
        if check and not all_finite(terms["loss"], model):
            skip_batch(tr, terms, buffers, epoch, step)  # or stop the run, if not skip_nonfinite
        else:
            tr.opt.step()
            tr.sched.step()
            run.add({k: v.detach() for k, v in terms.items()})
        run.step = step + 1
        if run.step % t.log_every == 0 or run.step == spe:
            tr.bar.set_postfix_str(fmt(run.means()), refresh=False)  # one host sync
        tr.bar.update(1)
        if t.checkpoint_every and run.step % t.checkpoint_every == 0 and run.step < spe:
            run.epoch_seconds = time.perf_counter() - started
            run.wall_seconds = time.perf_counter() - tr.wall0
            tr.ckpt.save(run)
    return started


def all_finite(loss: torch.Tensor, model: DRMM) -> bool:
    """Whether the loss and every gradient are finite (one host sync)."""
    grads = sum(p.grad.sum() for p in model.parameters() if p.grad is not None)  # ()
    return bool(torch.isfinite(loss.detach() + grads).item())


def skip_batch(tr: Trainer, terms: dict[str, torch.Tensor], buffers: list | None, epoch: int,
               step: int) -> None:
    """A batch whose loss or gradient is NaN / inf, before any update: stop the run (the last
    checkpoint stays) or, with skip_nonfinite, put back the BatchNorm statistics its forward
    pass moved, step the schedule (it follows the step count) and count the batch."""
    values = {k: v.item() for k, v in terms.items()}
    what = "loss" if not math.isfinite(values["loss"]) else "gradient"
    spe = tr.steps_per_epoch
    where = f"step {epoch * spe + step + 1} (epoch {epoch + 1}, step {step + 1} of {spe})"
    if not tr.cfg.train.skip_nonfinite:
        raise DRMMError(f"non-finite {what} at {where}: {fmt(values)};"
                        f" {after_nonfinite(tr.ckpt.last_saved, tr.out)}")
    with torch.no_grad():
        for b, saved in zip(tr.model.buffers(), buffers, strict=True):
            b.copy_(saved)
    with warnings.catch_warnings():  # "scheduler stepped before optimizer"
        warnings.simplefilter("ignore", UserWarning)
        tr.sched.step()
    tr.run.epoch_skipped, tr.run.skipped = tr.run.epoch_skipped + 1, tr.run.skipped + 1
    tr.bar.write(f"skipped batch at {where}: non-finite {what} ({fmt(values)})")


def end_epoch(tr: Trainer, epoch: int, started: float) -> None:
    """Evaluate, record, checkpoint and log the epoch. The last epoch's checkpoint also holds
    the novelty scale of `drmm predict` (the training images' 99th percentile of the novelty
    score, in eval mode: drmm/scores.py)."""
    run, t, d = tr.run, tr.cfg.train, tr.data
    seconds = time.perf_counter() - started  # the epoch's training, its evaluation aside
    last = epoch + 1 == t.epochs
    # Every eval_every-th epoch and the last are evaluated (on a large test set the evaluation
    # is a few % of the run; it changes no training number). The epochs before the last are
    # evaluated in the step's precision (bf16: 2.8x faster on an AMX CPU,
    # results/precision.md); the last, the run's result, in float32, as `drmm eval` and
    # `drmm predict` evaluate the checkpoint.
    evaluated = d.has_test and evaluates(epoch, t)
    with step_autocast("fp32" if last else tr.precision[0], tr.dist.device):
        counts = (confusion(tr.model, d.x_test, d.y_test, t.eval_batch_size)  # (K, K)
                  if evaluated else None)
    record = epoch_record(epoch, run.means(), run.epoch_skipped, counts,
                          tr.opt.param_groups[0]["lr"], seconds, tr.wall0,
                          epoch_images(tr.cfg, epoch, tr.steps_per_epoch, tr.dist.world))
    record["precision"] = tr.precision[0]  # a resumed run may change it
    unevaluated = (f"next evaluation at epoch {next_evaluation(epoch, t)}"
                   if d.has_test and not evaluated else None)
    tr.bar.write(epoch_line(record, run.means(), d.class_names, unevaluated))
    run.finish_epoch(record, tr.gen.get_state())
    calibrate = last and tr.dist.is_main  # rank 0 alone writes the checkpoint
    tr.ckpt.save(run, novelty_calibration(tr.model, tr.cfg, d.x_train, t.eval_batch_size)
                 if calibrate else None)
    if tr.dist.is_main:
        log_epoch(tr.out, record, tr.writer)
    if tr.writer is not None:  # the confusion matrix and renderings, within their time share
        tr.writer.epoch_figures(record, counts, tr.model, d.x_test if d.has_test else d.x_train,
                                d.class_names, last)


def evaluates(epoch: int, t: TrainConfig) -> bool:
    """Whether epoch `epoch` (0-based) ends with an evaluation on the test set: every
    eval_every-th epoch and the last."""
    return epoch + 1 == t.epochs or (epoch + 1) % t.eval_every == 0


def next_evaluation(epoch: int, t: TrainConfig) -> int:
    """The first epoch (1-based) after `epoch` (0-based, not the last) that `evaluates`."""
    return next(e + 1 for e in range(epoch + 1, t.epochs) if evaluates(e, t))


def finish(tr: Trainer) -> dict:
    """The run's final metrics (metrics.json), a picture of test images rendered back, and the
    run's report (report.html)."""
    d = tr.data
    metrics = final_metrics(tr.run.history, tr.run.skipped, tr.cfg, len(tr.labeled),
                            len(d.x_train), d.class_names)
    metrics["precision"], metrics["precision_reason"] = tr.precision
    if tr.dist.is_main:
        write_metrics(tr.out, metrics)
        save_reconstructions(tr.model, d.x_test if d.has_test else d.x_train,
                             tr.out / "reconstructions.png")
        if tr.cfg.train.report:
            x_test, y_test = (d.x_test, d.y_test) if d.has_test else (None, None)
            write_report(tr.out, tr.model, tr.cfg, RunData(d.x_train, d.y_train, x_test, y_test,
                         d.class_names, tr.labeled.numpy()), tr.run.history, metrics)
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
        raise DRMMError(f"dataset {data.name}: images are {w}x{h} (width x height); only square"
                        " images are supported: pass --image-size S to fit them to S x S")
    try:
        feature_sizes(cfg.model.specs(), h)
    except ValueError as e:
        raise DRMMError(f"dataset {data.name}: --arch {cfg.model.arch} cannot take {h}x{w} images"
                        f" ({e}); choose another --arch or resize the images") from e
    cfg.model.in_channels, cfg.model.image_size = c, h
    cfg.model.num_classes = data.num_classes
    labeled = choose_labeled(data.y_train.numpy(), data.num_classes, t.labels, t.seed, given)
    if given is not None:
        warn_unlabeled_classes(data.y_train.numpy()[labeled], data.class_names)
    return data, labeled


def on_device(data: Dataset, device, channels_last: bool) -> Dataset:
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
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_test=x_test,
                               y_test=y_test)


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


def graph_targets(cfg: Config, dist: distributed.Dist, data: Dataset, labeled: torch.Tensor,
                  epoch: int, steps_per_epoch: int):
    """The graph prior's (pseudo-labels (N,), certainties (N,)) of every training image, if a
    term with a weight other than 0 at the start of `epoch` needs them; else None. Minutes of
    CPU work: rank 0 alone spreads the labels, the others wait for its broadcast."""
    if GRAPH not in needed(step_weights(cfg, epoch * steps_per_epoch, steps_per_epoch)):
        return None
    x_train, y_train = data.x_train, data.y_train
    if dist.is_main:
        graph = graph_pseudo_labels(x_train, labeled, y_train[labeled].cpu().numpy(),
                                    cfg.model.num_classes,
                                    log=lambda m: print(f"drmm: {m}", file=sys.stderr))
    else:
        graph = (torch.empty(len(x_train), dtype=torch.long, device=dist.device),  # (N,)
                 torch.empty(len(x_train), device=dist.device))  # (N,)
    distributed.broadcast_from_main(dist, graph)
    return graph
