"""The GPU suite's parts 3 and 4: MNIST (Table 1) and CIFAR-10 (Table 4) trained with the
paper's optimiser over as many epochs as fit in the part's time, after timing the step on this
device (plan_epochs, which benchmarks/gpu/gpu_cifar10_full.py also plans with)."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from benchmarks.common import device_and_name, subset, sync
from benchmarks.gpu.suite_base import finish, left, paper_schedule, record

PAPER_ERROR = {"mnist": "0.57 % (Table 1, N_L = 100, +KL+NN, 500 epochs)",
               "cifar10": "Table 4, N_L = 4000, +KL+NN, 500 epochs on all 50,000 images"}


def plan_epochs(a, cfg, data, device, max_epochs: int) -> dict:
    """Seconds per training step and per evaluation on this device, and the number of epochs
    that fit in the time left (at least 1, at most max_epochs; 1 with --smoke)."""
    import torch

    from benchmarks.common import train_step
    from drmm.evaluate import test_error
    from drmm.model import DRMM
    from drmm.optim import make_optimizer
    from drmm.step import Objective, make_batch, step_weights

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
                   weights, autocast)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_timed):
        train_step(stepper, model, opt, sched, make_batch(cfg, x, y, order, 0, weights),
                   weights, autocast)
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

    device, name = device_and_name(a.smoke)
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

    device, name = device_and_name(a.smoke)
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
