"""Folders of real photos (`--dataset folder:DIR`): EXIF orientation, JPEG draft decoding,
--resize crop|squash, files too large for Pillow, decoding on a pool of threads; and
benchmarks/decode_photos.py on a tiny folder."""

import csv
import io
import json
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_yaml
from PIL import Image

import drmm
import drmm.data.folder as folder
from drmm.checkpoint import load_trained_model
from drmm.cli import main
from drmm.config import CONFIG_VERSION, Config
from drmm.data import Preprocessor, load_dataset, load_run_data
from drmm.data.folder import cache_key, decode, in_order, load_folder
from drmm.errors import DRMMError
from drmm.model import DRMM, ModelConfig
from drmm.predictor import Predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

ROTATE = 6  # EXIF Orientation: the camera was turned; shown turned 90 degrees clockwise


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRMM_CACHE", str(tmp_path / "cache"))


def marked(width: int = 12, height: int = 8, corner: int = 255) -> np.ndarray:
    """uint8 (height, width): dark, with a bright 3x3 top-left corner (value `corner`)."""
    x = np.full((height, width), 20, np.uint8)
    x[:3, :3] = corner
    return x


def save(x: np.ndarray, path: Path, orientation: int | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(x).save(path, exif=exif.tobytes(), **kw)
    return path


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3): a smooth random colour field, like a photo at a distance."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 9, 3), np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def bright_corner(x: np.ndarray) -> tuple[float, float]:
    """(row, column) of the mean position of the bright pixels, relative to the image size."""
    rows, cols = np.nonzero(x > 128)
    return rows.mean() / x.shape[0], cols.mean() / x.shape[1]


def predictor(size: int | None, channels: int = 1, resize_mode: str = "crop") -> Predictor:
    model = DRMM(ModelConfig(arch="conv_tiny", in_channels=channels, image_size=size or 8,
                             num_classes=2))
    return Predictor(model, ["a", "b"], Preprocessor("none"), resize=size,
                     resize_mode=resize_mode)


# ----------------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_turns_the_image_upright(tmp_path, suffix):
    path = save(marked(12, 8), tmp_path / f"o{suffix}", ROTATE, **(
        {"quality": 95} if suffix == ".jpg" else {}))
    x = decode(path, 1, None)
    assert x.shape == (12, 8)  # width and height swapped
    row, col = bright_corner(x)
    assert row < 0.3 and col > 0.7  # the top-left corner turned clockwise: now top-right
    plain = decode(save(marked(12, 8), tmp_path / f"p{suffix}"), 1, None)
    assert plain.shape == (8, 12) and max(bright_corner(plain)) < 0.3


def test_training_and_predict_decode_turned_files_alike(tmp_path):
    root = tmp_path / "d"
    for i, c in enumerate(("a", "a", "b", "b")):
        save(marked(12, 8, corner=200 + i), root / "labeled" / c / f"{i}.jpg", ROTATE,
             quality=95)
    save(marked(12, 8), root / "unlabeled" / "u.png", ROTATE)
    arrays = load_folder(root, image_size=8)
    files = [root / p for p in arrays["paths_train"]]
    p = predictor(8)
    for x, path in zip(arrays["x_train"], files, strict=True):
        assert np.array_equal(p.read_file(path), x)
        assert np.array_equal(p.pil_pixels(Image.open(path)), x)  # small: no draft either way
        row, col = bright_corner(x)
        assert row < 0.4 and col > 0.6, path


# ----------------------------------------------------------------------------------------------
# Draft decoding of large JPEGs


def test_draft_decodes_large_jpegs_smaller_and_close(tmp_path, monkeypatch):
    path = save(photo(1600, 1200), tmp_path / "big.jpg", quality=90)
    seen = []
    real = folder.pixels

    def spy(img, *args):
        seen.append(img.size)
        return real(img, *args)

    monkeypatch.setattr(folder, "pixels", spy)
    for channels in (1, 3):
        x = decode(path, channels, 32, "squash")
        with Image.open(path) as img:  # the old way: full-size decoding, then resize
            full = img.convert("L" if channels == 1 else "RGB").resize(
                (32, 32), Image.Resampling.BILINEAR)
        assert np.abs(x.astype(int) - np.asarray(full, int)).mean() < 1.5
    assert seen == [(200, 150), (200, 150)]  # libjpeg decoded at 1/8 scale
    assert decode(path, 3, None).shape == (1200, 1600, 3)  # no image_size: full size


