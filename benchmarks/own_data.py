"""End to end on a folder of real images, as a user with few labels would run drmm.

Builds a folder from MNIST, or from CIFAR-10 for colour photos (`--source cifar10`), read from
--data-dir or downloaded, in the layout `drmm train --dataset folder:DIR` takes, with PNG files:

    DIR/labeled/<class>/*.png     --per-class labeled training images per class (default 10)
    DIR/unlabeled/*.png           --unlabeled training images, no labels (default 20,000)
    held-out/<class>/*.png        --held-out images from the test set (default 2,000),
                                  outside DIR: the run never sees them

then, for the DRMM and for the --supervised-only baseline on the same folder, runs
`drmm train --dataset folder:DIR` and `drmm predict` on the held-out images, and computes the
accuracy from the CSV against the true labels (the class folder of each held-out file). The
folder's draw (which images are labeled, unlabeled, held out) and the training seed are both
--seed. Runs take the folder preset's settings unless --epochs or --drmm-flags say otherwise.
Prints a table and writes JSON.

    python benchmarks/own_data.py --data-dir ../shared/data --work runs/own-data \
        --out results/own_data.json
    python benchmarks/own_data.py --source cifar10 --per-class 100 --unlabeled 10000 \
        --data-dir ../shared/data --work runs/photos --out results/own_photos.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drmm.cli import main as drmm
from drmm.data import CIFAR10_NAMES
from drmm.data.cifar10 import load_cifar10
from drmm.data.mnist import load_mnist
from drmm.files import write_json
from drmm.metrics import read_metrics


def load_cifar(data_dir: str | None) -> dict[str, np.ndarray]:
    """CIFAR-10 as uint8 (N, 32, 32, 3) arrays: DIR/cifar10/cifar10.npz if there, else the
    official tarball (found in DIR or the cache, or downloaded)."""
    npz = Path(data_dir or ".") / "cifar10" / "cifar10.npz"
    if npz.is_file():
        with np.load(npz) as f:
            return {k: f[k] for k in f.files}
    return load_cifar10(data_dir)


SOURCES = {"mnist": (load_mnist, [str(c) for c in range(10)]),  # (loader, class folder names)
           "cifar10": (load_cifar, CIFAR10_NAMES)}


def build_folder(root: Path, data_dir: str | None, per_class: int, n_unlabeled: int,
                 n_held_out: int, seed: int, source: str = "mnist") -> tuple[Path, Path]:
    """Write the PNG folders (skipped if they are complete); returns (DIR, held-out folder)."""
    folder, held_out = root / "folder", root / "held-out"
    done = root / "built.json"
    spec = dict(per_class=per_class, n_unlabeled=n_unlabeled, n_held_out=n_held_out, seed=seed)
    spec |= {"source": source} if source != "mnist" else {}
    if done.is_file() and json.loads(done.read_text()) == spec:
        return folder, held_out
    load, names = SOURCES[source]
    arrays = load(data_dir)
    arrays["y_train"], arrays["y_test"] = (arrays[k].astype(np.int64) for k in ("y_train",
                                                                                 "y_test"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(arrays["y_train"]))
    labeled = np.concatenate([order[arrays["y_train"][order] == c][:per_class] for c in range(10)])
    rest = np.setdiff1d(order, labeled)
    unlabeled = rng.choice(rest, size=n_unlabeled, replace=False)
    test = rng.choice(len(arrays["y_test"]), size=n_held_out, replace=False)
    for i in labeled:
        label = names[arrays["y_train"][i]]
        save_png(arrays["x_train"][i], folder / "labeled" / label / f"{i}.png")
    for i in unlabeled:  # flat, no hint of the label in the path
        save_png(arrays["x_train"][i], folder / "unlabeled" / f"{i}.png")
    for i in test:
        save_png(arrays["x_test"][i], held_out / names[arrays["y_test"][i]] / f"test{i}.png")
    done.write_text(json.dumps(spec))
    return folder, held_out


def save_png(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def accuracy_from_csv(path: Path) -> tuple[float, int]:
    """Share of rows whose predicted class is the class folder of the image file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    right = sum(Path(r["image"]).parent.name == r["predicted"] for r in rows)
    return right / len(rows), len(rows)


