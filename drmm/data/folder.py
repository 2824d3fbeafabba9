"""A folder of the user's own images (`--dataset folder:DIR`): few labeled, many not.

    DIR/labeled/<class name>/*.png|*.jpg|...   labeled training images; classes = sorted names
    DIR/unlabeled/**/*                         unlabeled training images (any sub-folders)
    DIR/test/<class name>/*                    optional held-out images with their labels

The training set is labeled + unlabeled images, the unlabeled ones with label -1 (the DRMM's
unsupervised terms use every training image, as in the paper). Images are decoded with Pillow
to grayscale or RGB (the files decide: RGB if any file is in colour, or `channels`), turned
upright as their EXIF Orientation tag says, and must share one size, or are fitted to
`image_size` x `image_size`: `resize` "crop" takes the centre square and resizes it, "squash"
resizes the whole image. A JPEG much larger than that is decoded by libjpeg at 1/2, 1/4 or 1/8
scale (Pillow's draft mode), never below the size the final resize needs. Files are decoded by
a pool of threads, one per core (Pillow releases the GIL while it decodes and resizes), in file
order as to results and errors: the first bad file is the one reported.

Decoding a large folder takes a while, so the arrays are cached in the cache folder
(~/.cache/drmm/folders, $DRMM_CACHE) under a key made of every file's path, size and
modification time and the decoding options: a second run reads the cache, and any change to the
folder decodes it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from drmm.data.download import cache_root
from drmm.errors import DRMMError
from drmm.files import atomic_write, require_dir

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # Pillow modes with one intensity channel
CACHE_FORMAT = 2  # bump when the cached arrays' meaning changes (2: EXIF upright, draft, resize)
RESIZES = ("crop", "squash")  # how image_size fits a non-square image (TrainConfig.resize)
WORKERS: int | None = None  # threads decoding files; None: one per core this process may use
# What Pillow raises on a picture so large it could be a decompression bomb: the error above
# 2 x Image.MAX_IMAGE_PIXELS pixels (the warning above 1 x, where warnings are made errors) ...
TOO_LARGE = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# ... and on a file it cannot decode: truncated or corrupt data (OSError, SyntaxError from a PNG
# chunk check, EOFError, ValueError).
DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError)
T = TypeVar("T")
R = TypeVar("R")


def image_files(folder: Path) -> list[Path]:
    """Image files under folder (any depth), sorted; hidden files and folders skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def labeled_files(folder: Path, what: str) -> dict[str, list[Path]]:
    """{class name: its image files} of folder/<class name>/*, sorted by name."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {c: image_files(folder / c) for c in classes}
    empty = [c for c, f in files.items() if not f]
    if empty:
        raise DRMMError(f"{what} class folders {empty[:5]} in {folder} hold no images"
                        f" ({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove them")
    return files


def decide_channels(files: list[Path], channels: int | None) -> int:
    """1 if every file is grayscale, else 3; `channels` (1 or 3) overrides. Reads headers only."""
    if channels is not None:
        if channels not in (1, 3):
            raise DRMMError(f"--channels {channels}: use 1 (grayscale) or 3 (RGB)")
        return channels
    for path in files:
        with open_image(path) as img:
            if img.mode not in GRAY_MODES:
                return 3
    return 1


def folder_preset(root: str | Path, channels: int | None) -> str | None:
    """The preset a folder of images trains with (drmm.config.PRESETS): "folder_photo" if it
    holds a colour image (or channels is 3), "folder" if every image is grayscale; None if it
    holds no image file. Reads headers only."""
    files = [p for sub in ("labeled", "unlabeled", "test") if (Path(root) / sub).is_dir()
             for p in image_files(Path(root) / sub)]
    if not files:
        return None
    return "folder_photo" if decide_channels(files, channels) == 3 else "folder"


def open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except TOO_LARGE as e:
        raise DRMMError(f"{path} is too large for Pillow ({one_line(e)}); remove it or shrink"
                        " it") from e
    except (UnidentifiedImageError, *DECODE_ERRORS) as e:
        raise DRMMError(f"{path} is not an image Pillow can read ({one_line(e)}); fix or remove"
                        " it") from e


def one_line(e: Exception) -> str:
    """Pillow's message on one line, for the one-line error that quotes it."""
    text = " ".join(str(e).split()).rstrip(".")
    return text or type(e).__name__


def pixels(img: Image.Image, channels: int, image_size: int | None,
           resize: str = "crop") -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) pixels of a PIL image, upright as its EXIF Orientation tag
    says, grayscale or RGB, fitted to image_size x image_size if given (`resize`: crop the centre
    square, or squash the whole image): how training folders and new images alike are read."""
    if resize not in RESIZES:
        raise DRMMError(f"resize {resize!r} unknown; use one of {list(RESIZES)}")
    img.load()
    if img.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        img = ImageOps.exif_transpose(img)  # a new image: the caller's stays as it was
    img = img.convert("L" if channels == 1 else "RGB")
    if image_size is None or img.size == (image_size, image_size):
        return np.asarray(img, dtype=np.uint8)
    w, h = img.size
    if resize == "crop" and w != h:  # the centre square (nothing outside it leaks in)
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode(path: Path, channels: int, image_size: int | None,
           resize: str = "crop") -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) pixels of one image file, upright, fitted to image_size if
    given. A JPEG at least twice image_size on its short side is decoded smaller by libjpeg
    (draft: 1/2, 1/4 or 1/8 scale), its short side still at least image_size: what either
    resize needs (crop and squash alike shrink the short side to image_size; an EXIF rotation
    swaps width and height, not the short side)."""
    with open_image(path) as img:
        try:
            if image_size is not None:
                img.draft("L" if channels == 1 else "RGB", (image_size, image_size))
            return pixels(img, channels, image_size, resize)
        except TOO_LARGE as e:
            raise DRMMError(f"{path} is too large for Pillow ({one_line(e)}); remove it or"
                            " shrink it") from e
        except DECODE_ERRORS as e:  # a truncated or corrupt file fails only when decoded
            raise DRMMError(f"{path} cannot be decoded ({one_line(e)}); fix or remove it") from e