@pytest.mark.parametrize("width, height, size, expected", [
    (1600, 1200, 32, (200, 150)),  # 1/8
    (1600, 1200, 200, (400, 300)),  # 1/4: 1/8 would leave the short side 150 < 200
    (1600, 90, 32, (800, 45)),  # the short side decides, for crop and squash alike
    (60, 40, 32, (60, 40)),  # not twice the size: decoded whole
])
def test_draft_never_goes_below_the_size_the_resize_needs(tmp_path, monkeypatch, width, height,
                                                          size, expected):
    seen = []
    real = folder.pixels
    monkeypatch.setattr(folder, "pixels", lambda img, *a: (seen.append(img.size), real(img, *a))[1])
    for resize, orientation in (("crop", None), ("squash", None), ("crop", ROTATE)):
        path = save(photo(width, height), tmp_path / f"{resize}{orientation}.jpg", orientation)
        assert decode(path, 3, size, resize).shape == (size, size, 3)
    assert seen == [expected] * 3 and min(expected) >= size


def test_draft_then_turn_matches_turn_then_resize(tmp_path):
    """An EXIF-turned large JPEG: drafted before it is turned, the same picture as a full
    decode turned and then cropped and resized."""
    x = photo(1600, 1000, seed=3)
    path = save(x, tmp_path / "t.jpg", ROTATE, quality=95)
    got = decode(path, 3, 32, "crop")
    upright = Image.fromarray(x).transpose(Image.Transpose.ROTATE_270)  # 1000 x 1600
    want = upright.crop((0, 300, 1000, 1300)).resize((32, 32), Image.Resampling.BILINEAR)
    assert np.abs(got.astype(int) - np.asarray(want, int)).mean() < 2.5


# ----------------------------------------------------------------------------------------------
# --resize crop | squash


def thirds(width: int = 24, height: int = 8) -> np.ndarray:
    """uint8 (height, width): the left third 0, the centre third 255, the right third 100."""
    x = np.full((height, width), 255, np.uint8)
    x[:, :width // 3] = 0
    x[:, 2 * width // 3:] = 100
    return x


def test_crop_keeps_the_centre_and_squash_the_whole_image(tmp_path):
    path = save(thirds(), tmp_path / "t.png")
    assert (decode(path, 1, 8, "crop") == 255).all()  # the centre 8x8 square, as it is
    assert (decode(path, 1, 4, "crop") == 255).all()  # and shrunk
    tall = save(thirds().T.copy(), tmp_path / "tall.png")  # 8 wide, 24 tall: the middle rows
    assert (decode(tall, 1, 4, "crop") == 255).all()
    squashed = decode(path, 1, 8, "squash")
    assert squashed.shape == (8, 8)
    assert squashed[:, 0].max() < 60 and squashed[:, 4].min() > 200
    assert abs(int(squashed[:, 7].mean()) - 100) < 30  # all three thirds kept
    same = predictor(8, resize_mode="squash")
    assert np.array_equal(same.read_file(path), squashed)
    assert np.array_equal(same.pil_pixels(Image.open(path)), squashed)
    with pytest.raises(DRMMError, match="resize 'stretch' unknown"):
        decode(path, 1, 8, "stretch")


def test_resize_applies_only_with_image_size_and_keys_the_cache(tmp_path):
    root = tmp_path / "d"
    for i, c in enumerate("aabb"):
        save(thirds(), root / "labeled" / c / f"{i}.png")
    crop = load_folder(root, image_size=8, resize="crop")["x_train"]
    squash = load_folder(root, image_size=8, resize="squash")["x_train"]
    assert (crop == 255).all() and not np.array_equal(crop, squash)
    cached = sorted((tmp_path / "cache" / "folders").glob("*.npz"))
    assert len(cached) == 2  # one per resize
    for resize in ("crop", "squash"):
        load_folder(root, resize=resize)  # no image_size: resize does not apply, one entry
    assert len(list((tmp_path / "cache" / "folders").glob("*.npz"))) == 3
    files = sorted(root.rglob("*.png"))
    assert cache_key(files, {"resize": "crop"}) != cache_key(files, {"resize": "squash"})
    with pytest.raises(DRMMError, match="--resize stretch"):
        load_folder(root, image_size=8, resize="stretch")


def test_old_configs_keep_squashing():
    assert CONFIG_VERSION >= 7 and Config().train.resize == "crop"
    old = Config().to_dict()
    del old["train"]["resize"]
    old["version"] = 6
    assert Config.from_dict(old).train.resize == "squash"
    assert Config.from_dict({"version": 6}).train.resize == "squash"  # no train section at all
    current = Config().to_dict()
    current["train"]["resize"] = "squash"
    assert Config.from_dict(current).train.resize == "squash"
    assert Config.from_dict(Config().to_dict()).train.resize == "crop"


# ----------------------------------------------------------------------------------------------
# A run on a folder of turned, non-square photos


def photo_folder(root: Path) -> Path:
    """Two classes of 12x8 grayscale photos (a: bright top-left corner, b: bright bottom-right),
    every other one saved turned with an EXIF tag (the pixels stored turned the other way)."""
    rng = np.random.default_rng(0)
    for split, n in (("labeled", 4), ("unlabeled", 16), ("test", 4)):
        for i in range(n):
            c = i % 2
            x = rng.integers(0, 60, (8, 12)).astype(np.uint8)
            x[:4, :4] += 180 if c == 0 else 0
            x[4:, 8:] += 180 if c == 1 else 0
            img, tag = Image.fromarray(x), None
            if i % 4 >= 2:  # stored turned counter-clockwise, tagged to be turned back
                img, tag = img.transpose(Image.Transpose.ROTATE_90), ROTATE
            where = root / split / ("ab"[c] if split != "unlabeled" else "") / f"{i:02d}.jpg"
            save(np.asarray(img), where, tag, quality=95)
    return root


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("photo_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRMM_CACHE", str(tmp / "cache"))
        root = photo_folder(tmp / "d")
        out = tmp / "run"
        assert main(tiny_photo_train(root, out, write_yaml(tmp))) == 0
    return root, out


def tiny_photo_train(root: Path, out: Path, yaml: str, *extra: str) -> list[str]:
    """`drmm train` on photo_folder(): conv_tiny on 8x8 crops, 1 epoch, the paper's step."""
    return ["train", "--dataset", f"folder:{root}", "--arch", "conv_tiny", "--image-size", "8",
            "--batch-size", "10", "--labeled-batch", "5", "--epochs", "1", "--optimizer", "sgd",
            "--lr", "0.1", "--lr-final", "0.01", "--decay", "exp", "--augment", "none",
            "--graph-prior", "0", "--consistency", "0", "--config", yaml, "--out", str(out),
            "--quiet", *extra]


def test_predict_sees_what_training_saw(photo_run, tmp_path):
    root, out = photo_run
    p = drmm.load(out)
    assert p.resize == 8 and p.resize_mode == "crop"
    model, cfg, state = load_trained_model(out)
    data = load_run_data(cfg, state)  # the test images as the run decodes them
    files = sorted((root / "test").rglob("*.jpg"))
    csv_path = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(out), "--images", str(root / "test"),
                 "--out", str(csv_path), "--quiet", "--batch-size", "3"]) == 0
    rows = list(csv.DictReader(open(csv_path, newline="")))
    assert [r["image"] for r in rows] == [str(f) for f in files]
    with torch.no_grad():
        expected = model(data.x_test[:]).softmax(1)  # files in class-folder order: sorted paths
    got = torch.tensor([[float(r["p_a"]), float(r["p_b"])] for r in rows])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    arrays = load_folder(root, channels=1, image_size=8)
    for f, x in zip(files, arrays["x_test"], strict=True):
        assert np.array_equal(p.read_file(f), x)


