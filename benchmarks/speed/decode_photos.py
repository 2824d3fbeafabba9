"""Decoding a folder of photos to small training images: the old sequential path against
load_folder's (draft decoding, EXIF, a thread per core).

Builds --n synthetic photo-like JPEGs of --width x --height (smooth random colour fields with
film grain, quality 90; every other odd image carries an EXIF Orientation tag, 6 or 8) in the
`folder:DIR` layout under --work; a rerun with the same settings finds them and skips building.
Then decodes them all to --image-size S, RGB, in this one process:

    old             today's path before this change, copied: open, convert, resize (squash),
                    one file after another, full-size JPEG decoding, no EXIF
    new             load_folder (cache off): JPEG draft decoding, EXIF upright, --resize, one
                    thread per core
    new_1_thread    the same on one thread: the gain of draft decoding alone
    new_processes   decode() on a process pool of as many workers (fork): threads against
                    processes (--no-processes leaves it out)

and prints images/s of each and their ratios; JSON with --out. The pixels of old and new are
compared on the images without an EXIF tag (--resize squash, the old way's geometry). Also the
memory of the decoded arrays of a 200,000-image 64 px folder, from shapes and dtypes alone.

    python -m benchmarks.speed.decode_photos --work runs/decode-photos \
        --out results/decode_photos.json
    python -m benchmarks.speed.decode_photos --n 40 --width 600 --height 400 --work /tmp/dp  # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

import drmm.data.folder as folder
from benchmarks.common import cpu_name
from drmm.data.folder import decode, in_order, load_folder
from drmm.files import write_json

BUILD_FORMAT = 1  # bump when the generated images change
ORIENTATIONS = {1: 6, 3: 8}  # image index % 4 -> its EXIF Orientation tag (none for the others)


def orientation(i: int) -> int | None:
    return ORIENTATIONS.get(i % 4)


def build_folder(work: Path, n: int, width: int, height: int, seed: int) -> tuple[Path, bool]:
    """The folder of n JPEGs (built unless a build with these settings is there); returns (DIR,
    whether it was built now). Labeled: 5 images each of classes a and b, the rest unlabeled."""
    root = work / f"photos-{n}-{width}x{height}-s{seed}"
    done = root / "built.json"
    spec = dict(format=BUILD_FORMAT, n=n, width=width, height=height, seed=seed)
    if done.is_file() and json.loads(done.read_text()) == spec:
        return root, False
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)  # shared, shifted per image

    def save(i: int) -> None:
        r = np.random.default_rng([seed, i])
        coarse = r.integers(0, 256, (max(2, height // 150), max(2, width // 150), 3), np.uint8)
        field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        shifted = np.roll(grain, (int(r.integers(height)), int(r.integers(width))), (0, 1))
        img = Image.fromarray(np.clip(np.asarray(field, np.float32) + shifted, 0, 255)
                              .astype(np.uint8))
        exif = Image.Exif()
        if orientation(i) is not None:
            exif[0x0112] = orientation(i)
        path = root / file_name(i, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90, exif=exif.tobytes())

    for _ in in_order(save, range(n)):  # a thread per core
        pass
    done.write_text(json.dumps(spec))
    return root, True


def file_name(i: int, n: int) -> str:
    where = "labeled/a" if i < 5 else "labeled/b" if i < 10 else "unlabeled"
    return f"{where}/{i:06d}.jpg"


def old_decode(path: Path, channels: int, image_size: int | None) -> np.ndarray:
    """drmm/data/folder.py's decode before draft, EXIF and --resize (its error handling left out:
    the files are good)."""
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if image_size is not None and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def timed(fn) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    x = fn()
    return x, time.perf_counter() - t0


def decode_new(root: Path, image_size: int, resize: str, workers: int | None) -> np.ndarray:
    """load_folder's x_train with `workers` threads, its cache in a fresh, empty folder."""
    before, cache = folder.WORKERS, os.environ.get("DRMM_CACHE")
    try:
        folder.WORKERS = workers
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DRMM_CACHE"] = tmp
            return load_folder(root, channels=3, image_size=image_size, resize=resize)["x_train"]
    finally:
        folder.WORKERS = before
        if cache is None:
            os.environ.pop("DRMM_CACHE", None)
        else:
            os.environ["DRMM_CACHE"] = cache


