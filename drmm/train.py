"""Semi-supervised training of the DRMM by hard EM (section 4.1, Appendix A).

Each step is one round of hard EM: the E-step (bottom-up inference of c-hat and the switches,
then the top-down reconstruction) inside `step_terms`, and the M-step as one SGD update of the
objective in `drmm.losses`. `train` reads straight through: setup, then the epoch loop with
zero_grad / backward / step in plain sight, evaluation, logging and checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from drmm.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from drmm.config import Config, validate
from drmm.data import Dataset, labeled_split, load_dataset
from drmm.errors import DRMMError
from drmm.evaluate import save_reconstructions, test_error
from drmm.losses import drmm_objective
from drmm.model import DRMM

CHECKPOINT = "checkpoint.pt"
# Settings a resumed run may change: they move or extend the run, not what it computes.
FREE_ON_RESUME = {"train.epochs", "train.data_dir", "train.device", "train.tensorboard",
                  "train.log_every", "train.eval_batch_size"}


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


def split_bottom_up(bu, n: int):
    """Split a joint bottom-up result into its first n images and the rest."""
    from drmm.model import BottomUp, Switches

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
    gamma = (t.lr_final / t.lr) ** (1.0 / max(total_steps - 1, 1))  # lr -> lr_final per step
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


def prepare(cfg: Config, data: Dataset | None = None):
    """Load the data, check it against the model, choose the labeled split."""
    validate(cfg)
    t = cfg.train
    data = data if data is not None else load_dataset(t.dataset, t.data_dir,
                                                      preprocess=t.preprocess)
    c, h, w = data.image_shape
    if h != w:
        raise DRMMError(f"images are {h}x{w}; only square images are supported")
    cfg.model.in_channels, cfg.model.image_size = c, h
    cfg.model.num_classes = data.num_classes
    labeled = labeled_split(data.y_train.numpy(), t.labels, data.num_classes, t.seed)
    return data, labeled


def train(cfg: Config, out_dir: str | Path, resume: bool = False, data: Dataset | None = None,
          progress: bool = True) -> dict:
    """Train, evaluating after each epoch; writes RUN_DIR/{checkpoint.pt, metrics.json, ...}."""
    out = Path(out_dir)
    t = cfg.train
    data, labeled = prepare(cfg, data)
    if resume:
        state = load_checkpoint(out / CHECKPOINT)
        saved = flat(state["config"])
        changed = [k for k, v in flat(cfg.to_dict()).items()
                   if k not in FREE_ON_RESUME and saved.get(k) != v]
        if changed:
            raise DRMMError(f"--resume with a changed config ({', '.join(changed)});"
                            " resume with the run's own settings or start a new --out")
    device = torch.device(t.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DRMMError("--device cuda asked for, but no CUDA device is available;"
                        " use --device cpu")
    torch.manual_seed(t.seed)
    model = DRMM(cfg.model).to(device)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)  # whole set on device
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    labeled_t = torch.from_numpy(labeled)
    half = t.batch_size // 2
    n_unl = len(x_train)
    steps_per_epoch = n_unl // half
    if steps_per_epoch < 1:
        raise DRMMError(f"batch_size {t.batch_size} is larger than twice the training set")
    opt, sched = make_optimizer(model, cfg, steps_per_epoch * t.epochs)
    gen = torch.Generator().manual_seed(t.seed)  # the data order
    history, start_epoch = [], 0
    if resume:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        gen.set_state(state["rng"]["data"])
        history, start_epoch = state["history"], state["epoch"]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "labeled_indices.npy", labeled)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    writer = make_writer(out) if t.tensorboard else None
    bar = make_bar(steps_per_epoch, progress)
    wall0 = time.perf_counter() - (history[-1]["wall_seconds"] if history else 0.0)

    for epoch in range(start_epoch, t.epochs):
        model.train()
        lab_order, unl_order = epoch_order(labeled_t, n_unl, gen)
        sums: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        bar.reset()
        bar.set_description(f"epoch {epoch + 1}/{t.epochs}")
        for step in range(steps_per_epoch):
            il = lab_order[step * half:(step + 1) * half].to(device)  # (B/2,)
            iu = unl_order[step * half:(step + 1) * half].to(device)  # (B/2,)
            terms = step_terms(model, cfg, x_train[il], y_train[il], x_train[iu])
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sched.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
            if (step + 1) % t.log_every == 0 or step + 1 == steps_per_epoch:
                means = {k: v.item() / (step + 1) for k, v in sums.items()}  # one host sync
                if not all(map(math.isfinite, means.values())):
                    raise DRMMError(
                        f"loss became non-finite in epoch {epoch + 1} near step {step + 1}"
                        f" ({fmt(means)}); the last good checkpoint is kept. Lower --lr")
                bar.set_postfix_str(fmt(means), refresh=False)
            bar.update(1)
        seconds = time.perf_counter() - t0
        err = test_error(model, x_test, y_test, t.eval_batch_size)
        record = {
            "epoch": epoch + 1,
            "test_error": err,
            **{f"train_{k}": v.item() / steps_per_epoch for k, v in sums.items()},
            "lr": opt.param_groups[0]["lr"],
            "epoch_seconds": seconds,
            "images_per_s": steps_per_epoch * (half if t.supervised_only else 2 * half) / seconds,
            "wall_seconds": time.perf_counter() - wall0,
        }
        history.append(record)
        bar.write(f"epoch {epoch + 1}: test error {100 * err:.2f} %  {fmt(means)}"
                  f"  ({record['images_per_s']:.0f} img/s)")
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for k, v in record.items():
                writer.add_scalar(k, v, epoch + 1)
            writer.flush()
        save_checkpoint(out / CHECKPOINT, {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch + 1,
            "config": cfg.to_dict(),
            "labeled_indices": labeled_t,
            "rng": {"torch": torch.get_rng_state(), "data": gen.get_state()},
            "history": history,
        })
    bar.close()
    if writer is not None:
        writer.close()

    metrics = {
        "test_error": history[-1]["test_error"],
        "best_test_error": min(r["test_error"] for r in history),  # read off the test set
        "epochs": t.epochs,
        "labels": t.labels,
        "seed": t.seed,
        "dataset": t.dataset,
        "arch": cfg.model.arch,
        "supervised_only": t.supervised_only,
        "wall_seconds": history[-1]["wall_seconds"],
        "test_error_curve": [r["test_error"] for r in history],
    }
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    save_reconstructions(model, x_test, out / "reconstructions.png")
    return metrics


def fmt(means: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in means.items())


def flat(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def make_writer(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def make_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, dynamic_ncols=True, leave=False)
