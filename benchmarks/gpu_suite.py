"""The parts of benchmarks/gpu_suite.sh, one per process so that each runs in its own timeout.

    python benchmarks/gpu_suite.py PART --out OUT_DIR --work WORK_DIR --deadline UNIX_TIME ...

PART: correctness | throughput | mnist | cifar10 (the four parts), mark (records how a part's
process ended), summary (prints the summary lines), fake-cifar (a tiny random CIFAR-like npz
for SMOKE=1). Each part writes its record under its name into OUT_DIR/gpu_suite.json as it
goes (so a part cut off by its timeout still leaves what it measured) and prints one line
starting with `gpu_suite[PART]`. --smoke runs every code path on the CPU on tiny data; its
numbers mean nothing. Run it through gpu_suite.sh, which says more.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = "gpu_suite.json"
PARTS = ("correctness", "throughput", "mnist", "cifar10")
PAPER_ERROR = {"mnist": "0.57 % (Table 1, N_L = 100, +KL+NN, 500 epochs)",
               "cifar10": "Table 4, N_L = 4000, +KL+NN, 500 epochs on all 50,000 images"}

# ----------------------------------------------------------------------------------------------
# The results file: one JSON object, {part: record}, rewritten whole (atomically) at each update


def read_results(out: Path) -> dict:
    path = out / RESULTS
    return json.loads(path.read_text()) if path.is_file() else {}


def record(out: Path, part: str, rec: dict) -> None:
    results = read_results(out)
    results[part] = rec
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out / RESULTS)  # a reader (or a kill) never sees half a file


def finish(out: Path, part: str, rec: dict, line: str) -> None:
    rec["status"], rec["summary"] = "ok", line
    record(out, part, rec)
    print(f"gpu_suite[{part}]: {line}", flush=True)


# ----------------------------------------------------------------------------------------------
# Shared set-up


def setup(a):
    """The device, with cuDNN autotuning on (every shape here is fixed), and its name."""
    import torch

    if a.smoke:
        torch.manual_seed(0)
        return torch.device("cpu"), "CPU (SMOKE=1)"
    if not torch.cuda.is_available():
        sys.exit("gpu_suite: torch sees no CUDA device (use SMOKE=1 for a CPU run)")
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda"), torch.cuda.get_device_name(0)


def left(a) -> float:
    """Seconds until this part's deadline."""
    return a.deadline - time.time()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def paper_schedule(cfg, device, batch: int = 100):
    """A copy of cfg with the paper's step (drmm.step.paper_step) and Appendix A's optimiser:
    plain SGD, lr 0.2 -> 1e-4 decayed exponentially, batch 100, and none of our additions
    (augmentation, the graph prior, the consistency term) unless a part sets them."""
    from drmm.config import PAPER_SCHEDULE
    from drmm.step import paper_step

    cfg = paper_step(cfg)
    t = cfg.train
    for key, value in PAPER_SCHEDULE.items():  # epochs: what fits; batch and N_U: the part's
        if key not in ("epochs", "batch_size", "unlabeled"):
            setattr(t, key, value)
    t.batch_size, t.seed, t.device = batch, 0, str(device)
    # log_every: the NaN check and the progress line are host syncs; on CUDA train() does
    # them only every log_every steps (and at each epoch's end).
    t.tensorboard, t.log_every = False, 200
    return cfg


def subset(data, train_idx, test_n: int | None = None):
    """A copy of the Dataset with these training images and the first test_n test images."""
    d = copy.copy(data)
    d.x_train, d.y_train = data.x_train[train_idx], data.y_train[train_idx]
    if test_n is not None and data.has_test:
        d.x_test, d.y_test = data.x_test[:test_n], data.y_test[:test_n]
    return d


