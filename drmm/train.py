"""Semi-supervised training of the DRMM by hard EM (section 4.1, Appendix A), crash-safe.

Each step is one round of hard EM: the E-step (bottom-up inference of c-hat and the switches,
then the top-down reconstruction) inside `step_terms`, and the M-step as one SGD update of the
objective in `drmm.losses`. `train` reads straight through: setup, then the epoch loop with
zero_grad / backward / step in plain sight, evaluation, logging and checkpoints.

Reliability (docs/reliability.md):
- The checkpoint (RUN_DIR/checkpoint.pt, written atomically by `drmm.checkpoint`) holds all a
  run needs to continue bit for bit: model (with the BatchNorm running statistics), optimiser,
  LR schedule, every RNG state, the data-order generator's state at the start of the epoch in
  progress and the step reached in it, the epoch's partial loss sums, the labeled indices, the
  config and the history. It is written at every epoch end and, with checkpoint_every = K,
  every K steps inside an epoch; a resumed run equals an uninterrupted one exactly on CPU.
- A resume with a changed config is refused, listing what changed, unless forced.
- The loss and the gradients are checked for NaN / inf at every step, before opt.step(): a bad
  batch stops the run (naming the step and the loss terms; the last checkpoint stays as it was)
  or, with skip_nonfinite, is skipped (no parameter or BatchNorm update) and counted.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from drmm import distributed
from drmm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, state_dict_problem
from drmm.config import Config, validate
from drmm.data import Dataset, check_dataset, choose_labeled, load_dataset, read_indices
from drmm.errors import DRMMError, require_device, warn_slow_precision
from drmm.evaluate import save_reconstructions, test_error
from drmm.files import atomic_write, check_out_dir, remove_stale_temporaries
from drmm.losses import drmm_objective
from drmm.model import DRMM, BottomUp, Switches, feature_sizes

# 1: epoch ends only (model, optimizer, scheduler, epoch, rng{torch, data}, history, ...);
# 2: adds the position inside an epoch, the partial sums and every RNG state.
CHECKPOINT_FORMAT = 2
RUN_FILES = (CHECKPOINT, "metrics.json", "metrics.jsonl", "config.json", "labeled_indices.npy")
# Settings a resumed run may change: they move or extend the run, not what it computes.
FREE_ON_RESUME = {"train.epochs", "train.data_dir", "train.device", "train.tensorboard",
                  "train.log_every", "train.eval_batch_size", "train.checkpoint_every",
                  "train.skip_nonfinite", "train.verify", "train.precision",
                  "train.channels_last"}


def step_terms(model: DRMM, cfg: Config, x_lab, y_lab, x_unl) -> dict[str, torch.Tensor]:
    """E-step and objective for one batch; returns the named loss terms (graph attached).

    x_lab: (B/2, C, H, W) labeled images, y_lab: (B/2,), x_unl: (B/2, C, H, W) unlabeled.
    """
    t, lc = cfg.train, cfg.loss
    if t.supervised_only:  # the DCN baseline: bottom-up on the labeled half, cross-entropy only
        return drmm_objective(lc, model(x_lab), y_lab)
    if t.bn_mode == "separate":  # each half normalised with its own batch statistics
        bu_lab, bu_unl = model.bottom_up(x_lab), model.bottom_up(x_unl)
    else:
        bu = model.bottom_up(torch.cat([x_lab, x_unl]))
        bu_lab, bu_unl = split_bottom_up(bu, len(x_lab))
    td_unl = model.top_down(bu_unl)  # rendered from the predicted class c-hat
    if lc.unsup_on == "unlabeled":
        return drmm_objective(lc, bu_lab.logits, y_lab, bu_unl.logits, x_unl, td_unl.image,
                              td_unl.templates)
    td_lab = model.top_down(bu_lab)
    return drmm_objective(
        lc, bu_lab.logits, y_lab,
        torch.cat([bu_lab.logits, bu_unl.logits]),  # (B, K)
        torch.cat([x_lab, x_unl]),  # (B, C, H, W)
        torch.cat([td_lab.image, td_unl.image]),  # (B, C, H, W)
        [torch.cat(pair) for pair in zip(td_lab.templates, td_unl.templates, strict=True)],
    )


class Objective(nn.Module):
    """The model and the objective as one module: DistributedDataParallel synchronises the
    gradients of whatever its forward computes, so the whole E-step must run inside it."""

    def __init__(self, model: DRMM, cfg: Config):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, x_lab, y_lab, x_unl) -> dict[str, torch.Tensor]:
        return step_terms(self.model, self.cfg, x_lab, y_lab, x_unl)


def split_bottom_up(bu, n: int):
    """Split a joint bottom-up result into its first n images and the rest."""

    def part(sl):
        return BottomUp(
            logits=bu.logits[sl],
            switches=[Switches(s.a[sl], None if s.t is None else s.t[sl]) for s in bu.switches],
            top_size=bu.top_size,
        )

    return part(slice(0, n)), part(slice(n, None))


def epoch_order(labeled: torch.Tensor, n_unl: int, gen: torch.Generator):
    """Index streams for one epoch: a shuffle of the unlabeled set, and the labeled set
    replicated (each copy shuffled) to the unlabeled set's size (Appendix A)."""
    reps = math.ceil(n_unl / len(labeled))
    lab = torch.cat([labeled[torch.randperm(len(labeled), generator=gen)] for _ in range(reps)])
    return lab[:n_unl], torch.randperm(n_unl, generator=gen)  # (n_unl,), (n_unl,)


