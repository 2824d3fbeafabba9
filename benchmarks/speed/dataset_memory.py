"""Memory of a loaded data set: images kept uint8 (load_dataset) against the float32 tensors.

    python -m benchmarks.speed.dataset_memory --out results/dataset_memory.json

Writes an npz of --n random RGB images of --size px (what load_folder returns after decoding a
folder: uint8 (N, H, W, 3) and labels; the files' decoding is not measured here), then loads it
in a fresh process per measurement, with the photo presets' `standardize` preprocessing:

    uint8     load_dataset: the pixels kept as uint8 Images, float32 made a batch at a time
    float32   the former path, copied here: the whole set made float32 (N, C, H, W) in [0, 1]
              (drmm.data.to_tensor_images), then standardised in place

and reports each process's peak resident memory (ru_maxrss) and the bytes the Dataset's
training images hold. The float32 path peaks near 2.25 x 4 bytes a value (the float copy and its
(N, C, H, W) copy beside the uint8 array): on a 24 GiB machine --float-n (default 50,000)
keeps it below the limit, and its bytes scale with N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT
from drmm.files import write_json

MEASURE = """
import json, resource, sys
import torch
from drmm.data import load_dataset, to_tensor_images
from drmm.data.preprocess import apply_preprocess
mode, npz = sys.argv[1], sys.argv[2]
if mode == "uint8":
    data = load_dataset("npz:" + npz, preprocess="standardize")
    held = data.x_train.nbytes
    first = data.x_train[torch.arange(4)]  # a batch, as training takes it
else:
    import numpy as np
    arrays = dict(np.load(npz))
    x, _, pre = apply_preprocess(to_tensor_images(arrays.pop("x_train")), None, "standardize")
    held = x.numel() * x.element_size()
    first = x[:4]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
print(json.dumps({"peak_rss_bytes": rss, "train_images_bytes": held,
                  "batch_dtype": str(first.dtype)}))
"""


def measure(mode: str, npz: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, mode, str(npz)], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout)


def write_images(path: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)  # (N, H, W, 3)
    np.savez(path, x_train=x, y_train=np.arange(n) % 10)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="images for the uint8 path")
    p.add_argument("--float-n", type=int, default=50_000, help="images for the float32 path")
    p.add_argument("--size", type=int, default=64, help="image side, px")
    p.add_argument("--out", help="JSON file to write")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted({a.float_n, a.n}):
            npz = Path(tmp) / f"images{n}.npz"
            write_images(npz, n, a.size)
            modes = ["uint8"] + (["float32"] if n <= a.float_n else [])
            for mode in modes:
                rows.append({"mode": mode, "images": n, "size": a.size, **measure(mode, npz)})
            npz.unlink()
    gib = 2**30
    print("| images | storage | training images held | peak resident memory |")
    print("| ---: | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['images']:,} | {r['mode']} | {r['train_images_bytes'] / gib:.2f} GiB |"
              f" {r['peak_rss_bytes'] / gib:.2f} GiB |")
    result = {"rows": rows, "settings": vars(a),
              "this_process_peak_rss_bytes":
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if a.out:
        write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