@contextlib.contextmanager
def wrapped_step_terms(wrap):
    """drmm.step.step_terms replaced by wrap(real step_terms) for the duration (the seam the
    reliability tests inject faults through: Objective.forward looks it up in drmm.step at each
    step)."""
    import drmm.step

    real = drmm.step.step_terms
    drmm.step.step_terms = wrap(real)
    try:
        yield
    finally:
        drmm.step.step_terms = real


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over the floating tensors of two state dicts (inf if keys differ)."""
    if a.keys() != b.keys():
        return math.inf
    return max((float((a[k].float() - b[k].float()).abs().max()) for k in a
                if a[k].is_floating_point() and a[k].numel()), default=0.0)


# ----------------------------------------------------------------------------------------------
# Part 1: CUDA correctness


class Interrupted(Exception):
    """Stands for a crash in the middle of a run."""


def part_correctness(a) -> None:
    import torch

    from drmm.checkpoint import load_checkpoint, save_checkpoint
    from drmm.config import preset
    from drmm.data import load_dataset
    from drmm.evaluate import test_error
    from drmm.model import DRMM
    from drmm.step import Batch, Objective, make_optimizer, step_weights, train_step
    from drmm.train import train

    out, work = Path(a.out), Path(a.work)
    device, name = setup(a)
    rec = {"status": "running", "device": name, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    with contextlib.suppress(Exception):  # where this torch says what fp32 convolutions run in
        rec["cudnn_conv_fp32_precision"] = torch.backends.cudnn.conv.fp32_precision
    data = load_dataset("mnist", a.mnist_dir)
    cfg = paper_schedule(preset("mnist"), device)
    b = 20 if a.smoke else 100  # bf16 is emulated on most CPUs: slow
    x = data.x_train[:b].to(device)  # (B, 1, 28, 28)
    y = data.y_train[:b // 2].to(device)  # (B/2,)
    one_batch, weights = Batch(x[:b // 2], y, x[b // 2:]), step_weights(cfg, 0, 1)

    # 1. Training steps, fp32 and bf16 autocast, from the same initial weights; check=True:
    # train_step raises on a NaN / inf loss or gradient.
    steps, models = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = models[precision] = DRMM(cfg.model).to(device)
        opt, sched = make_optimizer(model, cfg, 1000)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        losses = [float(train_step(Objective(model, cfg), model, opt, sched, one_batch,
                                   weights, autocast)["loss"])
                  for _ in range(3)]
        steps[precision] = {"losses": losses, "finite": all(map(math.isfinite, losses))}
    model = models.pop("fp32")
    del models
    rec["steps"] = steps
    rec["bf16_over_fp32_first_loss"] = steps["bf16"]["losses"][0] / steps["fp32"]["losses"][0]

    # 2. Evaluation, with the fp32 model just trained for 3 steps (near chance: it is a check
    # that evaluation runs and gives a fraction, not a result).
    n_test = 100 if a.smoke else 2000
    x_test, y_test = data.x_test[:n_test].to(device), data.y_test[:n_test].to(device)
    err = test_error(model, x_test, y_test)
    rec["test_error_after_3_steps"] = err

    # 3. Checkpoint save + load: the reloaded model must give the same logits.
    path = work / "correctness_checkpoint.pt"
    save_checkpoint(path, {"model": model.state_dict()})
    model2 = DRMM(cfg.model).to(device)
    model2.load_state_dict(load_checkpoint(path, map_location=device)["model"])
    model.eval()
    model2.eval()
    with torch.no_grad():
        rec["checkpoint_reload_logit_max_abs_diff"] = float(
            (model(x_test[:100]) - model2(x_test[:100])).abs().max())
    del model, model2, opt
    record(out, "correctness", rec)

    # 4. Exact resume: 2 epochs x 8 steps with a checkpoint every 3 steps; one run crashes in
    # epoch 2 at step 5 (its last checkpoint: epoch 2, step 3) and is resumed; it must end
    # where an uninterrupted run ends. On CUDA some cuDNN kernels are not deterministic
    # (atomics in the backward pass): the difference is reported, not failed on.
    batch = 20 if a.smoke else 50
    tiny = subset(data, slice(0, 8 * batch // 2), 100 if a.smoke else 1000)
    rcfg = paper_schedule(cfg, device, batch)
    rcfg.train.epochs, rcfg.train.checkpoint_every, rcfg.train.labels = 2, 3, 20
    ref, crashed = work / "resume_reference", work / "resume_crashed"
    for d in (ref, crashed):
        shutil.rmtree(d, ignore_errors=True)
    m_ref = train(rcfg, ref, data=tiny, progress=False)
    calls = itertools.count(1)

    def crash_at_step_13(real):
        def step_terms(*args, **kwargs):
            if next(calls) == 8 + 5:
                raise Interrupted
            return real(*args, **kwargs)
        return step_terms

    with wrapped_step_terms(crash_at_step_13):
        try:
            train(rcfg, crashed, data=tiny, progress=False)
            rec["resume_crash_injected"] = False  # cannot happen: 16 steps run
        except Interrupted:
            rec["resume_crash_injected"] = True
    m_res = train(rcfg, crashed, resume=True, data=tiny, progress=False)
    diff = max_abs_diff(load_checkpoint(ref)["model"], load_checkpoint(crashed)["model"])
    rec["resume_weights_max_abs_diff"] = diff
    rec["resume_exact"] = diff == 0.0
    rec["resume_test_error_curves"] = {"uninterrupted": m_ref["test_error_percent_by_epoch"],
                                       "resumed": m_res["test_error_percent_by_epoch"]}
    record(out, "correctness", rec)

    # 5. The fast CPU tests, on this machine's Python (pytest from .gpu_data/pytest.zip if it
    # has none of its own).
    tests = ["tests/test_model.py", "tests/test_losses.py"]  # 29 tests, ~7 s on 1 CPU core
    env = dict(os.environ)
    if a.pytest_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), a.pytest_path]))
    budget = max(5.0, left(a) - 3)
    if a.smoke:  # pytest runs these tests itself; a second process would cost ~7 s of imports
        rec["pytest"] = {"files": [], "rc": 0, "last_line": "not run (SMOKE=1)"}
    else:
        rec["pytest"] = run_pytest(tests, env, budget)
    ok = all(s["finite"] for s in steps.values()) and 0 <= err <= 1 and rec["pytest"]["rc"] == 0
    rec["all_checks_passed"] = (ok and rec["checkpoint_reload_logit_max_abs_diff"] == 0.0
                                and rec["resume_crash_injected"])  # (its diff: reported only)
    finish(out, "correctness", rec,
           f"{'PASS' if rec['all_checks_passed'] else 'CHECK'}: steps finite fp32"
           f" {steps['fp32']['finite']} bf16 {steps['bf16']['finite']} (first loss bf16/fp32"
           f" {rec['bf16_over_fp32_first_loss']:.4f}), eval {err:.3f}, checkpoint reload"
           f" diff {rec['checkpoint_reload_logit_max_abs_diff']:.2g}, resume max|diff|"
           f" {diff:.2g} ({'exact' if diff == 0 else 'not bit-exact'}), pytest"
           f" {rec['pytest']['last_line']!r}")


def run_pytest(tests: list[str], env: dict, budget: float) -> dict:
    """pytest on these files in a new process: its exit code and its counts line."""
    try:
        # addopts cleared: pyproject.toml's ask for pytest-xdist, which pytest.zip lacks
        proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-x",
                               "-p", "no:cacheprovider", *tests],
                              env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"files": tests, "rc": None, "last_line": f"timed out after {budget:.0f}s"}
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    counts = [line for line in lines if re.search(r"\d+ (passed|failed|error)", line)]
    if proc.returncode:
        print("\n".join(lines[-30:]), flush=True)
    return {"files": tests, "rc": proc.returncode,
            "last_line": (counts or lines or [""])[-1].strip("= ")}


# ----------------------------------------------------------------------------------------------
# Part 2: throughput


def part_throughput(a) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_throughput import SIZES, time_steps

    from drmm.config import preset
    from drmm.model import DRMM
    from drmm.step import Batch, make_optimizer

    out = Path(a.out)
    device, name = setup(a)
    big = 8 if a.smoke else 500
    small = 4 if a.smoke else 100
    # The most wanted first: if time runs out, the later groups are the ones left out.
    groups = [("conv_large", small), ("conv_small", small), ("conv_large", big),
              ("conv_small", big)]
    warmup, steps, rounds = (1, 1, 1) if a.smoke else (5, 10, 3)
    if a.smoke:  # the same code on a toy network: bf16 is emulated on most CPUs, and slow
        groups = [("conv_tiny", small), ("conv_tiny", big)]
    rec = {"status": "running", "device": name, "torch": torch.__version__,
           "optimizer": "sgd (the paper's)", "warmup_steps": warmup, "steps_per_round": steps,
           "rounds": rounds, "groups": [], "note": "images/s count all B images of a step"
           " (DRMM: B/2 labeled + B/2 unlabeled; supervised: B labeled); best round counts;"
           " peak_mib: peak CUDA memory while building the model and running its warm-up"
           " steps, beyond what was allocated before (the batch, earlier variants)"}
    for arch, batch in groups:
        t_group = time.time()
        if left(a) < 5:
            rec["groups"].append({"arch": arch, "batch": batch, "skipped": "out of time"})
            continue
        channels, size = SIZES[arch]
        cfg = paper_schedule(preset("mnist"), device, batch)
        cfg.model.arch, cfg.model.in_channels, cfg.model.image_size = arch, channels, size
        torch.manual_seed(0)
        x = torch.rand(batch, channels, size, size, device=device)  # (B, C, H, W)
        y = torch.randint(0, 10, (batch,), device=device)  # (B,)
        half = batch // 2
        runs = {}
        for step, precision, layout in itertools.product(("drmm", "supervised"),
                                                         ("fp32", "bf16"), ("cl", "nchw")):
            vcfg = copy.deepcopy(cfg)
            vcfg.train.supervised_only = step == "supervised"
            fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
            xv = x.contiguous(memory_format=fmt)
            b = (Batch(xv, y, None) if step == "supervised"
                 else Batch(xv[:half], y[:half], xv[half:]))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
            model = DRMM(vcfg.model).to(device, memory_format=fmt)
            opt, sched = make_optimizer(model, vcfg, 10**6)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                      enabled=precision == "bf16")
            with autocast:
                time_steps(model, vcfg, opt, sched, b, warmup)  # cuDNN autotuning, allocator
            peak = ((torch.cuda.max_memory_allocated() - base) / 2**20
                    if device.type == "cuda" else None)
            runs[f"{step}_{precision}_{layout}"] = (model, vcfg, opt, sched, b, autocast, peak)
        seconds = {k: [] for k in runs}
        for _ in range(rounds):  # interleaved: every variant sees the same machine state
            for k, (model, vcfg, opt, sched, b, autocast, _) in runs.items():
                with autocast:
                    seconds[k].append(time_steps(model, vcfg, opt, sched, b, steps))
        best = {k: min(v) for k, v in seconds.items()}
        variants = {k: {"images_per_s": batch / s, "ms_per_step": 1e3 * s,
                        "peak_mib": runs[k][-1]} for k, s in best.items()}
        ratio = {f"{p}_{lay}": best[f"drmm_{p}_{lay}"] / best[f"supervised_{p}_{lay}"]
                 for p in ("fp32", "bf16") for lay in ("cl", "nchw")}
        rec["groups"].append({"arch": arch, "batch": batch, "variants": variants,
                              "time_ratio_drmm_over_supervised": ratio,
                              "seconds": time.time() - t_group})
        del runs
        if device.type == "cuda":
            torch.cuda.empty_cache()
        record(out, "throughput", rec)
    parts = []
    for g in rec["groups"]:
        if "skipped" in g:
            parts.append(f"{g['arch']} b{g['batch']} skipped")
            continue
        speed = {k: f"{v['images_per_s']:.0f}" for k, v in g["variants"].items()}
        ratio = g["time_ratio_drmm_over_supervised"]
        parts.append(f"{g['arch']} b{g['batch']} DRMM img/s fp32 {speed['drmm_fp32_cl']}/"
                     f"{speed['drmm_fp32_nchw']} bf16 {speed['drmm_bf16_cl']}/"
                     f"{speed['drmm_bf16_nchw']} (NHWC/NCHW), DRMM/DCN step time"
                     f" {ratio['fp32_cl']:.1f}x fp32 {ratio['bf16_cl']:.1f}x bf16")
    finish(out, "throughput", rec, "; ".join(parts))


# ----------------------------------------------------------------------------------------------
# Parts 3 and 4: training runs that fit their time


def plan_epochs(a, cfg, data, device, max_epochs: int) -> dict:
    """Seconds per training step and per evaluation on this device, and the number of epochs
    that fit in the time left (at least 1, at most max_epochs; 1 with --smoke)."""
    import torch

    from drmm.evaluate import test_error
    from drmm.model import DRMM
    from drmm.step import Objective, make_batch, make_optimizer, step_weights, train_step

    t = cfg.train
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    model = DRMM(cfg.model).to(device, memory_format=layout)
    opt, sched = make_optimizer(model, cfg, 10**6)
    n_lab, n_unl = t.batch_split()
    steps_per_epoch = len(data.x_train) // n_unl  # one pass over the unlabeled set, as train()
    x = data.x_train[:n_lab + n_unl].to(device).contiguous(memory_format=layout)
    y = data.y_train[:n_lab + n_unl].clamp(min=0).to(device)  # any labels: this times a step
    order = (torch.arange(n_lab), torch.arange(n_lab, n_lab + n_unl))  # labeled, unlabeled
    weights = step_weights(cfg, 0, steps_per_epoch)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    stepper = Objective(model, cfg)
    n_warm, n_timed = (1, 1) if a.smoke else (20, 100)
    # the training loop's step (its batch made and augmented as in training), without its NaN
    # check (a host sync)
    for _ in range(n_warm):  # cuDNN autotuning, allocator
        train_step(stepper, model, opt, sched, make_batch(cfg, x, y, order, 0, weights),
                   weights, autocast, check=False)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_timed):
        train_step(stepper, model, opt, sched, make_batch(cfg, x, y, order, 0, weights),
                   weights, autocast, check=False)
    sync(device)
    step_s = (time.perf_counter() - t0) / n_timed
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    test_error(model, x_test, y_test, t.eval_batch_size)  # warm-up
    t0 = time.perf_counter()
    test_error(model, x_test, y_test, t.eval_batch_size)
    eval_s = time.perf_counter() - t0
    epoch_s = steps_per_epoch * step_s * 1.1 + eval_s + 0.3  # +10 %: batching, bookkeeping
    reserve = 10.0  # data to the device, the reconstructions PNG, the final files
    fits = math.floor((left(a) - reserve) / epoch_s)
    epochs = 1 if a.smoke else max(1, min(max_epochs, fits))
    del model, opt, x, x_test
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"ms_per_step_calibrated": 1e3 * step_s, "eval_seconds": eval_s,
            "steps_per_epoch": steps_per_epoch, "planned_seconds_per_epoch": epoch_s,
            "epochs": epochs, "seconds_left_when_planned": left(a)}


def run_training(a, part: str, cfg, data, device, name: str, extra: dict) -> None:
    import torch

    from drmm.train import train

    out, work = Path(a.out), Path(a.work)
    rec = {"status": "running", "device": name, "torch": torch.__version__,
           "run_dir": str(work / f"{part}_run"), **extra}
    plan = plan_epochs(a, cfg, data, device, max_epochs=500)
    cfg.train.epochs = plan["epochs"]
    t = cfg.train
    rec |= {"plan": plan, "epochs": t.epochs, "precision": t.precision,
            "channels_last": t.channels_last, "augmentation": t.augment != "none",
            "schedule": f"{t.epochs} epochs, SGD lr {t.lr} -> {t.lr_final} ({t.decay}),"
                        f" momentum {t.momentum}, batch {t.batch_size}"
                        f" ({t.batch_size // 2} labeled + {t.batch_size // 2} unlabeled)",
            "paper": PAPER_ERROR[part]}
    record(out, part, rec)
    print(f"gpu_suite[{part}]: {plan['ms_per_step_calibrated']:.2f} ms per step,"
          f" ~{plan['planned_seconds_per_epoch']:.1f} s per epoch -> {t.epochs} epochs in the"
          f" {plan['seconds_left_when_planned']:.0f} s left", flush=True)
    run_dir = work / f"{part}_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    metrics = train(cfg, run_dir, data=data, progress=False)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    copy_run_files(run_dir, out, part)
    speeds = [r["images_per_s"] for r in history]
    rec |= {
        "labels": metrics["labels"],
        "train_images": metrics["train_images"],
        "test_images": len(data.y_test),
        "test_error_end": history[-1]["test_error"],
        "test_error_best_during_training_read_off_test_set": min(r["test_error"]
                                                                 for r in history),
        "images_per_s_mean": sum(speeds) / len(speeds),
        "seconds_per_epoch_mean": sum(r["epoch_seconds"] for r in history) / len(history),
        "train_wall_seconds": metrics["wall_seconds"],
        "test_error_curve": [r["test_error"] for r in history],
    }
    finish(out, part, rec,
           f"test error {metrics['test_error_percent']:.2f} % after {t.epochs} epochs (best"
           f" during training {metrics['best_test_error_percent']:.2f} %, read off the test set),"
           f" N_L {metrics['labels']}, {metrics['train_images']} training images,"
           f" {rec['images_per_s_mean']:.0f} images/s, {rec['seconds_per_epoch_mean']:.1f} s per"
           f" epoch{', augmented' if rec['augmentation'] else ''}; paper: {PAPER_ERROR[part]}")


def copy_run_files(run_dir: Path, out: Path, part: str) -> None:
    for src, dst in (("metrics.jsonl", f"{part}_metrics.jsonl"),
                     ("reconstructions.png", f"{part}_reconstructions.png")):
        if (run_dir / src).is_file():
            shutil.copyfile(run_dir / src, out / dst)


def part_mnist(a) -> None:
    """MNIST, N_L = 100, +KL+NN (Table 1), the paper's optimiser over the epochs that fit."""
    from drmm.config import preset
    from drmm.data import load_dataset

    device, name = setup(a)
    # ConvSmall, Table 6 weights 1 / 0.2 / 1 / 1, images in [0, 1]
    cfg = paper_schedule(preset("mnist"), device)
    cfg.train.labels, cfg.train.data_dir = 100, a.mnist_dir
    cfg.train.precision = a.precision
    data = load_dataset("mnist", a.mnist_dir)
    if a.smoke:
        data = subset(data, slice(0, 300), 300)
    run_training(a, "mnist", cfg, data, device, name,
                 extra={"dataset": "mnist", "row": "+KL+NN"})