def make_optimizer(model: DRMM, cfg: Config, total_steps: int):
    t = cfg.train
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                              weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.schedule == "cosine":  # lr -> lr_final along a half cosine
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total_steps - 1, 1),
                                                               eta_min=t.lr_final)
    gamma = (t.lr_final / t.lr) ** (1.0 / max(total_steps - 1, 1))  # lr -> lr_final per step
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


def prepare(cfg: Config, data: Dataset | None = None):
    """Check the config, load the data and check it against the model, choose the labeled split.

    Every bad input (config value, data file, data set, label count, image size) stops here with
    a one-line DRMMError, before any output is written or any training starts.
    """
    validate(cfg)
    t = cfg.train
    given = read_indices(t.labeled_indices) if t.labeled_indices else None  # before the data
    if data is None:
        data = load_dataset(t.dataset, t.data_dir, verify=t.verify, preprocess=t.preprocess,
                            channels=t.channels, image_size=t.image_size)
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


def train(cfg: Config, out_dir: str | Path, resume: bool = False, data: Dataset | None = None,
          progress: bool = True, force_resume: bool = False) -> dict:
    """Train, evaluating after each epoch; writes RUN_DIR/{checkpoint.pt, metrics.json, ...}.

    resume: continue the run in out_dir from its checkpoint (refused if the config changed,
    unless force_resume, which continues anyway after listing the changes).
    """
    out = check_out_dir(out_dir)  # a bad --out fails now, not after loading the data
    t = cfg.train
    if resume:
        state = load_run_state(out / CHECKPOINT)
    elif (out / CHECKPOINT).exists():
        raise DRMMError(f"{out} already holds a run ({CHECKPOINT}); continue it with --resume {out}"
                        ", or pass another --out")
    else:
        state = None
    data, labeled = prepare(cfg, data)
    if state is not None:
        check_resume(out, state, cfg, labeled, len(data.x_train), force_resume)
    require_device(t.device)
    if t.sync_bn and torch.device(t.device).type != "cuda":
        raise DRMMError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); drop it")
    dist = distributed.setup(t.device, t.batch_size // 2)  # one process unless under torchrun
    device, is_main = dist.device, dist.is_main  # only rank 0 writes files
    if is_main:
        warn_slow_precision(t.precision, device)
    torch.manual_seed(t.seed)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    model = DRMM(cfg.model).to(device, memory_format=layout)
    stepper = Objective(model, cfg)  # the training step's forward: E-step and objective
    if dist.enabled:
        if t.sync_bn:
            stepper = nn.SyncBatchNorm.convert_sync_batchnorm(stepper)
            model = stepper.model
        stepper = DistributedDataParallel(
            stepper, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    x_train = data.x_train.to(device).contiguous(memory_format=layout)  # whole set on device
    y_train = data.y_train.to(device)
    x_test = data.x_test.to(device) if data.has_test else None  # (M, C, H, W) or no test set
    y_test = data.y_test.to(device) if data.has_test else None  # (M,)
    labeled_t = torch.from_numpy(labeled)
    half = t.batch_size // 2
    n_unl = len(x_train)
    steps_per_epoch = n_unl // half
    if steps_per_epoch < 1:
        raise DRMMError(f"batch_size {t.batch_size} is larger than twice the training set"
                        f" ({n_unl} images); use a smaller --batch-size")
    opt, sched = make_optimizer(model, cfg, steps_per_epoch * t.epochs)
    gen = torch.Generator().manual_seed(t.seed)  # the data order
    history: list[dict] = []
    epoch0, step0 = 0, 0  # where this process starts: epoch index, step inside that epoch
    sums: dict[str, torch.Tensor] = {}  # loss-term sums over the epoch's finite steps so far
    good, epoch_skipped, skipped = 0, 0, 0  # finite steps / skipped batches: epoch, whole run
    wall_before, epoch_before = 0.0, 0.0  # seconds spent before this process: run, epoch
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise DRMMError(f"{out / CHECKPOINT} does not fit this config"
                            f" ({state_dict_problem(e)});"
                            " resume with the run's own settings") from e
        set_rng_states(state["rng"], device)
        gen.set_state(state["data_rng"])  # the generator as it was at the epoch's start
        history, epoch0, step0 = state["history"], state["epoch"], state["step"]
        sums = {k: v.to(device) for k, v in state["sums"].items()}
        good, epoch_skipped, skipped = state["good_steps"], state["epoch_skipped"], state["skipped"]
        wall_before, epoch_before = state["wall_seconds"], state["epoch_seconds"]
        was = state["config"]["train"]
        if (was["epochs"], was["lr"], was["lr_final"]) != (t.epochs, t.lr, t.lr_final):
            # A longer run (or, forced, another lr / lr_final): a changed lr rescales the current
            # rate; the decay is re-planned from there to reach lr_final at the new last step,
            # instead of decaying on past it.
            for group in opt.param_groups:
                group["lr"] *= t.lr / was["lr"]
                group["initial_lr"] = group["lr"]  # where a new schedule starts from
            remaining = max(steps_per_epoch * (t.epochs - epoch0) - step0 - 1, 1)
            target = min(t.lr_final, opt.param_groups[0]["lr"])  # never climb back up
            if isinstance(sched, torch.optim.lr_scheduler.ExponentialLR):
                sched.gamma = (target / opt.param_groups[0]["lr"]) ** (1.0 / remaining)
            else:  # cosine: a new half cosine from the current rate down to lr_final
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, remaining, eta_min=target)
        print(f"drmm: resuming {out} from its checkpoint at the"
              f" {position(epoch0, step0, steps_per_epoch)}", file=sys.stderr)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # temporaries of writes that a crash cut short
            remove_stale_temporaries(out / name)
        atomic_write(out / "labeled_indices.npy", lambda f: np.save(f, labeled))
        atomic_write(out / "config.json", lambda f: f.write(json.dumps(cfg.to_dict(), indent=2)
                                                            .encode()))
        # The history in the checkpoint is the truth: drop lines of epochs a crash did not save.
        atomic_write(out / "metrics.jsonl", lambda f: f.write("".join(
            json.dumps(r) + "\n" for r in history).encode()))
    writer = make_writer(out, len(history) + 1) if t.tensorboard and is_main else None
    bar = make_bar(steps_per_epoch, progress and is_main)
    wall0 = time.perf_counter() - wall_before
    last_saved = position(epoch0, step0, steps_per_epoch) if state is not None else None

    def save(epoch: int, step: int, data_rng: torch.Tensor) -> None:
        """Checkpoint at `step` steps into epoch `epoch` (0-based; step 0 = the epoch's start)."""
        nonlocal last_saved
        if not is_main:
            return
        model_state = model.state_dict()  # parameters and BatchNorm running statistics
        if not all(v.isfinite().all() for v in model_state.values() if v.is_floating_point()):
            raise DRMMError(f"the model's weights became non-finite by the"
                            f" {position(epoch, step, steps_per_epoch)}; not saved, the last good"
                            f" checkpoint (at the {last_saved}) is kept. Lower --lr")
        save_checkpoint(out / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT,
            "model": model_state,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "step": step,
            "data_rng": data_rng,  # the data-order generator at the start of `epoch`
            "sums": {k: v.detach().cpu() for k, v in sums.items()},
            "good_steps": good,
            "epoch_skipped": epoch_skipped,
            "skipped": skipped,
            "wall_seconds": time.perf_counter() - wall0,
            "epoch_seconds": epoch_before + time.perf_counter() - t0,
            "n_train": n_unl,
            "config": cfg.to_dict(),
            "class_names": data.class_names,
            "preprocess": data.preprocessor.state_dict(),  # to transform new images alike
            "labeled_indices": labeled_t,
            "rng": get_rng_states(device),
            "history": history,
        })
        last_saved = position(epoch, step, steps_per_epoch)

    try:  # on any exit, clear the progress bar so that an error message stays one line
        for epoch in range(epoch0, t.epochs):
            model.train()
            first = step0 if epoch == epoch0 else 0  # > 0 only when resuming inside an epoch
            epoch_rng = gen.get_state()  # saved with mid-epoch checkpoints to redraw the order
            lab_order, unl_order = epoch_order(labeled_t, n_unl, gen)
            t0 = time.perf_counter()
            bar.reset()
            bar.update(first)
            bar.set_description(f"epoch {epoch + 1}/{t.epochs}")
            means: dict[str, float] = {}
            for step in range(first, steps_per_epoch):
                # this rank's shard of each half of the global batch (all of it in one process)
                il = dist.shard(lab_order[step * half:(step + 1) * half]).to(device)  # (B/2/W,)
                iu = dist.shard(unl_order[step * half:(step + 1) * half]).to(device)  # (B/2/W,)
                if t.skip_nonfinite:  # the forward pass moves the BN statistics: keep a copy
                    buffers = [b.clone() for b in model.buffers()]
                with autocast:
                    terms = stepper(x_train[il], y_train[il], x_train[iu])
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                # A NaN or inf in the loss or in any gradient makes this sum non-finite; checked
                # before opt.step(), so a bad batch never reaches the weights. The check is one
                # host sync: free on CPU, but on CUDA it stalls the queue, so there it is made
                # every step only with skip_nonfinite, else every log_every steps (a NaN then
                # stops the run at the next check; the last checkpoint is still good).
                check_now = (device.type != "cuda" or t.skip_nonfinite
                             or (step + 1) % t.log_every == 0 or step + 1 == steps_per_epoch)
                if not check_now or torch.isfinite(
                        terms["loss"].detach()
                        + sum(p.grad.sum() for p in model.parameters() if p.grad is not None)
                ).item():
                    opt.step()
                    sched.step()
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v.detach()
                    good += 1
                else:
                    values = {k: v.item() for k, v in terms.items()}
                    what = "loss" if not math.isfinite(values["loss"]) else "gradient"
                    where = (f"step {epoch * steps_per_epoch + step + 1} (epoch {epoch + 1}, step"
                             f" {step + 1} of {steps_per_epoch})")
                    if not t.skip_nonfinite:
                        then = (f"the last good checkpoint (at the {last_saved}) is kept: lower"
                                f" --lr and start a new run, or continue with --resume {out}"
                                " --skip-nonfinite to skip such batches" if last_saved else
                                "no checkpoint was written yet: lower --lr, or pass"
                                " --skip-nonfinite to skip such batches")
                        raise DRMMError(f"non-finite {what} at {where}: {fmt(values)}; {then}")
                    with torch.no_grad():  # undo the BN statistics update of the skipped batch
                        for b, saved in zip(model.buffers(), buffers, strict=True):
                            b.copy_(saved)
                    epoch_skipped += 1
                    skipped += 1
                    bar.write(f"skipped batch at {where}: non-finite {what} ({fmt(values)})")
                    with warnings.catch_warnings():  # "scheduler stepped before optimizer"
                        warnings.simplefilter("ignore", UserWarning)
                        sched.step()  # the schedule follows the step count, skipped or not
                if (step + 1) % t.log_every == 0 or step + 1 == steps_per_epoch:
                    means = {k: v.item() / good for k, v in sums.items()}  # one host sync
                    bar.set_postfix_str(fmt(means), refresh=False)
                bar.update(1)
                if t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 \
                        and step + 1 < steps_per_epoch:
                    save(epoch, step + 1, epoch_rng)
            seconds = max(time.perf_counter() - t0, 1e-9)
            images = (steps_per_epoch - first) * (half if t.supervised_only else 2 * half)
            err = test_error(model, x_test, y_test, t.eval_batch_size) if data.has_test else None
            record = {
                "epoch": epoch + 1,
                "test_error": err,
                **{f"train_{k}": v.item() / good for k, v in sums.items()},
                "lr": opt.param_groups[0]["lr"],
                "skipped_batches": epoch_skipped,
                "epoch_seconds": epoch_before + seconds,
                "images_per_s": images / seconds,  # global batch: all ranks together
                "wall_seconds": time.perf_counter() - wall0,
            }
            history.append(record)
            bar.write(f"epoch {epoch + 1}: {describe_error(err)}  {fmt(means)}"
                      f"  ({record['images_per_s']:.0f} img/s)")
            sums, good, epoch_skipped, epoch_before, t0 = {}, 0, 0, 0.0, time.perf_counter()
            save(epoch + 1, 0, gen.get_state())
            try:
                if is_main:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise DRMMError(f"cannot write {out / 'metrics.jsonl'} ({e.strerror or e});"
                                f" the checkpoint is saved: free disk space, then --resume {out}"
                                ) from e
            if writer is not None:
                for k, v in record.items():
                    if v is not None:
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        distributed.cleanup(dist)

    errors = [r["test_error"] for r in history if r["test_error"] is not None]
    metrics = {
        "test_error": history[-1]["test_error"],  # None: no test set
        "best_test_error": min(errors) if errors else None,  # read off the test set
        "epochs": t.epochs,
        "labels": len(labeled),  # the labeled images used, however they were chosen
        "seed": t.seed,
        "dataset": t.dataset,
        "arch": cfg.model.arch,
        "supervised_only": t.supervised_only,
        "skipped_batches": skipped,  # batches with a NaN / inf loss or gradient, not learned
        "wall_seconds": history[-1]["wall_seconds"],
        "test_error_curve": [r["test_error"] for r in history],
    }
    if is_main:
        atomic_write(out / "metrics.json",
                     lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        shown = x_test if x_test is not None else x_train  # (n, C, H, W)
        save_reconstructions(model, shown, out / "reconstructions.png")
    return metrics


def load_run_state(path: Path) -> dict:
    """A training checkpoint, in the current format; a DRMMError if it is not one."""
    if not path.is_file():
        raise DRMMError(f"{path} does not exist: nothing to resume; check the run folder, or"
                        " start the run without --resume")
    state = load_checkpoint(path)
    version = state.get("format", 1)
    need = {"model", "optimizer", "scheduler", "epoch", "config", "labeled_indices", "rng",
            "history"}
    if version >= 2:
        need |= {"step", "data_rng", "sums", "good_steps", "epoch_skipped", "skipped",
                 "wall_seconds", "epoch_seconds", "n_train"}
    missing = sorted(need - state.keys())
    if missing or not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise DRMMError(f"{path} is not a drmm training checkpoint this version can resume"
                        f" (format {version!r}, missing {missing}); start a new run")
    if version == 1:  # epoch-level checkpoints of earlier versions: at an epoch's start
        history = state["history"]
        state.update(step=0, data_rng=state["rng"]["data"], sums={}, good_steps=0,
                     epoch_skipped=0, skipped=0, epoch_seconds=0.0, n_train=None,
                     wall_seconds=history[-1]["wall_seconds"] if history else 0.0)
    return state


def resume_changes(saved_config: dict, cfg: Config) -> list[str]:
    """'key: old -> new' for each setting that differs from the run's own, free ones aside."""
    old = flat(Config.from_dict(saved_config).to_dict())  # fields added since: their defaults
    new = flat(cfg.to_dict())
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
            if k not in FREE_ON_RESUME and old.get(k) != new.get(k)]


