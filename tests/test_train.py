"""Training: a short run lowers the loss, runs are reproducible, and resume continues exactly."""

import json

import numpy as np
import pytest
import torch

from drmm.config import preset
from drmm.data import Dataset
from drmm.evaluate import confusion, error_rate, worst_confusion
from drmm.model import DRMM, ModelConfig
from drmm.train import (
    Objective,
    describe_confusion,
    epoch_order,
    make_optimizer,
    step_terms,
    train,
    train_step,
)


def fabricated(n: int = 120, size: int = 12, seed: int = 0) -> Dataset:
    """Two classes of 12x12 images: a bright blob top-left or bottom-right, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2  # (N,)
    x = 0.1 * torch.rand(n, 1, size, size, generator=g)  # (N, 1, H, W)
    x[y == 0, :, 2:6, 2:6] += 0.8
    x[y == 1, :, 6:10, 6:10] += 0.8
    return Dataset("fabricated", x[:80], y[:80], x[80:], y[80:], num_classes=2)


def tiny_config(**train):
    cfg = preset("digits")
    cfg.model.arch = "conv_tiny"
    cfg.train.labels, cfg.train.batch_size, cfg.train.epochs = 10, 20, 2
    cfg.train.consistency = 0.0  # the digits preset's L_CON: its own tests turn it on
    cfg.train.tensorboard = False
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.mark.parametrize("supervised_only", [False, True])
def test_thirty_steps_lower_the_loss(supervised_only):
    data = fabricated()
    cfg = tiny_config(supervised_only=supervised_only, lr=0.05, lr_final=0.05)
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 12, 2
    torch.manual_seed(0)
    model = DRMM(cfg.model)
    opt, sched = make_optimizer(model, cfg, 30)
    labeled = torch.arange(10)
    lab_order, unl_order = epoch_order(labeled, 80, torch.Generator().manual_seed(0))
    fixed = (data.x_train[:10], data.y_train[:10], data.x_train[10:20])

    def loss_on_fixed_batch():
        with torch.no_grad():
            return step_terms(model, cfg, *fixed)["loss"].item()

    before = loss_on_fixed_batch()
    stepper = Objective(model, cfg)
    for step in range(30):
        il, iu = lab_order[(step % 8) * 10:][:10], unl_order[(step % 8) * 10:][:10]
        x_unl = None if supervised_only else data.x_train[iu]
        terms = train_step(stepper, model, opt, sched, (data.x_train[il], data.y_train[il], x_unl))
        want = {"loss", "ce"} if supervised_only else {"loss", "ce", "rc", "kl", "nn"}
        assert set(terms) == want
    assert loss_on_fixed_batch() < before - 0.1


def test_reconstruction_error_falls(tmp_path):
    """The top-down pass really learns to render: L_RC drops well below its start (and below
    rendering nothing, mean(x^2)) when it is the main unsupervised term."""
    cfg = tiny_config(epochs=4, optimizer="adam", lr=0.01, lr_final=0.01)
    cfg.loss.alpha_rc, cfg.loss.alpha_kl = 1.0, 0.0
    data = fabricated()
    train(cfg, tmp_path, data=data, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_rc"] < 0.7 * records[0]["train_rc"]
    assert records[-1]["train_rc"] < 0.7 * data.x_train.pow(2).mean().item()


def test_same_seed_same_run(tmp_path):
    a = train(tiny_config(), tmp_path / "a", data=fabricated(), progress=False)
    b = train(tiny_config(), tmp_path / "b", data=fabricated(), progress=False)
    assert a["test_error_curve"] == b["test_error_curve"]
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_run_folder_contents(tmp_path):
    metrics = train(tiny_config(), tmp_path, data=fabricated(), progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert 0.0 <= saved["test_error"] <= 1.0 and saved["epochs"] == 2
    true, pred, n = saved["worst_confusion"]  # the largest mix-up, within the 40 test images
    assert true != pred and 0 <= n <= round(saved["test_error"] * 40)
    idx = np.load(tmp_path / "labeled_indices.npy")
    assert len(idx) == 10 and np.bincount(fabricated().y_train.numpy()[idx]).tolist() == [5, 5]
    assert (tmp_path / "reconstructions.png").stat().st_size > 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_confusion_counts_every_test_image_once():
    torch.manual_seed(0)
    data, model = fabricated(), DRMM(ModelConfig(arch="conv_tiny", image_size=12, num_classes=2))
    counts = confusion(model, data.x_test, data.y_test, batch_size=7)  # (2, 2), uneven batches
    model.eval()
    pred = model(data.x_test).argmax(dim=1)  # (40,)
    assert counts.sum() == 40 and counts.sum(dim=1).tolist() == [20, 20]  # rows: true classes
    assert counts.diagonal().sum() == (pred == data.y_test).sum()
    assert error_rate(counts) == (pred != data.y_test).float().mean().item()


def test_worst_confusion_names_the_largest_mix_up():
    counts = torch.tensor([[5, 1, 0], [0, 3, 4], [2, 0, 9]])  # row: true class, column: predicted
    assert worst_confusion(counts) == (1, 2, 4)
    assert describe_confusion(worst_confusion(counts), ["a", "b", "c"]) == (
        " (most often: 4 test b called c)")
    assert describe_confusion(worst_confusion(torch.eye(3, dtype=torch.int64)), ["a", "b", "c"]
                              ) == ""  # no mistakes, nothing to name


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    """--precision bf16 (meant for CUDA) runs the same loop under autocast; here on the CPU."""
    metrics = train(tiny_config(precision="bf16"), tmp_path, data=fabricated(), progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r[f"train_{k}"]) for r in records for k in ("loss", "ce", "rc", "kl"))
    assert 0.0 <= metrics["test_error"] <= 1.0