def part_cifar10(a) -> None:
    """CIFAR-10 from the prepared subset, N_L = 4000, ConvLarge +KL+NN (Table 4)."""
    import numpy as np

    from drmm.config import preset
    from drmm.data import load_dataset

    device, name = setup(a)
    # ConvLarge (Table 4's network; the cifar10 preset trains conv_photo), Table 6 weights
    # 1 / 0.5 / 0.2 / 0.5
    cfg = paper_schedule(preset("cifar10"), device)
    cfg.model.arch = "conv_large"
    cfg.train.dataset, cfg.train.preprocess = f"npz:{a.cifar}", "standardize"
    cfg.train.labels, cfg.train.precision = 4000, a.precision
    data = load_dataset(cfg.train.dataset, preprocess="standardize")
    if a.smoke:  # 2 labeled images of each class, 10 unlabeled, 10 test images, batch 10
        y = data.y_train.numpy()
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)]
                                      + [np.flatnonzero(y < 0)[:10]]))
        data = subset(data, keep, 10)
        cfg.train.labels, cfg.train.batch_size = 20, 10
    cfg.train.augment = "crop_flip" if a.augment else "none"
    run_training(a, "cifar10", cfg, data, device, name,
                 extra={"dataset": cfg.train.dataset, "row": "+KL+NN",
                        "preprocess": "standardize"})


