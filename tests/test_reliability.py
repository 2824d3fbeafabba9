"""Fault injection (docs/reliability.md): crashes, full disks, NaNs, bad input, corrupt
downloads and malicious checkpoints. Each test injects one fault and checks what the user sees
and that nothing is lost. The SIGKILL tests, which need subprocesses, are in
test_reliability_crash.py.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import itertools
import json
import pickle
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    assert_same_run,
    crash_at,
    inject,
    one_line_error,
    tiny_arrays,
    tiny_config,
    tiny_dataset,
    tiny_train,
    write_npz,
    write_yaml,
)

import drmm.checkpoint
from drmm.checkpoint import load_checkpoint
from drmm.cli import main
from drmm.config import Config
from drmm.data import Dataset
from drmm.data.download import download
from drmm.data.mnist import load_mnist
from drmm.errors import DRMMError
from drmm.model import DRMM
from drmm.train import train


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run (2 epochs x 8 steps) for the others to be compared with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(tiny_config(checkpoint_every=3), out, data=tiny_dataset(), progress=False)
    return out


def nan_loss(terms):
    return {**terms, "loss": terms["loss"] * float("nan")}


class InfGrad(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (a finite loss, a blown-up step)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


# ---------------------------------------------------------------------------------------------
# 1. Crash-safe training and exact resume


def test_checkpoint_holds_everything_to_continue(reference):
    state = load_checkpoint(reference / "checkpoint.pt")
    assert state["format"] == drmm.checkpoint.CHECKPOINT_FORMAT
    assert {"model", "optimizer", "scheduler", "epoch", "step", "data_rng", "sums", "config",
            "labeled_indices", "history", "skipped"} <= state.keys()
    assert {"torch", "numpy", "python"} <= state["rng"].keys()
    assert any(k.endswith("running_mean") for k in state["model"])  # BatchNorm statistics
    assert (state["epoch"], state["step"]) == (2, 0)
    assert torch.equal(state["labeled_indices"],
                       torch.from_numpy(np.load(reference / "labeled_indices.npy")))


def test_crash_mid_epoch_then_resume_equals_uninterrupted(tmp_path, monkeypatch, reference):
    """An exception at step 13 (epoch 2, step 5): the checkpoint of step 11 (epoch 2, step 3;
    one every 3 steps) is on disk; resuming redoes steps 12 on and ends exactly where the
    reference ended."""
    out = tmp_path / "run"
    crash_at(monkeypatch, tiny_config(checkpoint_every=3), out)
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 3)
    train(tiny_config(checkpoint_every=3), out, resume=True, data=tiny_dataset(), progress=False)
    assert_same_run(reference, out)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, reference):
    """The 3rd checkpoint write hits ENOSPC half-way: one-line error, the 2nd checkpoint is
    intact, no temporary file is left, and the run resumes to the reference result."""
    out = tmp_path / "run"
    real_save, calls = torch.save, itertools.count(1)

    def save(obj, f, *args, **kwargs):
        if next(calls) == 3:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(drmm.checkpoint.torch, "save", save)
    with pytest.raises(DRMMError, match=r"cannot write .*checkpoint.pt \(No space left on device\);"
                       " the previous copy, if any, is kept"):
        train(tiny_config(checkpoint_every=3), out, data=tiny_dataset(), progress=False)
    monkeypatch.setattr(drmm.checkpoint.torch, "save", real_save)
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (0, 6)  # the 2nd save: 6 steps into epoch 1
    assert not list(out.glob("*.tmp"))
    train(tiny_config(checkpoint_every=3), out, resume=True, data=tiny_dataset(), progress=False)
    assert_same_run(reference, out)


def test_stale_temporary_files_are_removed_on_resume(tmp_path, reference):
    out = tmp_path / "run"
    train(tiny_config(epochs=1), out, data=tiny_dataset(), progress=False)
    stale = out / "checkpoint.pt.abc123.tmp"  # what a kill during a write leaves behind
    stale.write_bytes(b"partial")
    train(tiny_config(epochs=2), out, resume=True, data=tiny_dataset(), progress=False)
    assert not stale.exists()


def test_changed_config_is_refused_and_listed(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(epochs=1), out, data=tiny_dataset(), progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    changed = tiny_config(epochs=2, lr=0.05, batch_size=10)
    with pytest.raises(DRMMError) as e:
        train(changed, out, resume=True, data=tiny_dataset(), progress=False)
    msg = str(e.value)
    assert "train.batch_size: 20 -> 10" in msg and "train.lr: 0.1 -> 0.05" in msg
    assert "train.epochs" not in msg  # more epochs is a free change
    assert "--force-resume" in msg
    assert (out / "checkpoint.pt").read_bytes() == before


def test_force_resume_continues_and_warns(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(epochs=1), out, data=tiny_dataset(), progress=False)
    lr_then = load_checkpoint(out / "checkpoint.pt")["history"][-1]["lr"]  # rate for step 9
    capsys.readouterr()
    metrics = train(tiny_config(epochs=2, lr=0.05, lr_final=0.001), out, resume=True,
                    force_resume=True, data=tiny_dataset(), progress=False)
    assert ("changed settings: train.lr: 0.1 -> 0.05; train.lr_final: 0.01 -> 0.001"
            in capsys.readouterr().err)
    assert metrics["epochs"] == 2 and len(metrics["test_error_percent_by_epoch"]) == 2
    # Halving lr halved the current rate; from there the decay was re-planned to reach the new
    # lr_final at the last step (the rate recorded after it is one more decay step on).
    gamma = load_checkpoint(out / "checkpoint.pt")["scheduler"]["gamma"]
    assert gamma == pytest.approx((0.001 / (0.5 * lr_then)) ** (1 / 7))
    assert metrics["test_error_percent_by_epoch"][0] == pytest.approx(100 * json.loads(
        (out / "metrics.jsonl").read_text().splitlines()[0])["test_error"], abs=1e-9)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["lr"] == pytest.approx(0.001 * gamma)


def test_changed_data_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(epochs=1), out, data=tiny_dataset(), progress=False)
    with pytest.raises(DRMMError, match="the data: 96 training images"):
        train(tiny_config(epochs=2), out, resume=True, data=tiny_dataset(n_train=96),
              progress=False)


def test_fresh_run_into_an_existing_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(epochs=1), out, data=tiny_dataset(), progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(DRMMError, match="already holds a run.*--resume"):
        train(tiny_config(epochs=1), out, data=tiny_dataset(), progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_cli_resume_run_dir_needs_no_other_flags(tmp_path, capsys):
    npz, yaml, out = write_npz(tmp_path / "d.npz"), write_yaml(tmp_path), tmp_path / "run"
    assert main(tiny_train(npz, out, yaml, "--labels", "8", "--epochs", "1")) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 2
    assert "has already trained 3 epochs; --epochs 2 must be at least that" in one_line_error(
        capsys)
    assert main(["train", "--resume", str(out), "--lr", "0.5", "--epochs", "4", "--quiet"]) == 2
    assert "train.lr: 0.1 -> 0.5" in one_line_error(capsys)
    assert main(["train", "--resume", str(out), "--lr", "0.5", "--epochs", "4", "--quiet",
                 "--force-resume"]) == 0


@pytest.mark.parametrize("argv,msg", [
    (["train", "--resume", "{tmp}/nowhere"], "nothing to resume"),
    (["train", "--resume", "{tmp}/a", "--out", "{tmp}/b"], "name different folders"),
    (["train", "--epochs", "1"], "no run folder"),
    (["train", "--out", "{tmp}/a", "--force-resume"], "--force-resume only applies"),
])
def test_cli_resume_mistakes(tmp_path, capsys, argv, msg):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert msg in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------
# 2. Data integrity


class CutConnection(io.RawIOBase):
    """A response that sends `good` bytes, then the connection drops."""

    def __init__(self, good: bytes):
        self.data, self.sent = good, False

    def read(self, n=-1):
        if not self.sent:
            self.sent = True
            return self.data
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cut_download_never_becomes_the_cache(tmp_path, monkeypatch):
    payload = b"x" * 1000
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: CutConnection(payload[:300]))
    dest = tmp_path / "cache" / "f.bin"
    with pytest.raises(DRMMError, match="could not download f.bin .*Connection reset"):
        download(["http://mirror/f.bin"], dest, hashlib.md5(payload).hexdigest())
    assert list(dest.parent.iterdir()) == []


def test_corrupt_download_is_rejected_and_stale_parts_cleaned(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"tampered")
    dest = tmp_path / "cache" / "f.bin"
    dest.parent.mkdir()
    (dest.parent / "f.bin.k1ll3d.part").write_bytes(b"left by a killed download")
    with pytest.raises(DRMMError, match=r"checksum mismatch: md5 .*, expected 0+\);.*--data-dir"):
        download([src.as_uri()], dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []


def idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    """Well-formed MNIST-like idx files (40 train, 20 test) whose md5s are not MNIST's."""
    a = tiny_arrays(n_train=40, n_test=20, size=28, classes=10)
    d = tmp_path / "data"
    (d / "mnist").mkdir(parents=True)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        idx_gz(d / "mnist" / f"{prefix}-images-idx3-ubyte.gz", a[f"x_{split}"])
        idx_gz(d / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", a[f"y_{split}"])
    return d


def test_cached_files_are_checksummed_unless_no_verify(fake_mnist, capsys, tmp_path):
    with pytest.raises(DRMMError, match="train-images-idx3-ubyte.gz: bad checksum .*delete it"):
        load_mnist(fake_mnist)
    assert load_mnist(fake_mnist, verify=False)["x_train"].shape == (40, 28, 28)
    out = tmp_path / "run"
    argv = ["train", "--dataset", "mnist", "--data-dir", str(fake_mnist), "--out", str(out),
            "--quiet", "--epochs", "1"]
    assert main(argv) == 2
    assert "bad checksum" in one_line_error(capsys) and not out.exists()


@pytest.mark.parametrize("damage,msg", [
    (lambda p: p.write_bytes(p.read_bytes()[:-40]), "cannot be read"),  # cut gzip stream
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-7])), "truncated"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8)), "bad magic"),
    (lambda p: idx_gz(p, np.zeros((40, 27, 27))), "MNIST's are (28, 28)"),
])
def test_damaged_mnist_files_give_one_line(fake_mnist, capsys, tmp_path, damage, msg):
    """With --no-verify the damage reaches the reader, which names the file and the fix."""
    damage(fake_mnist / "mnist" / "train-images-idx3-ubyte.gz")
    argv = ["train", "--dataset", "mnist", "--data-dir", str(fake_mnist), "--no-verify",
            "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "train-images-idx3-ubyte.gz" in line and msg in line


def test_label_file_of_another_length(fake_mnist):
    idx_gz(fake_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(19))
    with pytest.raises(DRMMError, match="t10k-labels-idx1-ubyte.gz: 19 labels for 20 images"):
        load_mnist(fake_mnist, verify=False)


# ---------------------------------------------------------------------------------------------
# 3. Numerical faults


def test_nan_loss_stops_naming_step_and_terms(tmp_path, monkeypatch):
    out = tmp_path / "run"
    inject(monkeypatch, nan_loss, {12})
    with pytest.raises(DRMMError) as e:
        train(tiny_config(checkpoint_every=3), out, data=tiny_dataset(), progress=False)
    msg = str(e.value)
    assert "non-finite loss at step 12 (epoch 2, step 4 of 8): loss nan ce " in msg
    assert "the last good checkpoint (at the epoch 2, step 3 of 8) is kept" in msg
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 3)
    assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    # The advertised way on: resume, skipping the bad batch (call 1 after resume is step 12).
    inject(monkeypatch, nan_loss, {1})
    metrics = train(tiny_config(checkpoint_every=3, skip_nonfinite=True), out, resume=True,
                    data=tiny_dataset(), progress=False)
    assert metrics["skipped_batches"] == 1


