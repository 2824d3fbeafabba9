"""Find, download and verify data files: checksums, an atomic cache, and local copies.

A file is looked for in the user's --data-dir (in DIR/<set>/ and DIR/), then in the cache
(~/.cache/drmm/<set>, or $DRMM_CACHE). A download goes to a temporary name in the same folder,
is checked, and only then renamed: a partial or corrupt download never becomes the cache.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

from drmm.errors import DRMMError
from drmm.files import mkstemp_shared
from drmm.progress import on_terminal


def cache_root() -> Path:
    return Path(os.environ.get("DRMM_CACHE", Path.home() / ".cache" / "drmm"))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: Path, expected: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        raise DRMMError(
            f"{path}: bad checksum (md5 {actual}, expected {expected}); the file is corrupt or"
            " truncated: delete it so that it is downloaded again, or replace it with a good copy"
        )


def download(urls: list[str], dest: Path, md5: str) -> Path:
    """Download the first URL that works to dest, atomically, and verify its md5.

    Each try writes DEST.<random>.part, checks its md5, and only then renames it to dest; on any
    failure (network error, cut connection, full disk, bad checksum) the part file is deleted.
    Part files that a killed process left behind are deleted before a new try.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DRMMError(f"cannot create {dest.parent} ({e.strerror or e}); pass a writable"
                        " --data-dir or set DRMM_CACHE") from e
    for stale in dest.parent.glob(f"{dest.name}.*.part"):
        stale.unlink(missing_ok=True)
    errors = []
    for url in urls:
        tmp = None
        try:
            fd, tmp = mkstemp_shared(dest, ".part")  # the umask's mode, not 0600
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                copy_response(resp, out, dest.name, url)
                out.flush()
                os.fsync(out.fileno())
            actual = md5sum(Path(tmp))
            if actual != md5:
                raise ValueError(f"checksum mismatch: md5 {actual}, expected {md5}")
            os.replace(tmp, dest)
            tmp = None
            return dest
        # URLError, HTTPError and a cut connection are OSErrors; IncompleteRead is not.
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors.append(f"{url}: {e}")
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
    raise DRMMError(
        f"could not download {dest.name} ({'; '.join(errors)}); download it by hand and pass"
        " its folder with --data-dir"
    )


def copy_response(resp, out, name: str, url: str) -> None:
    """Copy a download into out: with a progress bar on a terminal, or one line in a log."""
    headers = getattr(resp, "headers", None)
    length = headers.get("Content-Length", "") if headers is not None else ""
    total = int(length) if length.isdigit() else None
    shown = on_terminal()
    if not shown:
        size = f" ({total / 1e6:.0f} MB)" if total else ""
        print(f"drmm: downloading {name}{size} from {url}", file=sys.stderr, flush=True)
    with tqdm.wrapattr(out, "write", total=total, desc=f"downloading {name}",
                       disable=not shown, leave=False) as counted:
        shutil.copyfileobj(resp, counted)


def locate(
    name: str,
    md5: str,
    urls: list[str],
    dataset: str,
    data_dir: str | Path | None = None,
    verify: bool = True,
) -> Path:
    """Path of a verified copy of file `name` of `dataset`, downloading it if needed."""
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DRMMError(f"data dir {data_dir} does not exist; pass an existing --data-dir")
        candidates = [data_dir / dataset / name, data_dir / name]
    else:
        candidates = []
    candidates.append(cache_root() / dataset / name)
    for path in candidates:
        if path.is_file():
            if verify:
                check_md5(path, md5)
            return path
    target_dir = data_dir / dataset if data_dir is not None else cache_root() / dataset
    return download(urls, target_dir / name, md5)
