"""Where a photo run's time goes: the cifar10 preset's step and epoch broken into their parts.

The real training step (drmm.step.make_batch + train_step on CIFAR-10, the preset's 20 labeled +
80 unlabeled images and their strong views) runs with each part timed apart: the batch's pixels
(uint8 to standardized float), augmentation, strong views, the bottom-up pass of the training
images and that of the strong views, the top-down pass, the loss terms, backward, the optimizer
and what remains (the finite check, bookkeeping). Each variant (a precision, a way of running the
step) has its own model from the same initialisation and runs in short interleaved rounds in one
process, so machine noise hits all alike. Per epoch come the evaluation on the test set (in the
step's precision, the last epoch's in float32), the checkpoint and (once a run, spread over its
epochs) the novelty calibration, each timed once.
Prints a table of shares of the epoch and the images/s of each variant against the first, and
writes JSON.

    python -m benchmarks.speed.step_profile --data-dir ../shared/data --threads 1 \
        --out results/step_profile.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

import drmm.losses as losses_module
import drmm.model as model_module
import drmm.step as step_module
from benchmarks.common import cpu_name, train_step
from drmm.checkpoint import Checkpointer, RunState
from drmm.config import apply_overrides, preset
from drmm.evaluate import confusion
from drmm.files import write_json
from drmm.model import DRMM, DRMMLayer, Switches
from drmm.optim import make_optimizer
from drmm.precision import step_autocast
from drmm.scores import novelty_calibration
from drmm.step import Objective, epoch_order, make_batch, step_weights
from drmm.train import on_device, prepare

STEP_PARTS = ("pixels", "augmentation", "strong views", "bottom-up", "bottom-up, strong views",
              "top-down", "losses", "backward", "optimizer", "other")
EPOCH_PARTS = ("evaluation", "checkpoint", "novelty calibration")


class PartTimer:
    """Exclusive wall time per part: a part's time excludes the parts called inside it."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [label, seconds spent in parts called inside it]
        self.active = False

    def wrap(self, label: str, fn, inside_only: str | None = None):
        """fn timed as `label` while a step is being timed; with inside_only, only when called
        from that part (else its time stays with the caller)."""

        def timed(*args, **kwargs):
            if not self.active or (self.stack and self.stack[-1][0] == inside_only
                                   and inside_only is not None):
                return fn(*args, **kwargs)
            self.stack.append([label, 0.0])
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                _, inner = self.stack.pop()
                self.totals[label] += dt - inner
                if self.stack:
                    self.stack[-1][1] += dt

        return timed


def forward_before(self, x: torch.Tensor) -> torch.Tensor:
    """DRMM.forward as the step ran it before: the strong views' pass kept its switches."""
    return self.bottom_up(x).logits  # (B, K)


def up_before(self, x: torch.Tensor, switches: bool = True):
    """DRMMLayer.up as it ran before: a compared to bool at the conv's output size."""
    h = self.bn(self.conv(x))  # (B, C, H, W)
    if not switches:
        h = F.max_pool2d(h, 2) if self.pooled else h  # (B, C, H', W')
        return F.relu(h), None
    a, t = h.detach() > 0, None  # (B, C, H, W) bool
    if self.pooled:
        h, t = F.max_pool2d(h, 2, return_indices=True)  # (B, C, H/2, W/2)
    return F.relu(h), Switches(on=a, t=t)


def down_before(self, z: torch.Tensor, s) -> torch.Tensor:
    """DRMMLayer.down as it ran before: un-pool (autocast widens it to float32), then mask with
    the bool a (a cast in the product, forward and backward)."""
    if s.t is not None:
        z = F.max_unpool2d(z, s.t, 2, output_size=s.on.shape[-2:])  # (B, C, H, W)
    z = z * s.on  # (B, C, H, W)
    return F.conv_transpose2d(z, self.conv.weight, padding=self.padding)  # (B, C_in, H, W)


# The step as it ran before, put in place while a "before" variant runs (the baseline of the
# ratios): the mean pool and L_NN read channels_last maps through their NCHW views.
BEFORE = [(DRMM, "forward", forward_before), (DRMMLayer, "up", up_before),
          (DRMMLayer, "down", down_before), (model_module, "as_stored", lambda x: x),
          (losses_module, "as_stored", lambda x: x)]


