"""Prepare `.gpu_data/`, the data that travels with the working tree to a GPU machine.

The GPU machine reads no network and has no package registry, and the working tree it gets
(with the ignored folders named in the device tool's `carry`) must stay under 64 MiB in all.
This script fills `.gpu_data/` (ignored by git) within a byte budget (default 40 MiB):

- mnist/: the four original MNIST .gz files, copied from --shared (md5-checked by the loader).
- cifar10_subset.npz (np.savez_compressed, the `npz:PATH` format of drmm/data/npz.py): all
  4,000 labeled images of the class-balanced N_L = 4000 split of CIFAR-10's training set
  (drmm.data.split.labeled_split, seed 0), as many other training images as fit, with label -1
  (unlabeled), and --test-images test images (class-balanced, seeded). train_index / test_index
  hold each image's index in the original CIFAR-10 arrays.
- pytest.zip: pytest and its pure-Python dependencies from this environment, importable from
  the zip (PYTHONPATH=.gpu_data/pytest.zip), for the suite's CPU tests on a machine without
  pytest; --no-pytest leaves it out.
- README.txt: what was kept, and how.

The compressed size is measured, not guessed: the number of unlabeled images is estimated from
a sample, then cut until the whole folder fits the budget.

    python -m benchmarks.gpu.gpu_data                      # --shared ../shared/data --out .gpu_data
    python -m benchmarks.gpu.gpu_data --budget-mib 50 --test-images 5000
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

from drmm.data.npz import load_npz
from drmm.data.split import labeled_split

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_NAME = "cifar10_subset.npz"
# pytest 9 and what it imports at start-up, all pure Python (exceptiongroup and tomli are only
# needed below Python 3.11).
PYTEST_PACKAGES = ("_pytest", "pytest", "pluggy", "iniconfig", "packaging", "pygments", "py.py")
README_RESERVE = 4096  # bytes kept back for README.txt, written last


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def copy_mnist(shared: Path, out: Path) -> int:
    src = shared / "mnist" if (shared / "mnist").is_dir() else shared
    missing = [n for n in MNIST_FILES if not (src / n).is_file()]
    if missing:
        sys.exit(f"gpu_data: {src} lacks the MNIST files {missing}")
    (out / "mnist").mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        shutil.copyfile(src / name, out / "mnist" / name)
    return sum((out / "mnist" / n).stat().st_size for n in MNIST_FILES)


def zip_pytest(out: Path) -> int:
    """pytest and its start-up imports, zipped (Python imports packages from a zip file)."""
    try:
        import pytest
    except ImportError:
        print("gpu_data: pytest is not installed here; pytest.zip left out")
        return 0
    site = Path(pytest.__file__).resolve().parents[1]
    path = out / "pytest.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in PYTEST_PACKAGES:
            p = site / name
            if not p.exists():
                continue
            files = [p] if p.is_file() else sorted(
                f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
            for f in files:
                z.write(f, f.relative_to(site))
        # dist-info: pluggy finds pytest's plugins through the installed distributions' metadata
        for info in sorted(site.glob("*.dist-info")):
            if info.name.split("-")[0].lower() in {"pytest", "pluggy", "iniconfig", "packaging",
                                                    "pygments"}:
                for f in sorted(info.rglob("*")):
                    if f.is_file():
                        z.write(f, f.relative_to(site))
    return path.stat().st_size


def compressed_size(**arrays) -> int:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return len(buf.getvalue())


def write_subset(path: Path, x_train, y_train, x_test, y_test, lab, unl, test) -> int:
    """Write the subset: the labeled and unlabeled training images in their original order."""
    train_index = np.sort(np.concatenate([lab, unl]))
    y = np.where(np.isin(train_index, lab), y_train[train_index].astype(np.int64), -1)
    np.savez_compressed(path, x_train=x_train[train_index], y_train=y,
                        x_test=x_test[test], y_test=y_test[test].astype(np.int64),
                        train_index=train_index, test_index=test)
    return path.stat().st_size


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default="../shared/data",
                   help="folder holding mnist/*.gz and cifar10/cifar10.npz")
    p.add_argument("--out", default=".gpu_data", help="folder to fill (emptied first)")
    p.add_argument("--budget-mib", type=float, default=40.0, help="size limit of --out, MiB")
    p.add_argument("--labels", type=int, default=4000, help="N_L: labeled CIFAR-10 images")
    p.add_argument("--test-images", type=int, default=2000,
                   help="CIFAR-10 test images kept (class-balanced; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seeds the labeled split and the subsets")
    p.add_argument("--no-pytest", action="store_true", help="leave pytest.zip out")
    return p.parse_args(argv)


def fit_subset(path: Path, arrays: tuple, lab, order, test, room: int) -> tuple[int, int, int]:
    """Write the subset with as many unlabeled images (the first of `order`) as fit in `room`
    bytes: (unlabeled images, bytes written, writes tried)."""
    x_train, y_train, x_test, y_test = arrays
    fixed = compressed_size(x_train=x_train[lab], x_test=x_test[test])  # labeled + test
    if fixed > room:
        sys.exit(f"gpu_data: the {len(lab)} labeled and {len(test)} test CIFAR-10 images take"
                 f" {fixed / 2**20:.1f} MiB compressed, more than the {room / 2**20:.1f} MiB left"
                 " of the budget; raise --budget-mib or lower --test-images")
    sample = order[:1000]
    per_image = compressed_size(x=x_train[sample]) / len(sample)
    n_unl = min(len(order), int((room - fixed) / per_image))
    tries = 0
    while True:  # the estimate is close; cut until the measured size fits
        tries += 1
        size = write_subset(path, x_train, y_train, x_test, y_test, lab, order[:n_unl], test)
        over = size - room
        if over <= 0:
            return n_unl, size, tries
        if n_unl == 0:
            sys.exit("gpu_data: the labeled and test images alone do not fit the budget")
        n_unl = max(0, n_unl - int(over / per_image * 1.05) - 10)


def readme(args, kept: dict, k: int) -> str:
    """README.txt: what the folder holds, and how each part was chosen."""
    budget, size, mnist_bytes = kept["budget_bytes"], kept["cifar_bytes"], kept["mnist_bytes"]
    n_lab, n_unl, n_test = kept["cifar_labeled"], kept["cifar_unlabeled"], kept["cifar_test"]
    return f"""\
