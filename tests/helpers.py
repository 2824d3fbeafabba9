"""The tests' shared helpers: tiny data sets and configs, the tiny run command, the one-line
error check, a bit-for-bit comparison of two run folders, and fault injection at the training
step's seam (the Objective's forward pass)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drmm.config import Config, preset
from drmm.data import Dataset
from drmm.data import to_tensor_images as to_images
from drmm.step import Objective, paper_step
from drmm.train import train

REAL_FORWARD = Objective.forward  # the seam the fault injections and spies replace

# Record fields that measure time, not what was computed: they differ between equal runs.
TIMING = {"epoch_seconds", "images_per_s", "wall_seconds"}


def tiny_arrays(n_train: int = 80, n_test: int = 24, size: int = 8, classes: int = 4,
                seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 images (N, size, size): dim noise plus one bright quadrant per class."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = np.arange(n) % classes  # (N,)
        x = rng.integers(0, 60, size=(n, size, size))  # (N, H, W)
        h = size // 2
        for c in range(classes):
            r, col = divmod(c % 4, 2)
            x[y == c, r * h:(r + 1) * h, col * h:(col + 1) * h] += 180
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def tiny_dataset(**kw) -> Dataset:
    a = tiny_arrays(**kw)
    return Dataset("tiny", to_images(a["x_train"]), torch.from_numpy(a["y_train"]),
                   to_images(a["x_test"]), torch.from_numpy(a["y_test"]),
                   num_classes=int(a["y_train"].max()) + 1)


def fabricated(n: int = 120, size: int = 12, seed: int = 0) -> Dataset:
    """Two classes of 12x12 images: a bright blob top-left or bottom-right, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2  # (N,)
    x = 0.1 * torch.rand(n, 1, size, size, generator=g)  # (N, 1, H, W)
    x[y == 0, :, 2:6, 2:6] += 0.8
    x[y == 1, :, 6:10, 6:10] += 0.8
    return Dataset("fabricated", x[:80], y[:80], x[80:], y[80:], num_classes=2)


def write_npz(path: Path, **overrides) -> str:
    """A prepared-arrays file of tiny_arrays(), with some arrays replaced; returns npz:PATH."""
    arrays = {**tiny_arrays(), **overrides}
    np.savez(path, **arrays)
    return f"npz:{path}"


