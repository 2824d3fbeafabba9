"""The labeling loop on a folder of PNG files, as a user runs it: train, suggest, move, retrain.

    python -m benchmarks.own_data.folder_label_loop --data-dir ../shared/data --seed 8 \
        --work runs/folder-loop --out results/folder_label_loop.json

Builds an MNIST-as-PNG folder (own_data.py's layout: DIR/labeled/<class>/ with
--per-class images each, DIR/unlabeled/ with --unlabeled images, a held-out folder outside DIR
from the test set), then for each --strategies entry (a `drmm suggest --score`, default margin):

1. `drmm train --dataset folder:DIR --seed S` (the folder preset) and `drmm predict` on the
   held-out images: round 0's error;
2. `drmm suggest --checkpoint RUN --n N --out to_label.csv --score SCORE`;
3. the labeler: each file the CSV names is moved from DIR/unlabeled/ into DIR/labeled/<its true
   class>/ (MNIST's label of the image; the file name is its MNIST index);
4. `drmm train` again on the changed folder, from scratch, same seed, and predict: round 1.

Each strategy works on its own copy of the folder, so they start from the same round 0 run.
Records the held-out errors, the classes moved, how many of them round 0 predicted wrongly,
and the times; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import torch

from benchmarks.common import train_or_reuse
from benchmarks.own_data.own_data import accuracy_from_csv, build_folder, folder_args
from drmm.cli import main as drmm
from drmm.data.mnist import load_mnist
from drmm.files import write_json


def train_and_score(folder: Path, held_out: Path, out: Path, seed: int, extra: list[str]) -> dict:
    """drmm train (reused if finished, resumed if killed) and drmm predict on the held-out
    images."""
    t0 = time.perf_counter()
    metrics = train_or_reuse(out, ["--dataset", f"folder:{folder}", "--seed", str(seed),
                                   "--no-tensorboard", *extra])
    train_s = time.perf_counter() - t0
    predictions = out.with_name(out.name + "-predictions.csv")
    if drmm(["predict", "--checkpoint", str(out), "--images", str(held_out), "--out",
             str(predictions), "--quiet"]) != 0:
        raise SystemExit(f"drmm predict failed for {out}")
    accuracy, n = accuracy_from_csv(predictions)
    return {"error": 1 - accuracy, "held_out_images": n, "labels": metrics["labels"],
            "train_wall_s": metrics["wall_seconds"], "this_call_s": train_s}


def move_suggested(folder: Path, suggestions: Path, y_train) -> list[dict]:
    """The labeler: each suggested file goes into labeled/<true class>/; returns what moved."""
    with open(suggestions, newline="") as f:
        rows = list(csv.DictReader(f))
    moved = []
    for r in rows:
        source = folder / r["image"]  # unlabeled/<MNIST index>.png
        true = str(int(y_train[int(source.stem)]))
        target = folder / "labeled" / true / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        moved.append({"image": r["image"], "true": true, "predicted": r["predicted"]})
    return moved


def loop(a, strategy: str, base: Path, held_out: Path, y_train, round0: Path, first: dict,
         extra: list[str]) -> dict:
    """One strategy's round 1, from the shared round-0 run `round0` (its figures: `first`)."""
    work = Path(a.work) / strategy
    folder = work / "folder"
    if not (work / "moved.json").is_file():  # a fresh copy of round 0's folder
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, folder)
    if not (work / "moved.json").is_file():
        suggestions = work / "to_label.csv"
        if drmm(["suggest", "--checkpoint", str(round0), "--n", str(a.n), "--out",
                 str(suggestions), "--score", strategy, "--seed", str(a.seed)]) != 0:
            raise SystemExit(f"drmm suggest failed for {strategy}")
        # round 0's rows name files relative to its own folder: the copy has the same names
        (work / "moved.json").write_text(json.dumps(move_suggested(folder, suggestions,
                                                                   y_train)))
    moved = json.loads((work / "moved.json").read_text())
    second = train_and_score(folder, held_out, work / "round1", a.seed, extra)
    return {"strategy": strategy, "round0": first, "round1": second, "moved": moved,
            "moved_classes": sorted(m["true"] for m in moved),
            "moved_mispredicted": sum(m["true"] != m["predicted"] for m in moved)}


def main(a) -> dict:
    work = Path(a.work)
    base, held_out = build_folder(work / "data", a.data_dir, a.per_class, a.unlabeled,
                                  a.held_out, a.seed)
    y_train = load_mnist(a.data_dir)["y_train"]
    extra = ["--epochs", str(a.epochs)] if a.epochs else []
    round0 = work / "round0"  # one round-0 run for every strategy, trained and scored once
    first = train_and_score(base, held_out, round0, a.seed, extra)
    results = [loop(a, s, base, held_out, y_train, round0, first, extra) for s in a.strategies]
    report = {"seed": a.seed, "per_class": a.per_class, "unlabeled": a.unlabeled,
              "held_out": a.held_out, "n": a.n, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "results": results}
    print("| strategy | round 0 error (labels) | round 1 error (labels) | moved wrongly predicted |"
          " round 1 minutes |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        r0, r1 = r["round0"], r["round1"]
        print(f"| {r['strategy']} | {100 * r0['error']:.2f} % ({r0['labels']}) |"
              f" {100 * r1['error']:.2f} % ({r1['labels']}) | {r['moved_mispredicted']}"
              f" of {len(r['moved'])} | {r1['train_wall_s'] / 60:.1f} |")
    if a.out:
        write_json(a.out, report)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    folder_args(p, "runs/folder-loop", unlabeled=10000, held_out=1000)
    p.add_argument("--n", type=int, default=50, help="images to label per round")
    p.add_argument("--strategies", nargs="+", default=["margin"],
                   help="drmm suggest --score values, each on its own copy of the folder")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=8, help="folder draw and training seed")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