def workers() -> int:
    """Threads that decode files: WORKERS, else one per core this process may run on."""
    if WORKERS is not None:
        return max(1, WORKERS)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def in_order(fn: Callable[[T], R], items: Iterable[T], ahead: int | None = None) -> Iterator[R]:
    """fn(item) of every item, in the items' order, computed by a pool of workers() threads at
    most `ahead` items (default 4 per thread) before the one the caller takes. An item's
    exception is raised when the caller reaches that item, so the first failure in order is the
    one seen; the items not yet started are then dropped."""
    n = workers()
    if n == 1:
        yield from map(fn, items)
        return
    ahead = max(ahead or 4 * n, n)
    with ThreadPoolExecutor(n, thread_name_prefix="drmm-decode") as pool:
        pending = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def decode_all(files: list[Path], channels: int, image_size: int | None, desc: str,
               resize: str = "crop") -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, 3): every file decoded (on every core); one size, or a clear
    error."""
    images, first = [], None
    with closing(in_order(lambda p: decode(p, channels, image_size, resize), files)) as decoded:
        for path, x in zip(files, tqdm(decoded, total=len(files), desc=desc, unit="img",
                                       disable=None if len(files) > 500 else True, leave=False),
                           strict=True):
            if first is None:
                first = (path, x.shape)
            elif x.shape != first[1]:
                raise DRMMError(f"images differ in size ({first[0]} is {size_of(first[1])},"
                                f" {path} is {size_of(x.shape)}); pass --image-size S to resize"
                                " them all to S x S")
            images.append(x)
    return np.stack(images)


def size_of(shape: tuple) -> str:
    return f"{shape[1]}x{shape[0]}"  # Pillow and people say width x height


def cache_key(files: list[Path], options: dict) -> str:
    """sha256 of every file's path, size and modification time and the decoding options."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **options}).encode())
    for path in files:
        st = path.stat()
        # the path's own bytes: a name that is not UTF-8 (surrogate escapes) hashes as well
        digest.update(os.fsencode(path.resolve()))
        digest.update(f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def load_folder(root: str | Path, channels: int | None = None, image_size: int | None = None,
                resize: str = "crop") -> dict[str, np.ndarray]:
    """Arrays in the npz form: x_train, y_train (-1 = unlabeled), x_test, y_test (only when
    DIR/test exists), class_names, and paths_train / paths_test (relative to DIR). `resize`
    (crop | squash) applies only with image_size."""
    root = require_dir(root, "folder", "pass folder:DIR with DIR/labeled/<class name>/ images")
    labeled_dir = require_dir(root / "labeled", "folder", "put the labeled training images in"
                              f" {root / 'labeled'}/<class name>/")
    labeled = labeled_files(labeled_dir, "labeled")
    names = sorted(labeled)
    if len(names) < 2:
        raise DRMMError(f"{labeled_dir} has {len(names)} class folder(s); classification needs at"
                        " least 2 (one folder per class)")
    unlabeled = image_files(root / "unlabeled") if (root / "unlabeled").is_dir() else []
    test = labeled_files(root / "test", "test") if (root / "test").is_dir() else {}
    unknown = sorted(set(test) - set(names))
    if unknown:
        raise DRMMError(f"{root / 'test'} has classes {unknown[:5]} that {labeled_dir} has not;"
                        " every test class needs labeled training images")
    if image_size is not None and image_size < 1:
        raise DRMMError(f"--image-size {image_size} must be a positive number of pixels")
    if resize not in RESIZES:
        raise DRMMError(f"--resize {resize}: use one of {', '.join(RESIZES)}")
    train_files = [p for c in names for p in labeled[c]] + unlabeled
    y_train = np.array([names.index(c) for c in names for _ in labeled[c]] + [-1] * len(unlabeled),
                       dtype=np.int64)
    test_files = [p for c in names for p in test.get(c, [])]
    y_test = np.array([names.index(c) for c in names for _ in test.get(c, [])], dtype=np.int64)

    # Keyed by the options asked for (channels None: decided by the files), so that a cache hit
    # opens no image file at all; resize only where it applies, with image_size.
    options = {"channels": channels, "image_size": image_size,
               "resize": resize if image_size is not None else None}
    cache = cache_root() / "folders" / f"{cache_key(train_files + test_files, options)}.npz"
    arrays = read_cache(cache)
    if arrays is None:
        channels = decide_channels(train_files + test_files, channels)
        arrays = {"x_train": decode_all(train_files, channels, image_size,
                                           "decoding training", resize)}
        if test_files:
            arrays["x_test"] = decode_all(test_files, channels, image_size, "decoding test",
                                         resize)
            if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
                raise DRMMError(f"test images are {size_of(arrays['x_test'].shape[1:])}, training"
                                f" images {size_of(arrays['x_train'].shape[1:])}; pass --image-size"
                                " S to resize them all")
        try:  # a cache is a convenience: an unwritable cache folder must not stop the run
            atomic_write(cache, lambda f: np.savez(f, **arrays))
        except DRMMError:
            pass
    arrays |= {"y_train": y_train, "class_names": np.array(names),
               "paths_train": np.array([str(p.relative_to(root)) for p in train_files])}
    if test_files:
        arrays |= {"y_test": y_test,
                   "paths_test": np.array([str(p.relative_to(root)) for p in test_files])}
    return arrays


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if there are none or they cannot be read (then decode again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None