Prepared by benchmarks/gpu/gpu_data.py for benchmarks/gpu/gpu_suite.sh (carry this folder).

mnist/: the four original MNIST files ({mnist_bytes} bytes), unchanged.
{CIFAR_NAME} ({size} bytes), uint8 images, keys x_train y_train x_test y_test train_index
test_index (indices into the original CIFAR-10 training / test arrays):
- x_train: {n_lab + n_unl} of the 50,000 CIFAR-10 training images, in their original order:
  all {n_lab} images of the class-balanced N_L = {args.labels} split
  (drmm.data.split.labeled_split(y_train, {args.labels}, {k}, seed={args.seed}): the split
  `drmm train --dataset cifar10 --labels {args.labels} --seed {args.seed}` uses), labeled, and
  {n_unl} other training images (the first of a seeded permutation,
  numpy default_rng([{args.seed}, 2])), labeled -1 (unlabeled).
  The paper's unlabeled set is all 50,000 images: this one is {n_lab + n_unl}.
- x_test: {n_test} of the 10,000 test images, {n_test // k if k else 0} per class
  (labeled_split(y_test, {n_test}, {k}, seed={args.seed})): test errors carry the sampling
  error of {n_test} images.
pytest.zip: {"pytest and its dependencies, PYTHONPATH=.gpu_data/pytest.zip"
             if kept["pytest_zip_bytes"] else "absent"}.
Budget {args.budget_mib} MiB ({budget} bytes); kept: {json.dumps(kept)}
"""


def main(argv=None) -> dict:
    args = parse_args(argv)
    shared, out = Path(args.shared), Path(args.out)
    budget = int(args.budget_mib * 2**20)
    cifar_file = shared / "cifar10" / "cifar10.npz"
    if not cifar_file.is_file():
        sys.exit(f"gpu_data: {cifar_file} not found; pass --shared")
    if out.exists():
        shutil.rmtree(out)  # a stale, bigger subset must not stay behind
    out.mkdir(parents=True)

    mnist_bytes = copy_mnist(shared, out)
    pytest_bytes = 0 if args.no_pytest else zip_pytest(out)
    with np.load(cifar_file) as f:
        arrays = tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    y_train, y_test = arrays[1], arrays[3]
    k = int(y_train.max()) + 1
    lab = labeled_split(y_train, args.labels, k, args.seed)  # the N_L split training draws
    n_test = args.test_images - args.test_images % k
    test = labeled_split(y_test, n_test, k, args.seed) if n_test else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(y_train)), lab)
    order = np.random.default_rng([args.seed, 2]).permutation(rest)  # the unlabeled, in turn

    room = budget - folder_bytes(out) - README_RESERVE  # for the npz
    path = out / CIFAR_NAME
    n_unl, size, tries = fit_subset(path, arrays, lab, order, test, room)

    check = load_npz(path)  # drmm's own checks of the format, then ours
    n_labeled = int((check["y_train"] >= 0).sum())
    if n_labeled != len(lab) or len(check["y_train"]) != len(lab) + n_unl:
        sys.exit(f"gpu_data: {path} holds {n_labeled} labeled of {len(check['y_train'])} training"
                 f" images, not {len(lab)} of {len(lab) + n_unl}")
    kept = {
        "budget_bytes": budget,
        "mnist_bytes": mnist_bytes,
        "pytest_zip_bytes": pytest_bytes,
        "cifar_bytes": size,
        "cifar_labeled": len(lab),
        "cifar_unlabeled": n_unl,
        "cifar_train": len(lab) + n_unl,
        "cifar_test": len(test),
        "seed": args.seed,
        "write_tries": tries,
    }
    (out / "README.txt").write_text(readme(args, kept, k))
    kept["total_bytes"] = folder_bytes(out)
    print(f"gpu_data: {out}: MNIST {mnist_bytes / 2**20:.1f} MiB, CIFAR-10 {len(lab)} labeled +"
          f" {n_unl} unlabeled training images and {len(test)} test images"
          f" {size / 2**20:.1f} MiB, pytest.zip {pytest_bytes / 2**20:.1f} MiB;"
          f" total {kept['total_bytes'] / 2**20:.2f} of {args.budget_mib} MiB")
    return kept


if __name__ == "__main__":
    main()
