"""The labeling loop: which 50 images to label next, by `drmm suggest`'s scores, against random.

    python -m benchmarks.own_data.label_loop --dataset digits --seeds 0 1 2 3 4 \
        --strategies render+margin margin random --work runs/label_loop \
        --out results/label_loop.json

For each seed S: a run with --labels 50 (the preset's schedule, `--seed S`), then for each
strategy (a --score of drmm suggest: render+margin, margin, entropy or random) the run's
suggestions of --n more images (drmm.suggest's functions, as `drmm suggest` picks them), and a
new run from scratch with --labeled-indices = the 50 and the n (the built-in data sets carry
every label, so this simulates a labeler who labels exactly the suggested images), on the same
seed. Records each run's end-of-training test error (never the best epoch) and, per strategy,
the true classes of the picked images and how many of them the 50-label run got wrong; prints
a table (strategy x seed, mean +- std) and writes JSON. Run folders under --work are kept: a
finished run is read back, a killed one resumed, so an interrupted loop goes on where it
stopped. Tiny mode (a test): --epochs 1 --seeds 0 --unlabeled 300.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from drmm.checkpoint import CHECKPOINT, load_trained_model
from drmm.config import preset
from drmm.files import write_json
from drmm.metrics import read_metrics
from drmm.suggest import SCORES, labeled_union, load_training_set, suggest, write_indices
from drmm.train import train


def config(dataset: str, seed: int, epochs: int | None, data_dir: str | None, **train_kw):
    cfg = preset(dataset, quiet=True)
    cfg.train.seed, cfg.train.tensorboard = seed, False
    if epochs is not None:
        cfg.train.epochs = epochs
    if data_dir is not None:
        cfg.train.data_dir = data_dir
    for k, v in train_kw.items():
        setattr(cfg.train, k, v)
    return cfg


def run(cfg, out: Path) -> dict:
    """The run's final metrics: read back if finished, resumed if killed, else trained."""
    if (out / "metrics.json").is_file():
        return read_metrics(out)  # any drmm version's
    return train(cfg, out, resume=(out / CHECKPOINT).is_file(), progress=False)


def loop_seed(a, seed: int) -> list[dict]:
    """The 50-label run of one seed and a run per strategy; one record per run."""
    work = Path(a.work) / f"seed{seed}"
    started = time.perf_counter()
    base_cfg = config(a.dataset, seed, a.epochs, a.data_dir, labels=a.labels,
                      unlabeled=a.unlabeled)
    base = run(base_cfg, work / "base")
    records = [{"seed": seed, "strategy": "base", "labels": base["labels"],
                "test_error": base["test_error_percent"] / 100,
                "minutes": base["wall_seconds"] / 60}]
    print(f"label_loop: seed {seed}, {base['labels']} labels: test error"
          f" {base['test_error_percent']:.2f} %", flush=True)
    model, cfg, state = load_trained_model(work / "base")
    ts = load_training_set(cfg, state, cfg.train.data_dir, verify=cfg.train.verify)
    pool = ts.pool()
    y = ts.data.y_train.numpy()
    for strategy in a.strategies:
        sug = suggest(model, cfg, ts.data.x_train, pool, a.n, strategy, seed=seed)
        npy = work / f"{strategy}.npy"
        write_indices(npy, labeled_union(ts.labeled, sug))
        t0 = time.perf_counter()
        metrics = run(config(a.dataset, seed, a.epochs, a.data_dir, labels=None,
                             labeled_indices=str(npy), unlabeled=a.unlabeled), work / strategy)
        picked = y[sug.indices]
        records.append({
            "seed": seed, "strategy": strategy, "labels": metrics["labels"],
            "test_error": metrics["test_error_percent"] / 100,
            "minutes": metrics["wall_seconds"] / 60,
            "picked_true_classes": np.bincount(picked, minlength=len(ts.data.class_names)
                                               ).tolist(),
            "picked_wrong_by_base": int((sug.predicted != picked).sum()),
            "seconds": time.perf_counter() - t0})
        print(f"label_loop: seed {seed}, {strategy}: {metrics['labels']} labels, test error"
              f" {metrics['test_error_percent']:.2f} % ({records[-1]['picked_wrong_by_base']} of"
              f" the {a.n} picked were misclassified by the {base['labels']}-label run)",
              flush=True)
    print(f"label_loop: seed {seed} took {(time.perf_counter() - started) / 60:.1f} min",
          flush=True)
    return records


def summarise(records: list[dict], strategies: list[str], seeds: list[int]) -> dict:
    summary = {}
    for strategy in ["base", *strategies]:
        errs = [100 * r["test_error"] for r in records if r["strategy"] == strategy]
        summary[strategy] = {"mean": statistics.mean(errs),
                             "std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
                             "per_seed": errs}
    names = {"base": "none (the first labels)"}
    print("| strategy | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- std, % |")
    print("| --- |" + " ---: |" * (len(seeds) + 1))
    for strategy, s in summary.items():
        cells = " | ".join(f"{e:.2f}" for e in s["per_seed"])
        print(f"| {names.get(strategy, strategy)} | {cells} | {s['mean']:.2f} +- {s['std']:.2f} |")
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="a built-in data set (default digits)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--strategies", nargs="+", choices=SCORES,
                   default=["render+margin", "margin", "random"])
    p.add_argument("--labels", type=int, default=50, help="labels of the first run (default 50)")
    p.add_argument("--n", type=int, default=50, help="images each strategy adds (default 50)")
    p.add_argument("--epochs", type=int, help="epochs of every run (default: the preset's)")
    p.add_argument("--unlabeled", type=int,
                   help="train on a seeded subset of this many training images (a proxy)")
    p.add_argument("--data-dir", help="local copies of the data set")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--work", required=True, help="folder for the run folders (kept)")
    p.add_argument("--out", required=True, help="the JSON file to write")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    records = [r for seed in a.seeds for r in loop_seed(a, seed)]
    summary = summarise(records, a.strategies, a.seeds)
    result = {"dataset": a.dataset, "labels": a.labels, "n": a.n, "seeds": a.seeds,
              "unlabeled": a.unlabeled,
              "strategies": a.strategies,
              "epochs": a.epochs if a.epochs is not None else preset(a.dataset, quiet=True
                                                                     ).train.epochs,
              "summary": summary, "runs": records}
    write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
