"""The labeling round trip with drmm's own commands, on a folder of MNIST PNG files.

    OMP_NUM_THREADS=1 python -m benchmarks.own_data.label_round_trip --data-dir ../shared/data \
        --work runs/round-trip --out results/label_round_trip.json

1. builds DIR (benchmarks/own_data/own_data.py's layout: --per-class labeled images per class,
   --unlabeled unlabeled ones) and a held-out folder of test images in class sub-folders;
2. `drmm train --dataset folder:DIR` (the folder preset, --epochs), and `drmm predict` on the
   held-out folder, whose class sub-folders give predict's `true` column: the error before;
3. `drmm suggest --n N`: to_label.csv with its empty label column, to_label.png / .html;
4. the person: each row's label column filled with the image's true class (MNIST's label; the
   file name is its MNIST index), as a spreadsheet would save it;
5. `drmm label to_label.csv --folder DIR`: the files move into DIR/labeled/<label>/;
6. `drmm train` again on the changed folder, from scratch, same seed, and predict: the error
   after.

Sized to take about ten minutes on one thread. Records both errors, the labels, what moved, how
many of the suggested images round 0 called wrongly, the times and the CPU; prints a line each.
"""

from __future__ import annotations

import argparse
import csv
import platform
import shutil
import time
from pathlib import Path

import torch

from benchmarks.own_data.own_data import build_folder
from drmm.cli import main as drmm
from drmm.data.mnist import load_mnist
from drmm.files import write_json
from drmm.metrics import read_metrics


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: list[str]) -> None:
    if drmm(args) != 0:
        raise SystemExit(f"drmm {' '.join(args)} failed")


def train_and_predict(folder: Path, held_out: Path, out: Path, a) -> dict:
    """drmm train from scratch (the folder preset) and drmm predict on the held-out images."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run(["train", "--dataset", f"folder:{folder}", "--seed", str(a.seed), "--epochs",
         str(a.epochs), "--no-tensorboard", "--out", str(out), "--quiet"])
    train_s = time.perf_counter() - t0
    predictions = out / "held_out.csv"
    run(["predict", "--checkpoint", str(out), "--images", str(held_out), "--out",
         str(predictions), "--quiet"])
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    wrong = sum(r["true"] != r["predicted"] for r in rows)
    return {"error_percent": 100 * wrong / len(rows), "held_out_images": len(rows),
            "labels": read_metrics(out)["labels"], "train_seconds": train_s}


def fill_labels(csv_path: Path, y_train) -> list[dict]:
    """The person's part: every row's label column gets the image's true class."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = str(int(y_train[int(Path(r["image"]).stem)]))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(a) -> dict:
    work = Path(a.work)
    started = time.perf_counter()
    built, held_out = build_folder(work / "data", a.data_dir, a.per_class, a.unlabeled,
                                   a.held_out, a.seed)
    folder = work / "folder"  # a copy: the built one stays as drawn, for a rerun
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(built, folder)
    before = train_and_predict(folder, held_out, work / "round0", a)
    print(f"label_round_trip: before, {before['labels']} labels:"
          f" {before['error_percent']:.2f} % held-out error", flush=True)
    to_label = work / "to_label.csv"
    run(["suggest", "--checkpoint", str(work / "round0"), "--n", str(a.n), "--out",
         str(to_label)])
    rows = fill_labels(to_label, load_mnist(a.data_dir)["y_train"])
    run(["label", str(to_label), "--folder", str(folder)])
    after = train_and_predict(folder, held_out, work / "round1", a)
    print(f"label_round_trip: after, {after['labels']} labels:"
          f" {after['error_percent']:.2f} % held-out error", flush=True)
    report = {"seed": a.seed, "per_class": a.per_class, "unlabeled": a.unlabeled,
              "held_out": a.held_out, "n": a.n, "epochs": a.epochs, "before": before,
              "after": after, "moved_per_class": {c: sum(r["label"] == c for r in rows)
                                                  for c in sorted({r["label"] for r in rows})},
              "suggested_called_wrongly_before": sum(r["label"] != r["predicted"] for r in rows),
              "total_seconds": time.perf_counter() - started, "cpu": cpu_name(),
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    if a.out:
        write_json(a.out, report)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="folder with mnist/ (default: download)")
    p.add_argument("--work", default="runs/round-trip", help="folder for images and runs")
    p.add_argument("--per-class", type=int, default=5, help="labeled images per class at first")
    p.add_argument("--unlabeled", type=int, default=3000, help="unlabeled training images")
    p.add_argument("--held-out", type=int, default=1000, help="held-out test images")
    p.add_argument("--n", type=int, default=50, help="images to suggest and label")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each training run")
    p.add_argument("--seed", type=int, default=0, help="folder draw and training seed")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
