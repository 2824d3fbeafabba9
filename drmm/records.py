"""What a run prints and logs: one record per epoch (metrics.jsonl, TensorBoard, the progress
line), the final metrics (metrics.json), and the run folder's files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from drmm.checkpoint import CHECKPOINT, ID_KEY
from drmm.errors import DRMMError
from drmm.evaluate import error_rate, worst_confusion
from drmm.files import atomic_write, remove_stale_temporaries
from drmm.metrics import METRICS_FORMAT, confusion_entry, percent

RUN_FILES = (CHECKPOINT, "metrics.json", "metrics.jsonl", "config.json", "labeled_indices.npy")


def epoch_record(epoch: int, means: dict[str, float], skipped: int, counts, lr: float,
                 seconds: float, wall0: float, images: int) -> dict:
    """The epoch's record: test error, mean loss terms, learning rate, speed. counts: the (K, K)
    confusion counts of the epoch's evaluation on the test set (None: none this epoch); images:
    the training images its steps passed (drmm.step.epoch_images)."""
    seconds = max(seconds, 1e-9)  # the epoch's training time, over every process that ran it
    return {
        "epoch": epoch + 1,
        # None: no test set, or an epoch between evaluations (train.eval_every)
        "test_error": error_rate(counts) if counts is not None else None,
        # (true class, predicted class, test images): the largest mix-up, e.g. a lost mode
        "worst_confusion": list(worst_confusion(counts)) if counts is not None else None,
        **{f"train_{k}": v for k, v in means.items()},
        "lr": lr,
        "skipped_batches": skipped,
        "epoch_seconds": seconds,
        "images_per_s": images / seconds,  # global batch: all ranks together
        "wall_seconds": time.perf_counter() - wall0,  # wall0: the run's start
    }


def start_run_files(out: Path, cfg, labeled: np.ndarray, history: list[dict],
                    run_id: str) -> None:
    """The run's config (with its id: config.json first, so that a folder of run files always
    holds it), labeled indices and epoch log, as the checkpoint (if any) has them."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:  # temporaries of writes that a crash cut short
        remove_stale_temporaries(out / name)
    atomic_write(out / "config.json", lambda f: f.write(
        json.dumps({**cfg.to_dict(), ID_KEY: run_id}, indent=2).encode()))
    atomic_write(out / "labeled_indices.npy", lambda f: np.save(f, labeled))
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


def final_metrics(history: list[dict], skipped: int, cfg, n_labeled: int, n_train: int,
                  class_names: list[str]) -> dict:
    """metrics.json's contents, in drmm.metrics' format (percentages, classes by name)."""
    t = cfg.train
    errors = [r["test_error"] for r in history if r["test_error"] is not None]
    return {
        "format": METRICS_FORMAT,
        "test_error_percent": percent(history[-1]["test_error"]),  # None: no test set
        # the lowest epoch's, read off the test set (a reference, not a result)
        "best_test_error_percent": percent(min(errors)) if errors else None,
        # the largest mix-up at the end; None without a test set
        "worst_confusion": confusion_entry(history[-1].get("worst_confusion"), class_names),
        "epochs": t.epochs,
        "labels": n_labeled,  # the labeled images used, however they were chosen
        "train_images": n_train,  # N_U: the unlabeled set, all training images trained on
        "seed": t.seed,
        "dataset": t.dataset,
        "arch": cfg.model.arch,
        "supervised_only": t.supervised_only,
        "skipped_batches": skipped,  # batches with a NaN / inf loss or gradient, not learned
        "wall_seconds": history[-1]["wall_seconds"],
        "test_error_percent_by_epoch": [percent(r["test_error"]) for r in history],
    }


def write_metrics(out: Path, metrics: dict) -> None:
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, indent=2).encode()))


def epoch_line(record: dict, means: dict[str, float], class_names: list[str],
               unevaluated: str | None = None) -> str:
    """The epoch's line on the terminal. unevaluated: what it says of a test set this epoch did
    not evaluate (None: there is no test set)."""
    error = (unevaluated if record["test_error"] is None and unevaluated
             else describe_error(record["test_error"]))
    return (f"epoch {record['epoch']}: {error}"
            f"{describe_confusion(record['worst_confusion'], class_names)}"
            f"  {fmt(means)}  ({record['images_per_s']:.0f} img/s)")


def after_nonfinite(last_saved: str | None, out: Path) -> str:
    if last_saved:
        return (f"the last good checkpoint (at the {last_saved}) is kept: lower --lr and start a"
                f" new run, or continue with --resume {out} --skip-nonfinite to skip such"
                " batches")
    return ("no checkpoint was written yet: lower --lr, or pass --skip-nonfinite to skip such"
            " batches")


def describe_error(err: float | None) -> str:
    """A fraction of test images misclassified, in words."""
    return describe_percent(percent(err))


def describe_percent(pct: float | None) -> str:
    return "no test set" if pct is None else f"test error {pct:.2f} %"


def describe_confusion(worst: list[int] | None, class_names: list[str]) -> str:
    if not worst or worst[2] == 0:
        return ""
    true, pred, n = worst
    return f" (most often: {n} test {class_names[true]} called {class_names[pred]})"


def fmt(means: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" if abs(v) < 1e5 else f"{k} {v:.3e}" for k, v in means.items())