def train_or_reuse(out: Path, flags: list[str]) -> dict:
    """`drmm train --out OUT --quiet FLAGS`, unless OUT holds a finished run (reused as it is);
    a killed run is resumed from its checkpoint. The run's metrics.json."""
    if not (out / "metrics.json").is_file():
        args = ["train", "--out", str(out), "--quiet", *flags]
        if (out / "checkpoint.pt").is_file():
            args += ["--resume", str(out)]
        if drmm(args) != 0:
            raise SystemExit(f"drmm train failed for {out}")
    return read_metrics(out)  # any drmm version's


def run(name: str, folder: Path, held_out: Path, work: Path, extra: list[str]) -> dict:
    """drmm train on the folder, then drmm predict on the held-out images; times both."""
    out = work / name
    t0 = time.perf_counter()
    metrics = train_or_reuse(out, ["--dataset", f"folder:{folder}", "--no-tensorboard", *extra])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    csv_path = work / f"{name}-predictions.csv"
    if drmm(["predict", "--checkpoint", str(out), "--images", str(held_out),
             "--out", str(csv_path), "--quiet"]) != 0:
        raise SystemExit(f"drmm predict failed for {name}")
    predict_s = time.perf_counter() - t0
    acc, n = accuracy_from_csv(csv_path)
    return {"run": name, "flags": extra, "held_out_images": n, "accuracy": acc,
            "error": 1 - acc, "labels": metrics["labels"], "epochs": metrics["epochs"],
            "train_wall_s": metrics["wall_seconds"], "this_call_train_s": train_s,
            "predict_wall_s": predict_s}


def main(args) -> dict:
    work = Path(args.work)
    t0 = time.perf_counter()
    folder, held_out = build_folder(work, args.data_dir, args.per_class, args.unlabeled,
                                    args.held_out, args.seed, args.source)
    build_s = time.perf_counter() - t0
    common = ["--seed", str(args.seed)] + (["--epochs", str(args.epochs)] if args.epochs else [])
    runs = {"drmm": (args.name, shlex.split(args.drmm_flags)),
            "supervised-only": (args.supervised_name, ["--supervised-only"])}
    results = [run(name, folder, held_out, work, common + extra)
               for kind, (name, extra) in runs.items() if kind in args.runs]
    report = {"folder": str(folder), "held_out": str(held_out), "build_s": build_s,
              "per_class": args.per_class, "unlabeled": args.unlabeled,
              "held_out_images": args.held_out, "source": args.source, "seed": args.seed,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "runs": results}
    print(f"{args.source} folder built in {build_s:.0f} s: {10 * args.per_class} labeled,"
          f" {args.unlabeled}"
          f" unlabeled, {args.held_out} held out")
    print("| run | held-out accuracy | error | training wall time | predict wall time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['run']} | {100 * r['accuracy']:.2f} % | {100 * r['error']:.2f} % |"
              f" {r['train_wall_s'] / 60:.1f} min | {r['predict_wall_s']:.1f} s |")
    if args.out:
        write_json(args.out, report)
    return report


def folder_args(p: argparse.ArgumentParser, work: str, unlabeled: int, held_out: int) -> None:
    """The options of the folder build_folder writes, and where."""
    p.add_argument("--data-dir", help="folder with the source data set (default: download)")
    p.add_argument("--work", default=work, help="folder for images and runs")
    p.add_argument("--per-class", type=int, default=10, help="labeled images per class")
    p.add_argument("--unlabeled", type=int, default=unlabeled, help="unlabeled training images")
    p.add_argument("--held-out", type=int, default=held_out, help="held-out test images")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    folder_args(p, "runs/own-data", unlabeled=20000, held_out=2000)
    p.add_argument("--source", choices=sorted(SOURCES), default="mnist",
                   help="the data set the folder is cut from: mnist (grayscale) or cifar10")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="folder draw and training seed")
    p.add_argument("--runs", default="drmm,supervised-only",
                   help="which runs, comma-separated: drmm, supervised-only")
    p.add_argument("--drmm-flags", default="",
                   help='flags the DRMM run adds, e.g. "--augment translate --labeled-batch 20"')
    p.add_argument("--name", default="drmm", help="the DRMM run's folder name under --work")
    p.add_argument("--supervised-name", default="supervised-only",
                   help="the --supervised-only run's folder name under --work (a finished run"
                        " there is reused, so name runs of other settings apart)")
    p.add_argument("--out", help="JSON file to write")
    args = p.parse_args(argv)
    args.runs = args.runs.split(",")
    return args


if __name__ == "__main__":
    main(parse_args())
