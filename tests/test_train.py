"""Training: a short run lowers the loss, runs are reproducible, and resume continues exactly."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fabricated, tiny_config

import drmm
import drmm.losses
from drmm.config import preset
from drmm.evaluate import confusion, error_rate, worst_confusion
from drmm.losses import TERMS, Term
from drmm.model import DRMM, ModelConfig
from drmm.optim import make_optimizer
from drmm.records import describe_confusion
from drmm.step import Batch, Objective, epoch_order, make_batch, paper_step, step_weights
from drmm.train import train


@pytest.mark.parametrize("supervised_only", [False, True])
def test_thirty_steps_lower_the_loss(supervised_only):
    data = fabricated()
    cfg = tiny_config(supervised_only=supervised_only, lr=0.05, lr_final=0.05, augment="none")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 12, 2
    torch.manual_seed(0)
    model = DRMM(cfg.model)
    opt, sched = make_optimizer(model, cfg, 30)
    labeled = torch.arange(10)
    lab_order, unl_order = epoch_order(labeled, 80, torch.Generator().manual_seed(0))
    weights = step_weights(cfg, 0, 8)
    fixed = Batch(data.x_train[:10], data.y_train[:10],
                  None if supervised_only else data.x_train[10:20])

    objective = Objective(model, cfg)

    def loss_on_fixed_batch():
        with torch.no_grad():
            return objective(fixed, weights)["loss"].item()

    before = loss_on_fixed_batch()
    for step in range(30):
        batch = make_batch(cfg, data.x_train, data.y_train, (lab_order, unl_order), step % 8,
                           weights)
        terms = objective(batch, weights)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        sched.step()
        want = {"loss", "ce"} if supervised_only else {"loss", "ce", "rc", "kl", "nn"}
        assert set(terms) == want
    assert loss_on_fixed_batch() < before - 0.1


def test_a_terms_value_is_four_calls_from_train(tmp_path, monkeypatch):
    """The step on one screen: train -> train_epoch (zero_grad, backward, the finite check and
    the step are there) -> the Objective's forward (the E-step) -> drmm_objective -> a term."""
    package = Path(drmm.__file__).parent
    chains = []

    def probe(ctx):  # a term that records who called it, and adds 0
        if not chains:
            names = [f.function for f in inspect.stack(0)[1:]
                     if Path(f.filename).resolve().is_relative_to(package)]  # drmm's own calls
            chains.append(names[:names.index("train") + 1])
        return 0.0 * ctx.logits_lab.sum()  # ()

    monkeypatch.setitem(drmm.losses.TERMS, "probe", Term(probe, 1.0))
    cfg = tiny_config(epochs=1)
    cfg.loss.paper_only = False
    train(cfg, tmp_path, data=fabricated(), progress=False)
    assert chains == [["drmm_objective", "forward", "train_epoch", "train"]]


def test_step_weights_are_the_config_at_a_step():
    cfg = tiny_config(graph_prior=2.0, consistency=0.5)
    cfg.loss.paper_only = False
    at = [step_weights(cfg, step, 10) for step in (0, 15, 25)]  # 10 steps an epoch
    assert [w["graph"] for w in at] == [1.0, pytest.approx(0.25), 0.0]  # falls over 2 epochs
    assert all(w["con"] == 0.5 and w["rc"] == cfg.loss.alpha_rc for w in at)
    cfg.train.supervised_only = True
    assert step_weights(cfg, 0, 10) == {"ce": cfg.loss.alpha_h}


def test_the_paper_step_has_the_papers_terms_alone():
    mnist = preset("mnist")  # adds the graph prior and the consistency term
    weights = step_weights(paper_step(mnist), 0, 10)
    assert {k for k, w in weights.items() if w} == {k for k, t in TERMS.items() if t.paper}
    assert mnist.train.consistency == 1.0 and mnist.train.graph_prior == 1.0  # not changed


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
    assert a["test_error_percent_by_epoch"] == b["test_error_percent_by_epoch"]
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_run_folder_contents(tmp_path):
    metrics = train(tiny_config(), tmp_path, data=fabricated(), progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert 0.0 <= saved["test_error_percent"] <= 100.0 and saved["epochs"] == 2
    worst = saved["worst_confusion"]  # the largest mix-up, within the 40 test images, by name
    assert set(worst) == {"true", "predicted", "count"} and worst["true"] != worst["predicted"]
    assert {worst["true"], worst["predicted"]} <= {"0", "1"}
    assert 0 <= worst["count"] <= round(saved["test_error_percent"] / 100 * 40)
    idx = np.load(tmp_path / "labeled_indices.npy")
    assert len(idx) == 8 and np.bincount(fabricated().y_train.numpy()[idx]).tolist() == [4, 4]
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
    assert 0.0 <= metrics["test_error_percent"] <= 100.0


def test_evaluating_every_k_epochs_changes_no_training_number(tmp_path, capsys):
    """eval_every = 2 over 3 epochs evaluates epochs 2 and 3 (the last always), says when the
    next evaluation comes, and trains exactly as evaluating every epoch does."""
    every = train(tiny_config(epochs=3), tmp_path / "every", data=fabricated(), progress=False)
    sparse = train(tiny_config(epochs=3, eval_every=2), tmp_path / "sparse", data=fabricated(),
                   progress=False)
    assert "epoch 1: next evaluation at epoch 2" in capsys.readouterr().out
    curve, full = sparse["test_error_percent_by_epoch"], every["test_error_percent_by_epoch"]
    assert curve[0] is None and curve[1:] == full[1:]
    assert sparse["test_error_percent"] == every["test_error_percent"]

    def training(run):  # every record's loss terms, lr and skipped batches
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k.startswith("train_")
                 or k in ("lr", "skipped_batches")} for line in lines]

    assert training("sparse") == training("every")
    sa = torch.load(tmp_path / "every" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "sparse" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
