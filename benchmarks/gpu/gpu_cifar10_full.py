"""CIFAR-10 with 4,000 labels on all 50,000 training images, on a lent GPU machine: the
`cifar10` preset (the photo recipe, conv_photo) over as many epochs as fit in --minutes.

The GPU machine has no network, and one device call carries at most 64 MiB with the working
tree. CIFAR-10's four arrays are 184 MB (PNG, lzma and lzma on pixel differences leave 71-76 %
of that on 2,000 training images: still more than one call), so they travel as raw parts of at
most --part-mib each, one part per call, into the same warm machine, which keeps ignored files
between calls:

    python -m benchmarks.gpu.gpu_cifar10_full split    # here: .gpu_cifar/manifest.json, part*.bin
    # then device calls back to back (a machine left idle is given back, with the parts):
    #   carry [".gpu_cifar/manifest.json", ".gpu_cifar/part0.bin"], command "ls .gpu_cifar"
    #   ... the same for part1.bin and part2.bin, then with part3.bin:
    #   python3 -m benchmarks.gpu.gpu_cifar10_full train --minutes 8 --out $OUT

`train` checks each part's sha256 (a missing or damaged part is named, with the fix), joins
them into WORK/cifar10.npz, which drmm's loader checks against the official images' sha256,
times a training step and an evaluation on the device, sets the epochs that fit (the cosine
schedule then ends with the run), trains, and writes metrics.json, metrics.jsonl, config.json
and gpu_cifar10_full.json (the plan, the device, the end-of-training test error) to --out.
--smoke runs `train` on the CPU on a few hundred images for one epoch (tests/test_gpu_suite.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import device_and_name, subset
from benchmarks.gpu.suite_training import plan_epochs
from drmm.files import atomic_write, write_json

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
MANIFEST = "manifest.json"


def split(arrays: dict[str, np.ndarray], out: Path, part_bytes: int) -> dict:
    """The arrays' bytes, one after another, cut into out/part{k}.bin of at most part_bytes;
    out/manifest.json holds each array's dtype and shape and each part's size and sha256."""
    blob = b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in ARRAYS)
    if out.exists():
        shutil.rmtree(out)  # parts of an earlier split must not mix with these
    out.mkdir(parents=True)
    parts = []
    for k, start in enumerate(range(0, len(blob), part_bytes)):
        chunk = blob[start:start + part_bytes]
        (out / f"part{k}.bin").write_bytes(chunk)
        parts.append({"file": f"part{k}.bin", "bytes": len(chunk),
                      "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"arrays": [{"name": k, "dtype": str(arrays[k].dtype),
                            "shape": list(arrays[k].shape)} for k in ARRAYS], "parts": parts}
    write_json(out / MANIFEST, manifest)
    return manifest


def join(parts_dir: Path) -> dict[str, np.ndarray]:
    """The arrays split() wrote, every part checked against its sha256."""
    if not (parts_dir / MANIFEST).is_file():
        sys.exit(f"gpu_cifar10_full: no {parts_dir / MANIFEST}; carry it with every part")
    manifest = json.loads((parts_dir / MANIFEST).read_text())
    chunks = []
    for part in manifest["parts"]:
        path = parts_dir / part["file"]
        if not path.is_file():
            sys.exit(f"gpu_cifar10_full: {path} is missing; carry it in a device call to this"
                     " warm machine (one part a call), then train again")
        chunk = path.read_bytes()
        if hashlib.sha256(chunk).hexdigest() != part["sha256"]:
            sys.exit(f"gpu_cifar10_full: {path} does not match its sha256; carry it again")
        chunks.append(chunk)
    blob, arrays, offset = b"".join(chunks), {}, 0
    for a in manifest["arrays"]:
        dtype, shape = np.dtype(a["dtype"]), tuple(a["shape"])
        size = dtype.itemsize * int(np.prod(shape))
        arrays[a["name"]] = np.frombuffer(blob, dtype, count=size // dtype.itemsize,
                                          offset=offset).reshape(shape)
        offset += size
    return arrays


def train_full(a) -> dict:
    """Join the parts, plan the epochs that fit, train the cifar10 preset, write the records."""
    import torch

    from drmm.config import preset
    from drmm.data import load_dataset
    from drmm.train import train

    start = time.time()
    a.deadline = start + 60 * a.minutes
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    arrays = join(Path(a.parts))
    atomic_write(work / "cifar10.npz", lambda f: np.savez(f, **arrays))  # sha256-checked on load
    device, name = device_and_name(a.smoke)
    cfg = preset("cifar10")
    t = cfg.train
    t.data_dir, t.device, t.seed = str(work), str(device), a.seed
    t.tensorboard, t.log_every = False, 200  # each NaN check is a host sync
    data = load_dataset("cifar10", str(work), preprocess=t.preprocess)
    if a.smoke:  # 20 labeled images of each class and 200 unlabeled ones, 100 test images
        y = data.y_train.numpy()
        data = subset(data, np.sort(np.concatenate(
            [np.flatnonzero(y == c)[:20] for c in range(10)] + [np.arange(200, 400)])), 100)
        t.labels = 200
    plan = plan_epochs(a, cfg, data, device, max_epochs=a.max_epochs)
    t.epochs = plan["epochs"]
    print(f"gpu_cifar10_full: {name}, {plan['ms_per_step_calibrated']:.1f} ms a step,"
          f" ~{plan['planned_seconds_per_epoch']:.0f} s an epoch -> {t.epochs} epochs",
          flush=True)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    metrics = train(cfg, run_dir, data=data, progress=False)
    for f in ("metrics.json", "metrics.jsonl", "config.json"):
        shutil.copyfile(run_dir / f, out / f)
    report = {"device": name, "torch": torch.__version__, "preset": "cifar10",
              "labels": metrics["labels"], "train_images": metrics["train_images"],
              "epochs": t.epochs, "plan": plan, "seed": a.seed,
              "test_error_end": metrics["test_error_percent"] / 100,
              "train_wall_seconds": metrics["wall_seconds"],
              "call_seconds": time.time() - start}
    write_json(out / "gpu_cifar10_full.json", report)
    print(f"gpu_cifar10_full: test error {metrics['test_error_percent']:.2f} % at the end of"
          f" {t.epochs} epochs, N_L {metrics['labels']}, {metrics['train_images']} training"
          f" images, {metrics['wall_seconds'] / 60:.1f} min of training")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("split", "train"))
    p.add_argument("--shared", default="../shared/data", help="split: holds cifar10/cifar10.npz")
    p.add_argument("--parts", default=".gpu_cifar", help="the parts' folder")
    p.add_argument("--part-mib", type=float, default=48.0, help="split: size of a part, MiB")
    p.add_argument("--minutes", type=float, default=8.0, help="train: the call's time, minutes")
    p.add_argument("--max-epochs", type=int, default=200, help="train: at most this many epochs")
    p.add_argument("--seed", type=int, default=0, help="train: the labeled draw and the run")
    p.add_argument("--work", default="/tmp/gpu_cifar10_full", help="train: joined data, the run")
    p.add_argument("--out", default="/tmp/gpu_cifar10_full/out", help="train: records to keep")
    p.add_argument("--smoke", action="store_true", help="train: CPU, tiny subset, one epoch")
    a = p.parse_args(argv)
    if a.action == "split":
        source = Path(a.shared) / "cifar10" / "cifar10.npz"
        if not source.is_file():
            sys.exit(f"gpu_cifar10_full: {source} not found; pass --shared")
        with np.load(source) as f:
            manifest = split({k: f[k] for k in ARRAYS}, Path(a.parts), int(a.part_mib * 2**20))
        print(f"gpu_cifar10_full: {len(manifest['parts'])} parts in {a.parts}:"
              f" {[p['bytes'] for p in manifest['parts']]} bytes")
        return manifest
    return train_full(a)


if __name__ == "__main__":
    main()