@contextlib.contextmanager
def patched(patches: list[tuple[object, str, object]]):
    """Each (owner, name, value) put in place for the with-block, the old ones put back after."""
    with contextlib.ExitStack() as stack:
        for owner, name, value in patches:
            stack.enter_context(mock.patch.object(owner, name, value))
        yield


def timed_parts(timer: PartTimer, opt) -> list[tuple[object, str, object]]:
    """The step's parts wrapped in timers (wrapping what is in place now), for `patched`."""
    from drmm.data.images import Images

    return [
        (Images, "__getitem__", timer.wrap("pixels", Images.__getitem__)),
        (step_module, "augment", timer.wrap("augmentation", step_module.augment)),
        (step_module, "strong_view", timer.wrap("strong views", step_module.strong_view)),
        # the strong views' pass is DRMM.forward; the training images' is bottom_up alone
        (DRMM, "forward", timer.wrap("bottom-up, strong views", DRMM.forward)),
        (DRMM, "bottom_up", timer.wrap("bottom-up", DRMM.bottom_up,
                                       inside_only="bottom-up, strong views")),
        (DRMM, "top_down", timer.wrap("top-down", DRMM.top_down)),
        (step_module, "drmm_objective", timer.wrap("losses", step_module.drmm_objective)),
        (torch.Tensor, "backward", timer.wrap("backward", torch.Tensor.backward)),
        (opt, "step", timer.wrap("optimizer", opt.step)),
    ]


class Variant:
    """One way of running the step: its own model, optimizer and data order."""

    def __init__(self, name: str, cfg, data, labeled: torch.Tensor, device, before: bool):
        self.name, self.cfg = name, cfg
        torch.manual_seed(cfg.train.seed)
        layout = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.before = before
        self.model = DRMM(cfg.model).to(device, memory_format=layout)
        self.stepper = Objective(self.model, cfg)
        self.x_train, self.y_train = data.x_train, data.y_train  # (N, C, H, W), (N,)
        self.x_test, self.y_test = data.x_test, data.y_test  # (M, C, H, W), (M,)
        self.spe = len(self.x_train) // cfg.train.batch_split()[1]
        self.opt, self.sched = make_optimizer(self.model, cfg, self.spe * cfg.train.epochs)
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.order = epoch_order(labeled, len(self.x_train), self.gen,
                                 self.spe * cfg.train.batch_split()[0])
        self.autocast = step_autocast(cfg.train.precision, device)
        self.step, self.steps_timed = 0, 0

    def run(self, steps: int, timer: PartTimer | None) -> float:
        """Seconds for `steps` training steps (the timer, if given, records their parts)."""
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            weights = step_weights(self.cfg, self.step, self.spe)
            if timer is not None:
                timer.active = True
            batch = make_batch(self.cfg, self.x_train, self.y_train, self.order,
                               self.step % self.spe, weights)
            train_step(self.stepper, self.model, self.opt, self.sched, batch, weights,
                       self.autocast)
            if timer is not None:
                timer.active = False
            self.step += 1
        return time.perf_counter() - t0