def test_infinite_gradient_stops_too(tmp_path, monkeypatch):
    inject(monkeypatch, lambda t: {**t, "loss": InfGrad.apply(t["loss"])}, {2})
    with pytest.raises(DRMMError, match="non-finite gradient at step 2 .*no checkpoint was"
                       " written yet"):
        train(tiny_config(), tmp_path / "run", data=tiny_dataset(), progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_real_divergence_is_caught(tmp_path, capsys):
    npz, yaml = write_npz(tmp_path / "d.npz"), write_yaml(tmp_path)
    argv = tiny_train(npz, tmp_path / "run", yaml, "--labels", "8", "--lr", "1e30",
                      "--lr-final", "1e30")
    assert main(argv) == 2
    assert "non-finite loss at step" in one_line_error(capsys)


def test_skip_counts_bad_batches(tmp_path, monkeypatch):
    inject(monkeypatch, nan_loss, {3, 10})
    metrics = train(tiny_config(skip_nonfinite=True), tmp_path / "run", data=tiny_dataset(),
                    progress=False)
    assert metrics["skipped_batches"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["skipped_batches"] for r in lines] == [1, 1]
    assert all(np.isfinite(json.loads(r)["train_loss"]) for r in lines)


def test_skipped_batches_change_nothing(tmp_path, monkeypatch):
    """Every batch bad: the weights and the BatchNorm statistics stay at their initial values."""
    inject(monkeypatch, nan_loss, set(range(1, 17)))
    cfg = tiny_config(skip_nonfinite=True)
    metrics = train(cfg, tmp_path / "run", data=tiny_dataset(), progress=False)
    assert metrics["skipped_batches"] == 16
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    torch.manual_seed(cfg.train.seed)
    initial = DRMM(Config.from_dict(saved["config"]).model).state_dict()
    final = saved["model"]
    assert all(torch.equal(initial[k], final[k]) for k in initial)


# ---------------------------------------------------------------------------------------------
# 4. Input validation: one line, exit code 2, nothing written, before any training


@pytest.mark.parametrize("yaml_text,msg", [
    ("train:\n  lerning_rate: 0.1\n", "unknown key train.lerning_rate"),
    ("optim:\n  lr: 0.1\n", "unknown section 'optim'"),
    ("train:\n  optimizer: sgdd\n", "optimizer 'sgdd' unknown"),
    ("model:\n  arch: resnet\n", "arch 'resnet' unknown"),
    ("train:\n  epochs: ten\n", "train.epochs = 'ten' is not a valid value; expected int"),
    ("train:\n  lr: .nan\n", "train.lr = nan is not a valid value"),
    ("train:\n  device: gpu\n", "device 'gpu' unknown"),
    ("loss:\n  alpha_kl: -1\n", "loss.alpha_kl -1.0 must be a finite number, at least 0"),
    ("train:\n  checkpoint_every: -5\n", "checkpoint_every at least 0"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_bad_config_values(tmp_path, capsys, yaml_text, msg):
    (tmp_path / "c.yaml").write_text(yaml_text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]) == 2
    assert msg in one_line_error(capsys)
    assert not out.exists()


def test_yaml_numbers_written_as_1e_3_are_read_as_floats(tmp_path):
    from drmm.config import apply_overrides, preset

    cfg = preset("digits")
    apply_overrides(cfg, {"train": {"lr": "1e-3"}}, source="c.yaml")  # what YAML 1.1 gives
    assert cfg.train.lr == 0.001


@pytest.mark.parametrize("extra,arrays,msg", [
    (["--labels", "10"], {}, "not divisible by the 4 classes"),
    (["--labels", "400"], {}, "more than the 80 labeled training images"),
    (["--batch-size", "400", "--labeled-batch", "200"], {},
     "200 unlabeled images per step is more than the training set"),
    (["--labeled-batch", "0"], {}, "labeled_batch 0 must be from 1 to batch_size - 1"),
    (["--arch", "conv_large"], {}, "--arch conv_large cannot take 8x8 images"),
    ([], {"x_train": np.zeros((80, 9, 9), np.uint8), "x_test": np.zeros((24, 9, 9), np.uint8)},
     "--arch conv_tiny cannot take 9x9 images"),
    ([], {"x_train": tiny_arrays()["x_train"].astype(np.float32)},
     "x_train has dtype float32; images must be uint8"),
    ([], {"y_train": np.full(80, 500)}, "labels go up to 500 but there are only 80"),
    ([], {"y_train": np.full(80, 3)}, "classes [0, 1, 2] have no labeled training image"),
    ([], {"y_test": -np.ones(24, np.int64)}, "y_test has negative labels"),
    ([], {"y_train": np.arange(80) % 4.0}, "labels must be integers"),
    ([], {"y_train": np.zeros(79, np.int64)}, "expected (80,), one label per image"),
    ([], {"x_test": np.zeros((24, 8, 8, 2), np.uint8)}, "x_test has shape (24, 8, 8, 2)"),
])
def test_bad_data_and_sizes(tmp_path, capsys, extra, arrays, msg):
    npz, yaml, out = write_npz(tmp_path / "d.npz", **arrays), write_yaml(tmp_path), tmp_path / "r"
    assert main(tiny_train(npz, out, yaml, "--labels", "8", *extra)) == 2
    assert msg in one_line_error(capsys)
    assert not out.exists()


def test_an_odd_batch_without_a_labeled_share_is_refused(tmp_path, capsys):
    out = tmp_path / "r"  # the npz preset: half of each batch labeled
    assert main(["train", "--dataset", write_npz(tmp_path / "d.npz"), "--batch-size", "21",
                 "--out", str(out)]) == 2
    assert "batch_size 21 must be even" in one_line_error(capsys)
    assert not out.exists()


def test_npz_that_is_not_an_npz(tmp_path, capsys):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(tiny_train(f"npz:{tmp_path / 'd.npz'}", tmp_path / "r",
                           write_yaml(tmp_path), "--labels", "8")) == 2
    assert "not a readable .npz file" in one_line_error(capsys)


def broken(**changes) -> Dataset:
    d = tiny_dataset()
    for k, v in changes.items():
        setattr(d, k, v(getattr(d, k)))
    return d


def with_nan(x):
    x = x.clone()
    x[3, 0, 2, 2] = float("nan")
    return x


@pytest.mark.parametrize("data,msg", [
    (broken(x_train=with_nan), "x_train holds 1 NaN or infinite pixel values"),
    (broken(x_test=lambda x: x * float("inf")), "x_test holds"),
    (broken(x_train=lambda x: (x * 255).to(torch.uint8)), "images must be floating point"),
    (broken(y_train=lambda y: y.to(torch.int32)), "y_train has dtype torch.int32"),
    (broken(y_test=lambda y: y + 1), "y_test has labels outside 0..3"),
    (broken(x_test=lambda x: x[:, :, :4]), "x_test has shape (24, 1, 4, 8)"),
    (broken(num_classes=lambda k: 1), "1 class(es)"),
])
def test_bad_dataset_objects(tmp_path, data, msg):
    """A Dataset handed to train() in Python (or made by preprocessing) is checked too."""
    with pytest.raises(DRMMError, match=re.escape(msg)):
        train(tiny_config(), tmp_path / "run", data=data, progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# 5. Safe loading


class Payload:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_checkpoint_is_refused(tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    good = tmp_path / "good"
    train(tiny_config(epochs=1), good, data=tiny_dataset(), progress=False)
    state = torch.load(good / "checkpoint.pt", weights_only=True)
    state["history"].append(Payload(marker))  # a real checkpoint with one poisoned value
    path = tmp_path / "evil" / "checkpoint.pt"
    path.parent.mkdir()
    with open(path, "wb") as f:
        torch.save(state, f) if how == "torch.save" else pickle.dump(state, f, protocol=2)
    with pytest.raises(DRMMError, match="refusing to load it"):
        load_checkpoint(path)
    assert main(["eval", "--checkpoint", str(path)]) == 2
    line = one_line_error(capsys)
    assert re.search(r"holds objects other than tensors and plain values \(a pickled \S+\);"
                     r" refusing to load it \(unpickling it could run code\)", line), line
    assert "allowlist" not in line  # torch's advice to trust the file is not passed on
    assert main(["train", "--resume", str(path.parent)]) == 2
    assert "refusing to load it" in one_line_error(capsys)
    assert not marker.exists()
    # Check of the test itself: an unsafe load would have run the payload.
    with open(path, "rb") as f:
        torch.load(f, weights_only=False) if how == "torch.save" else pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("content,msg", [
    (lambda good: good[: len(good) // 2], "corrupt or truncated"),
    (lambda good: b"not a checkpoint at all", "is not a weights-only checkpoint"),
    (lambda good: b"", "cannot be read"),
])
def test_damaged_checkpoint(tmp_path, capsys, content, msg):
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run, data=tiny_dataset(), progress=False)
    path = run / "checkpoint.pt"
    path.write_bytes(content(path.read_bytes()))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(path)]) == 2
    assert msg in one_line_error(capsys)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert msg in one_line_error(capsys)


@pytest.mark.parametrize("obj,msg", [
    (torch.zeros(3), "holds a Tensor, not a dict"),
    ({"weights": torch.zeros(3)}, "not a drmm"),
])
def test_foreign_checkpoint(tmp_path, capsys, obj, msg):
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(obj, path)
    assert main(["eval", "--checkpoint", str(path)]) == 2
    assert msg in one_line_error(capsys)
    assert main(["train", "--resume", str(path.parent)]) == 2
    assert msg in one_line_error(capsys)


def test_eval_on_the_wrong_dataset(tmp_path, capsys):
    yaml = write_yaml(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_train(write_npz(tmp_path / "a.npz"), run, yaml, "--labels", "8",
                           "--epochs", "1")) == 0
    other = write_npz(tmp_path / "b.npz", **tiny_arrays(size=12))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--dataset", other]) == 2
    assert "does not fit it" in one_line_error(capsys)