def tiny_config(**train) -> Config:
    """The paper's step on the digits preset's schedule, shrunk: conv_tiny, 8 labels, batch 20
    (8 steps per epoch on tiny_dataset()), 2 epochs; `train` overrides train settings."""
    cfg = paper_step(preset("digits"))  # a term a preset adds is switched on by its own tests
    cfg.model.arch = "conv_tiny"
    cfg.train.labels, cfg.train.batch_size, cfg.train.epochs = 8, 20, 2
    cfg.train.lr, cfg.train.lr_final = 0.1, 0.01
    cfg.train.tensorboard = cfg.train.report = False
    cfg.train.precision = "fp32"  # the same bits on every CPU
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def one_line_error(capsys) -> str:
    """The one error line a failed command wrote on stderr, no traceback; any other line is a
    drmm note or warning (such as the folder preset's)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith(("drmm: warning",
                                                                       "drmm: note"))]
    assert len(lines) == 1 and lines[0].startswith("drmm: error: "), err
    return lines[0]


CLASSES = ["cat", "dog", "eel", "fox"]  # sorted, as the loader orders them


def make_folder(root, labeled_per_class=2, test=True, rgb_one=False):
    """tiny_arrays() as PNG files: 2 labeled per class, the rest of the 80 unlabeled (nested
    sub-folders), 24 test images. Returns (root, arrays)."""
    a = tiny_arrays()
    taken = {c: 0 for c in range(4)}
    for i, (x, y) in enumerate(zip(a["x_train"], a["y_train"], strict=True)):
        if taken[y] < labeled_per_class:
            path = root / "labeled" / CLASSES[y] / f"{i:03d}.png"
            taken[y] += 1
        else:
            path = root / "unlabeled" / f"part{i % 3}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(x)
        (img.convert("RGB") if rgb_one and i == 0 else img).save(path)
    if test:
        for i, (x, y) in enumerate(zip(a["x_test"], a["y_test"], strict=True)):
            path = root / "test" / CLASSES[y] / f"t{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(path)
    return root, a


def paper_flags() -> list[str]:
    """The flags that make a run's step the paper's: what drmm.step.paper_step changes in a
    config, as flags."""
    before, after = Config().flat(), paper_step(Config()).flat()
    flags = []
    for key, value in after.items():
        if value != before[key]:
            name = "--" + key.split(".")[1].replace("_", "-")
            flags += [name] if value is True else [name, str(value)]
    return flags


def tiny_train(dataset: str, out: Path, yaml: str, *extra: str) -> list[str]:
    """`drmm train` arguments for a tiny run of the paper's step (paper_flags): 2 epochs of
    conv_tiny, batch 20 (10 labeled), SGD from 0.1 to 0.01; `extra` flags override these."""
    return ["train", "--dataset", dataset, "--arch", "conv_tiny", "--batch-size", "20",
            "--labeled-batch", "10", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.1",
            "--lr-final", "0.01", "--decay", "exp", *paper_flags(), "--config", yaml,
            "--out", str(out), "--quiet", *extra]


def write_yaml(folder: Path) -> str:
    """A --config file that switches TensorBoard off (its import alone costs seconds) and the
    report (a second or two of matplotlib), and pins fp32 (the same arithmetic on every CPU; a
    test of bf16 passes --precision bf16)."""
    path = folder / "quiet.yaml"
    path.write_text("train:\n  tensorboard: false\n  report: false\n  precision: fp32\n")
    return str(path)


def records(run: Path) -> list[dict]:
    """metrics.jsonl without the timing fields."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    """Two finished runs computed exactly the same thing: weights, BN statistics, optimiser
    and schedule state, per-epoch metrics (timings aside) and the final metrics."""
    sa = torch.load(a / "checkpoint.pt", weights_only=True)
    sb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]
    for k, st in sa["optimizer"]["state"].items():
        for name, v in st.items():
            other = sb["optimizer"]["state"][k][name]
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(other)), (k, name)
    assert sa["scheduler"] == sb["scheduler"]
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert records(a) == records(b)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    ma.pop("wall_seconds"), mb.pop("wall_seconds")
    assert ma == mb


def inject(monkeypatch, fault, at_calls):
    """Wrap the Objective's forward pass: call number n (from 1) in at_calls gets
    fault(terms). monkeypatch.setattr(Objective, "forward", REAL_FORWARD) ends it."""
    calls = itertools.count(1)

    def forward(self, *args, **kwargs):
        terms = REAL_FORWARD(self, *args, **kwargs)
        return fault(terms) if next(calls) in at_calls else terms

    monkeypatch.setattr(Objective, "forward", forward)


def crash(terms):
    raise RuntimeError("injected crash")


def crash_at(monkeypatch, cfg: Config, out: Path, call: int = 13) -> None:
    """Train cfg on tiny_dataset() into out until the Objective's forward call number `call`
    raises; out then holds the checkpoint a resume continues. The forward is real again after."""
    inject(monkeypatch, crash, {call})
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, out, data=tiny_dataset(), progress=False)
    monkeypatch.setattr(Objective, "forward", REAL_FORWARD)


def tiny_folder_run(tmp: Path) -> tuple[Path, dict, Path]:
    """A DRMM trained 2 epochs (tiny_train) on make_folder's folder of PNG files under tmp, with
    its own cache: (the folder, its arrays, the run folder). For module-scoped fixtures."""
    from drmm.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRMM_CACHE", str(tmp / "cache"))
        root, arrays = make_folder(tmp / "d")
        assert main(tiny_train(f"folder:{root}", tmp / "run", write_yaml(tmp))) == 0
    return root, arrays, tmp / "run"
