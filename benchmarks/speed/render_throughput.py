"""Images/s of the synthetic renderer (`drmm render`, section 5.4) and the time for 60,000.

The budget: 60,000 images (50K train + 10K test) in at most 10 minutes on 2 CPU cores.
Renders --n images (a data set split of that size, exactly as `drmm render` does), times the
compressed .npz write of them, and extrapolates both to 60,000 images. Prints JSON.

    python -m benchmarks.speed.render_throughput --n 60000 --out results/render_throughput.json
    python -m benchmarks.speed.render_throughput --n 2000   # a quick estimate
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np

from benchmarks.common import cpu_name
from drmm.files import write_json
from drmm.synthetic.render import render_split
from drmm.synthetic.scene import RenderConfig

TARGET = 60_000  # images of the paper's data set
BUDGET_S = 600.0  # the budget for them


def main(args) -> dict:
    cfg = RenderConfig(supersample=args.supersample)
    t0 = time.perf_counter()
    x, y, z = render_split(args.n, np.random.SeedSequence(args.seed), cfg, args.batch_size,
                           threads=args.threads)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.savez_compressed(io.BytesIO(), x_train=x, y_train=y, z_train=z)  # the write, in memory
    write_s = time.perf_counter() - t0
    per_image = (render_s + write_s) / args.n
    result = {
        "images": args.n,
        "render_seconds": render_s,
        "write_seconds": write_s,
        "images_per_s": args.n / render_s,
        "projected_seconds_for_60000": per_image * TARGET,
        "within_10_minutes": per_image * TARGET <= BUDGET_S,
        "supersample": args.supersample,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "cpu": cpu_name(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=TARGET, help="images to render (default 60000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supersample", type=int, default=2, help="as drmm render (default 2)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