# ----------------------------------------------------------------------------------------------
# Bookkeeping


def mark(a) -> None:
    """After a part's process ended with exit code a.rc: its status, and the files of a
    training run that its timeout cut short."""
    out = Path(a.out)
    rec = read_results(out).get(a.part, {})
    if a.rc == 0 and rec.get("status") == "ok":
        return
    why = {124: "timed out", 137: "killed (timeout)"}.get(a.rc, f"failed (exit code {a.rc})")
    rec["status"] = why if a.rc else "ended without a record"
    rec["summary"] = f"{rec['status']}; see gpu_suite.log"
    run_dir = Path(rec.get("run_dir", "/nonexistent"))
    if (run_dir / "metrics.jsonl").is_file():  # the epochs finished before the cut
        copy_run_files(run_dir, out, a.part)
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rec["epochs_done"] = len(history)
        rec["test_error_curve"] = [r["test_error"] for r in history]
        if history:
            rec["summary"] += (f"; {len(history)} epochs done, last test error"
                               f" {100 * history[-1]['test_error']:.2f} %")
    record(out, a.part, rec)
    print(f"gpu_suite[{a.part}]: {rec['summary']}", flush=True)


def skip(a) -> None:
    record(Path(a.out), a.part, {"status": "skipped", "summary": a.why})