def test_an_old_runs_predictor_squashes(photo_run, tmp_path):
    _, out = photo_run
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["config"]["version"] = 6
    del state["config"]["train"]["resize"]
    torch.save(state, tmp_path / "old.pt")
    assert drmm.load(tmp_path / "old.pt").resize_mode == "squash"


def test_training_honours_resize_squash(tmp_path):
    root = photo_folder(tmp_path / "d")
    out = tmp_path / "run"
    assert main(tiny_photo_train(root, out, write_yaml(tmp_path), "--resize", "squash",
                                 "--preprocess", "standardize")) == 0
    _, cfg, state = load_trained_model(out)
    assert cfg.train.resize == "squash"
    fitted = {fit: load_dataset(f"folder:{root}", preprocess="standardize", image_size=8,
                                resize=fit).preprocessor.state_dict() for fit in ("crop", "squash")}
    assert not torch.equal(fitted["crop"]["mean"], fitted["squash"]["mean"])
    for k in ("mean", "std"):  # the statistics of the squashed training images, not the cropped
        torch.testing.assert_close(state["preprocess"][k], fitted["squash"][k])


# ----------------------------------------------------------------------------------------------
# Files Pillow refuses


def bomb(path: Path, side: int = 30000) -> Path:
    """A tiny PNG whose header claims side x side pixels: Pillow refuses to open it."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", side, side)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(png))
    return path


def error_line(capsys) -> str:
    """The one error line on stderr (other lines: notes such as the preset's, if any)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("drmm: error")]
    assert len(errors) == 1 and all(line.startswith("drmm: ") for line in err.splitlines()), err
    return errors[0]


def test_a_decompression_bomb_is_one_line_in_training_and_predict(photo_run, tmp_path, capsys):
    root = photo_folder(tmp_path / "d")
    bomb(root / "unlabeled" / "huge.png")
    assert main(["train", "--dataset", f"folder:{root}", "--channels", "1", "--image-size", "8",
                 "--config", write_yaml(tmp_path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    msg = error_line(capsys)
    assert "huge.png" in msg and "remove it or shrink it" in msg and "900000000" in msg
    new = tmp_path / "new"
    save(marked(), new / "fine.png")
    bomb(new / "huge.png")
    assert main(["predict", "--checkpoint", str(photo_run[1]), "--images", str(new),
                 "--out", str(tmp_path / "p.csv"), "--quiet"]) == 2
    msg = error_line(capsys)
    assert "huge.png" in msg and "remove it or shrink it" in msg
    assert not (tmp_path / "p.csv").exists()


def test_truncated_jpeg_is_named(tmp_path):
    good = save(photo(400, 300), tmp_path / "good.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:3000])
    with pytest.raises(DRMMError, match=r"cut.jpg cannot be decoded .*; fix or remove it"):
        decode(tmp_path / "cut.jpg", 3, 32)


# ----------------------------------------------------------------------------------------------
# Decoding on a pool of threads


def test_in_order_keeps_order_and_raises_the_first_failure(monkeypatch):
    monkeypatch.setattr(folder, "WORKERS", 4)
    started = []

    def slow(i):
        started.append(i)
        time.sleep(0.02 if i % 3 == 0 else 0.001)  # later items finish first
        if i in (5, 9):
            raise DRMMError(f"item {i} is bad")
        return i * i, threading.current_thread().name

    got = []
    with pytest.raises(DRMMError, match="item 5 is bad"):
        for value, _ in in_order(slow, range(200)):
            got.append(value)
    assert got == [i * i for i in range(5)]
    assert len(started) < 200  # the rest was dropped, not decoded
    names = {name for _, name in in_order(slow, [0, 1, 2, 3, 4, 6, 7, 8])}
    assert len(names) > 1 and all(n.startswith("drmm-decode") for n in names)
    monkeypatch.setattr(folder, "WORKERS", 1)  # one worker: no pool, the calling thread
    assert [v for v, _ in in_order(slow, [2, 3])] == [4, 9]


def test_parallel_folder_decoding_reports_the_first_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "WORKERS", 4)
    root = tmp_path / "d"
    for i, c in enumerate("aabb"):
        save(marked(), root / "labeled" / c / f"{i}.png")
    for i in range(30):
        save(marked(corner=100 + i), root / "unlabeled" / f"{i:02d}.png")
    x = load_folder(root)["x_train"]
    assert [int(im[0, 0]) for im in x[4:]] == [100 + i for i in range(30)]  # file order
    (root / "unlabeled" / "07.png").write_bytes(b"not a png")
    (root / "unlabeled" / "21.png").write_bytes(b"not a png either")
    with pytest.raises(DRMMError, match="07.png is not an image"):
        load_folder(root, channels=1)


# ----------------------------------------------------------------------------------------------
# benchmarks/decode_photos.py


def test_decode_photos_benchmark_tiny(tmp_path):
    import decode_photos

    out = tmp_path / "b.json"
    argv = ["--n", "40", "--width", "600", "--height", "400", "--work", str(tmp_path / "w"),
            "--out", str(out)]
    result = decode_photos.main(argv)
    assert json.loads(out.read_text()) == result
    assert result["built_now"] and result["images"] == 40
    assert result["decoded_shape"] == [40, 32, 32, 3]
    assert set(result["images_per_s"]) == {"old", "new", "new_1_thread", "new_processes"}
    assert all(v > 0 for v in [*result["images_per_s"].values(), *result["ratios"].values()])
    assert 0 <= result["mean_abs_pixel_diff_old_vs_new"] < 3  # draft: close to a full decode
    m = result["memory_200k_64px"]
    assert m["rgb"]["uint8_bytes"] == 200_000 * 64 * 64 * 3 == m["rgb"]["float32_bytes"] // 4
    assert m["gray"]["to_tensor_peak_bytes"] == 200_000 * 64 * 64 * 5
    again = decode_photos.main([*argv[:-2], "--no-processes"])  # the folder is kept
    assert not again["built_now"] and "new_processes" not in again["images_per_s"]
    tagged = [p for p in (Path(result["folder"]) / "unlabeled").glob("*.jpg")
              if Image.open(p).getexif().get(0x0112)]
    assert len(tagged) == 15  # indices 10..39 with i % 4 in (1, 3)