def decode_processes(files: list[Path], image_size: int, resize: str, workers: int) -> np.ndarray:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        fn = partial(decode, channels=3, image_size=image_size, resize=resize)
        return np.stack(list(pool.map(fn, files, chunksize=max(1, len(files) // (8 * workers)))))


def memory(n: int = 200_000, size: int = 64) -> dict:
    """Bytes of the decoded arrays of n size x size images: the uint8 arrays load_folder returns
    (and caches), the float32 (N, C, H, W) tensor training holds, and the peak of
    to_tensor_images: the uint8 array, its float32 copy and, for RGB, the (N, C, H, W) copy."""
    out = {"images": n, "size": size}
    for name, c in (("gray", 1), ("rgb", 3)):
        u8 = n * size * size * c * np.dtype(np.uint8).itemsize
        f32 = n * size * size * c * np.dtype(np.float32).itemsize
        out[name] = {"uint8_bytes": u8, "float32_bytes": f32,
                     "to_tensor_peak_bytes": u8 + f32 * (2 if c == 3 else 1),
                     "uint8_gib": u8 / 2**30, "float32_gib": f32 / 2**30}
    return out


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    work = Path(a.work)
    (root, built), build_s = timed(lambda: build_folder(work, a.n, a.width, a.height, a.seed))
    files = sorted((root / "labeled").rglob("*.jpg")) + sorted((root / "unlabeled").glob("*.jpg"))
    workers = folder.workers()
    old, old_s = timed(lambda: np.stack([old_decode(p, 3, a.image_size) for p in files]))
    new, new_s = timed(lambda: decode_new(root, a.image_size, a.resize, None))
    one, one_s = timed(lambda: decode_new(root, a.image_size, a.resize, 1))
    assert np.array_equal(new, one), "threads changed the pixels"
    seconds = {"old": old_s, "new": new_s, "new_1_thread": one_s}
    if a.processes:
        procs, seconds["new_processes"] = timed(
            lambda: decode_processes(files, a.image_size, a.resize, workers))
        assert np.array_equal(new, procs), "processes changed the pixels"
    rate = {k: len(files) / s for k, s in seconds.items()}
    ratios = {"new_over_old": rate["new"] / rate["old"],
              "new_1_thread_over_old": rate["new_1_thread"] / rate["old"],
              "new_over_new_1_thread": rate["new"] / rate["new_1_thread"]}
    if a.processes:
        ratios["threads_over_processes"] = rate["new"] / rate["new_processes"]
    upright = [i for i, p in enumerate(files) if orientation(int(p.stem)) is None]
    diff = (np.abs(new[upright].astype(np.int16) - old[upright]).mean()
            if a.resize == "squash" and upright else None)
    result = {
        "images": len(files), "width": a.width, "height": a.height, "image_size": a.image_size,
        "resize": a.resize, "folder": str(root), "built_now": built, "build_s": build_s,
        "workers": workers, "cpu_count": os.cpu_count(), "decoded_shape": list(new.shape),
        "seconds": seconds, "images_per_s": rate, "ratios": ratios,
        "mean_abs_pixel_diff_old_vs_new": None if diff is None else float(diff),
        "memory_200k_64px": memory(),
        "platform": {"cpu": cpu_name(),
                     "python": platform.python_version(),
                     "pillow": Image.__version__},
    }
    if a.out:
        write_json(a.out, result)
    print(f"{len(files)} JPEGs {a.width}x{a.height} -> {a.image_size}x{a.image_size}"
          f" ({a.resize}), {workers} workers")
    for k, v in rate.items():
        print(f"  {k:>14}: {v:8.1f} images/s")
    for k, v in ratios.items():
        print(f"  {k:>24}: {v:6.2f}x")
    if diff is not None:
        print(f"  mean |old - new| pixel, untagged images: {diff:.3f} of 255")
    m = result["memory_200k_64px"]["rgb"]
    print(f"  200,000 images of 64 px, RGB: uint8 {m['uint8_gib']:.1f} GiB, float32"
          f" {m['float32_gib']:.1f} GiB")
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="JPEG files to build and decode")
    p.add_argument("--width", type=int, default=3000)
    p.add_argument("--height", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=32, help="the square size decoded to")
    p.add_argument("--resize", choices=folder.RESIZES, default="squash",
                   help="the new path's fit (squash: the old path's, so pixels compare)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/decode-photos", help="where the JPEGs are kept")
    p.add_argument("--no-processes", dest="processes", action="store_false",
                   help="leave out the process-pool variant")
    p.add_argument("--out", help="JSON file to write")
    a = p.parse_args(argv)
    if a.n < 10:
        p.error("--n must be at least 10 (5 labeled images of each of 2 classes)")
    return a


if __name__ == "__main__":
    main()