def check_resume(out: Path, state: dict, cfg: Config, labeled: np.ndarray, n_train: int,
                 force: bool) -> None:
    """Refuse to resume with other settings or other data unless forced; list what differs."""
    changes = resume_changes(state["config"], cfg)
    if not torch.equal(state["labeled_indices"], torch.from_numpy(labeled)) \
            or state["n_train"] not in (None, n_train):
        changes.append(f"the data: {n_train} training images and their labeled split differ"
                       f" from the run's ({state['n_train']} images)")
    if changes and not force:
        raise DRMMError(f"{out} was trained with other settings ({'; '.join(changes)}); resume"
                        " without changing them, pass --force-resume to continue anyway, or"
                        " start a new run with another --out")
    if changes:
        print(f"drmm: warning: resuming {out} with changed settings: {'; '.join(changes)}",
              file=sys.stderr)
    if cfg.train.epochs < state["epoch"]:
        raise DRMMError(f"{out} has already trained {state['epoch']} epochs; --epochs"
                        f" {cfg.train.epochs} must be at least that")


def get_rng_states(device: torch.device) -> dict:
    """Every random state a run could touch, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()  # ('MT19937', keys (624,) uint32, pos, has_gauss, gauss)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss),
                             gauss))
    if "python" in states:
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state_all(states["cuda"])


def position(epoch: int, step: int, steps_per_epoch: int) -> str:
    """Where a run stands after `step` steps of epoch index `epoch`, in words (1-based)."""
    if step == 0:
        return f"end of epoch {epoch}" if epoch else "start of the run"
    return f"epoch {epoch + 1}, step {step} of {steps_per_epoch}"


def describe_error(err: float | None) -> str:
    return "no test set" if err is None else f"test error {100 * err:.2f} %"


def fmt(means: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" if abs(v) < 1e5 else f"{k} {v:.3e}" for k, v in means.items())


def flat(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def make_writer(out: Path, purge_step: int | None = None):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a crashed attempt logged past the checkpoint it resumes from.
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)


def make_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, dynamic_ncols=True, leave=False)