def summary(a) -> int:
    """Prints one line per part; returns 1 unless every part ended ok."""
    results = read_results(Path(a.out))
    print(f"gpu_suite: summary ({Path(a.out) / RESULTS})")
    for part in PARTS:
        rec = results.get(part, {"status": "missing", "summary": "no record"})
        print(f"  {part}: [{rec.get('status')}] {rec.get('summary', '')}")
    return int(any(results.get(part, {}).get("status") != "ok" for part in PARTS))


def fake_cifar(a) -> None:
    """A tiny random CIFAR-like npz: 4 labeled images per class, 40 unlabeled, 20 test."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.concatenate([np.repeat(np.arange(10), 4), np.full(40, -1)])
    np.savez_compressed(a.path, x_train=rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8),
                        y_train=y, x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
                        y_test=np.arange(20) % 10)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=[*PARTS, "mark", "skip", "summary", "fake-cifar"])
    p.add_argument("--out", default="/tmp/gpu_suite")
    p.add_argument("--work", default="/tmp/gpu_suite_work")
    p.add_argument("--deadline", type=float, default=math.inf, help="unix time to finish by")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--mnist-dir", help="folder with the MNIST .gz files (or a mnist/ folder)")
    p.add_argument("--cifar", help="the prepared CIFAR-10 npz")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="of the training runs")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--pytest-path", help="added to PYTHONPATH for pytest (a pytest.zip)")
    p.add_argument("--rc", type=int, help="mark: the part's exit code")
    p.add_argument("--for", dest="part_name", choices=PARTS, help="mark, skip: the part")
    p.add_argument("--why", help="skip: the reason")
    p.add_argument("--path", help="fake-cifar: the file to write")
    a = p.parse_args(argv)
    if a.part in ("mark", "skip"):
        a.part, action = a.part_name, a.part
        return (mark if action == "mark" else skip)(a)
    return {"correctness": part_correctness, "throughput": part_throughput, "mnist": part_mnist,
            "cifar10": part_cifar10, "summary": summary, "fake-cifar": fake_cifar}[a.part](a)


if __name__ == "__main__":
    sys.exit(main())
