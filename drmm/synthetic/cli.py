"""`drmm render`: write the synthetic data set of section 5.4 as a prepared-arrays .npz.

    drmm render --n-train 50000 --n-test 10000 --seed 0 --out data/synthetic.npz

writes data/synthetic.npz (train on it with --dataset npz:data/synthetic.npz) and
data/synthetic_samples.png (a row of samples per class), and prints the rendering rate.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from drmm.errors import DRMMError
from drmm.files import atomic_write, check_out_file
from drmm.synthetic.grid import save_class_grid
from drmm.synthetic.render import render_dataset
from drmm.synthetic.scene import RenderConfig


def register(subparsers) -> None:
    p = subparsers.add_parser("render", help="render the synthetic data set with latents (5.4)")
    p.add_argument("--n-train", type=int, default=50000, help="training images (default 50000)")
    p.add_argument("--n-test", type=int, default=10000, help="test images (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="everything follows from it (default 0)")
    p.add_argument("--out", required=True, help="output FILE.npz")
    p.add_argument("--grid", help="sample grid PNG (default: FILE_samples.png beside --out)")
    p.add_argument("--per-class", type=int, default=10, help="samples per class in the grid")
    p.add_argument("--supersample", type=int, default=2,
                   help="rays per pixel along each axis, for anti-aliasing (default 2)")
    p.add_argument("--batch-size", type=int, default=500, help="images rendered at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)


def check_args(args) -> Path:
    out = check_out_file(args.out, suffix=".npz")  # the prepared-arrays format
    if args.grid:
        check_out_file(args.grid, "--grid", suffix=".png")
    if args.n_train < 10 or args.n_test < 10:
        raise DRMMError("--n-train and --n-test must be at least 10, one image per class")
    for name in ("supersample", "batch_size", "threads", "per_class"):
        if getattr(args, name) < 1:
            raise DRMMError(f"--{name.replace('_', '-')} must be at least 1")
    return out


def cmd_render(args) -> int:
    out = check_args(args)
    grid = Path(args.grid) if args.grid else out.with_name(out.stem + "_samples.png")
    total = args.n_train + args.n_test
    bar = tqdm(total=total, disable=args.quiet, unit="img", leave=False)
    t0 = time.perf_counter()
    arrays = render_dataset(args.n_train, args.n_test, args.seed,
                            RenderConfig(supersample=args.supersample), args.batch_size,
                            on_batch=bar.update, threads=args.threads)
    seconds = time.perf_counter() - t0
    bar.close()
    atomic_write(out, lambda f: np.savez_compressed(f, **arrays))
    save_class_grid(arrays["x_train"], arrays["y_train"], arrays["class_names"], grid,
                    args.per_class)
    print(f"rendered {total} images in {seconds:.1f} s ({total / seconds:.0f} images/s,"
          f" {args.threads} thread(s)); wrote {out} and {grid}")
    return 0