def time_epoch_parts(v: Variant) -> dict[str, float]:
    """Seconds of one evaluation on the test set in the step's precision (the epochs before the
    last; "before": float32) and one in float32 (the last epoch's), one checkpoint, one novelty
    calibration."""
    t = v.cfg.train
    parts = {}
    for part, precision in (("evaluation", "fp32" if v.before else t.precision),
                            ("last evaluation", "fp32")):
        t0 = time.perf_counter()
        with step_autocast(precision, torch.device("cpu")):
            confusion(v.model, v.x_test, v.y_test, t.eval_batch_size)
        parts[part] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpointer(Path(tmp) / "checkpoint.pt", v.model, v.opt, v.sched,
                            torch.device("cpu"), True, v.spe,
                            fixed={"config": v.cfg.to_dict()}, last_saved=None)
        t0 = time.perf_counter()
        ckpt.save(RunState(data_rng=v.gen.get_state()))
        parts["checkpoint"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    novelty_calibration(v.model, v.cfg, v.x_train, t.eval_batch_size)
    parts["novelty calibration"] = time.perf_counter() - t0
    return parts


def epoch_table(name: str, step_parts: dict[str, float], epoch_parts: dict[str, float],
                spe: int, epochs: int) -> dict:
    """Seconds of each part in one epoch of `spe` steps (the novelty calibration, once a run,
    spread over its `epochs`, the evaluation a mean over them: the last one's is float32), and
    its share of the epoch."""
    seconds = {k: spe * step_parts.get(k, 0.0) for k in STEP_PARTS}
    seconds["evaluation"] = ((epochs - 1) * epoch_parts["evaluation"]
                             + epoch_parts["last evaluation"]) / epochs
    seconds["checkpoint"] = epoch_parts["checkpoint"]
    seconds["novelty calibration"] = epoch_parts["novelty calibration"] / epochs
    total = sum(seconds.values())
    return {"variant": name, "epoch_seconds": total,
            "seconds": seconds, "share": {k: s / total for k, s in seconds.items()}}


# name: (settings {section: {field: value}} over the cifar10 preset, whether the step runs as
# it did before the profile's changes: BEFORE); the first is the baseline of the ratios
VARIANTS = {
    "fp32, before": ({"train": dict(precision="fp32")}, True),
    "fp32": ({"train": dict(precision="fp32")}, False),
    "bf16, before": ({"train": dict(precision="bf16")}, True),
    "bf16": ({"train": dict(precision="bf16")}, False),
    "bf16, NCHW": ({"train": dict(precision="bf16", channels_last=False)}, False),
    "fp32, NCHW": ({"train": dict(precision="fp32", channels_last=False)}, False),
    # `--no-rc --no-nn`: no top-down pass; its speed sets the epochs of an equal-time run
    "bf16, no rendering": ({"train": dict(precision="bf16"),
                            "loss": dict(alpha_rc=0.0, alpha_nn=0.0)}, False),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding cifar10/")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds per variant")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/step_profile.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    base = preset("cifar10", quiet=True)
    base.train.data_dir = a.data_dir
    data, labeled = prepare(base)
    on_dev = on_device(data, torch.device("cpu"), base.train.channels_last)
    variants = []
    for name in a.variants:
        cfg = copy.deepcopy(base)
        settings, before = VARIANTS[name]
        apply_overrides(cfg, settings, source=f"variant {name!r}")
        variants.append(Variant(name, cfg, on_dev, torch.from_numpy(labeled),
                                torch.device("cpu"), before))
    for v in variants:
        with patched(BEFORE if v.before else []):
            v.run(a.warmup, None)
    timers = {v.name: PartTimer() for v in variants}
    round_times = defaultdict(list)
    for _ in range(a.rounds):
        for v in random.sample(variants, len(variants)):
            # the timers wrap the step in place, so the step as it ran before goes in first
            with patched(BEFORE if v.before else []), patched(timed_parts(timers[v.name], v.opt)):
                round_times[v.name].append(v.run(a.steps, timers[v.name]) / a.steps)
    rows, steps = [], a.rounds * a.steps
    for v in variants:
        step_s = sorted(round_times[v.name])[len(round_times[v.name]) // 2]  # median round
        parts = {k: timers[v.name].totals[k] / steps for k in STEP_PARTS if k != "other"}
        parts["other"] = max(sum(round_times[v.name]) / a.rounds - sum(parts.values()), 0.0)
        epoch_parts = time_epoch_parts(v)
        row = epoch_table(v.name, parts, epoch_parts, v.spe, v.cfg.train.epochs)
        row |= {"step_seconds_median": step_s, "step_images_per_s":
                v.cfg.train.batch_size / step_s,
                "epoch_images_per_s": v.spe * v.cfg.train.batch_size / row["epoch_seconds"]}
        rows.append(row)
    print(f"cifar10 preset, {a.threads} thread(s), {cpu_name()}; {steps} steps a variant")
    print(f"{'part':<26}" + "".join(f"{r['variant']:>21}" for r in rows))
    for k in STEP_PARTS + EPOCH_PARTS:
        print(f"{k:<26}" + "".join(f"{100 * r['share'][k]:>11.1f} % {r['seconds'][k]:>5.0f} s"
                                   for r in rows))
    first = rows[0]
    for r in rows:
        print(f"{r['variant']}: step {r['step_images_per_s']:.1f} images/s"
              f" ({r['step_images_per_s'] / first['step_images_per_s']:.2f}x),"
              f" epoch {r['epoch_seconds']:.0f} s, {r['epoch_images_per_s']:.1f} images/s"
              f" ({r['epoch_images_per_s'] / first['epoch_images_per_s']:.2f}x)")
    write_json(a.out, {"cpu": cpu_name(), "threads": a.threads, "torch": torch.__version__,
                       "steps": steps, "variants": rows})


if __name__ == "__main__":
    main()
