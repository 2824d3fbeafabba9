"""One source of truth for settings, and the faults it removed: named schedules that set every
training setting, config versions, and the smaller faults of the training loop."""

import copy
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import yaml
from helpers import REAL_FORWARD, tiny_config, tiny_dataset

from drmm.checkpoint import Checkpointer, RunState, load_run_state
from drmm.config import PAPER_SCHEDULE, SCHEDULE_KEYS, Config, load_yaml, preset
from drmm.data import load_dataset
from drmm.data.preprocess import channel_stats
from drmm.errors import DRMMError
from drmm.evaluate import save_image_grid
from drmm.losses import TERMS, LossConfig, StepContext, drmm_objective
from drmm.model import DRMM, ModelConfig
from drmm.reproduce import SCHEDULES, TABLES
from drmm.reproduce.plan import plan
from drmm.step import Batch, Objective, epoch_order, step_weights
from drmm.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
APPENDIX_A = dict(optimizer="sgd", lr=0.2, lr_final=1e-4, decay="exp", momentum=0.0,
                  epochs=500, batch_size=100, labeled_batch=None,  # written out, not imported
                  unlabeled=None, augment="none")  # the paper: none


@pytest.mark.parametrize("table", sorted(TABLES))
def test_paper_schedule_is_appendix_a_for_every_table(table, tmp_path):
    runs = plan(table, "paper", list(TABLES[table].rows), [TABLES[table].labels[0]], [0],
                tmp_path, {}, {})
    for run in runs:
        got = {k: getattr(run.cfg.train, k) for k in APPENDIX_A}
        assert got == APPENDIX_A, run.row
        weights = step_weights(run.cfg, 0, 10)  # the paper's terms alone, at the row's weights
        assert {k for k, w in weights.items() if w} <= {k for k, t in TERMS.items() if t.paper}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_schedule_sets_every_training_setting(schedule):
    for table, settings in SCHEDULES[schedule].items():
        assert set(SCHEDULE_KEYS) <= set(settings), (schedule, table)


def test_fast_table1_decays_exponentially_not_as_the_mnist_preset(tmp_path):
    assert preset("mnist").train.decay == "cosine"  # the preset it starts from
    (run,) = plan("table1", "fast", ["+KL+NN"], [100], [0], tmp_path, {}, {})
    t = run.cfg.train
    assert (t.optimizer, t.lr, t.lr_final, t.decay, t.epochs) == ("sgd", 0.2, 1e-4, "exp", 3)


def test_cpu_hour_is_the_mnist_preset_and_paper_drops_its_additions(tmp_path):
    mnist = preset("mnist").train
    assert mnist.augment == "translate"  # the preset departs from the paper...
    (cpu_hour,) = plan("table1", "cpu-hour", ["+KL+NN"], [100], [0], tmp_path, {}, {})
    (paper,) = plan("table1", "paper", ["+KL+NN"], [100], [0], tmp_path, {}, {})
    for key in SCHEDULE_KEYS:
        assert getattr(cpu_hour.cfg.train, key) == getattr(mnist, key), key
    assert paper.cfg.train.augment == "none"  # ...and the paper schedule does not inherit it


def test_schedule_without_the_table_is_a_clear_error(tmp_path):
    from drmm.errors import DRMMError
    from drmm.reproduce import reproduce

    with pytest.raises(DRMMError, match="schedule 'cpu-hour' has no table4.*'fast', 'paper'"):
        reproduce("table4", tmp_path / "t", schedule="cpu-hour", dry_run=True)


def test_mnist_paper_yaml_is_the_paper_schedule():
    paper = load_yaml(CONFIGS / "mnist_paper.yaml")
    assert paper["train"] == APPENDIX_A == PAPER_SCHEDULE
    assert paper["loss"]["paper_only"] is True  # the paper's objective, whatever the preset's


def test_dry_run_prints_complete_settings(tmp_path, capsys):
    from drmm.cli import main

    assert main(["reproduce", "table1", "--schedule", "paper", "--labels", "100", "--rows",
                 "+KL+NN", "--seeds", "0", "--out", str(tmp_path / "t"), "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    for part in ("500 epochs", "SGD (momentum 0.0)", "lr 0.2 -> 0.0001",
                 "decayed exponentially per step", "batch 100", "N_U = all"):
        assert part in line, part


# ----------------------------------------------------------------------------------------------
# Config versions


def test_version_1_config_loads_with_its_meaning():
    old = copy.deepcopy(Config().to_dict())
    old.pop("version")
    train = old["train"]
    train["schedule"] = train.pop("decay")
    train["schedule"] = "cosine"
    for key in ("labeled_indices", "unlabeled", "channels", "image_size"):
        train.pop(key)  # version 1 had none of these
    cfg = Config.from_dict(old)
    assert cfg.train.decay == "cosine" and cfg.train.unlabeled is None


def test_a_version_7_config_keeps_every_term():
    old = Config().to_dict()
    old["version"] = 7
    old["loss"].pop("paper_only")  # version 7 had no paper's step of its own
    old["train"]["consistency"] = 1.0
    cfg = Config.from_dict(old)
    assert not cfg.loss.paper_only and step_weights(cfg, 0, 10)["con"] == 1.0


def test_newer_config_and_unknown_keys_are_refused():
    newer = {**Config().to_dict(), "version": 99}
    with pytest.raises(DRMMError, match="newer"):
        Config.from_dict(newer)
    odd = Config().to_dict()
    odd["train"]["warp_speed"] = 9
    with pytest.raises(DRMMError, match="unknown key train.warp_speed"):
        Config.from_dict(odd)


def test_diff_lists_changed_settings():
    a, b = Config(), Config()
    b.train.lr, b.train.device = 0.5, "cuda"
    assert a.diff(b, ignore={"train.device"}) == ["train.lr: 0.2 -> 0.5"]


# ----------------------------------------------------------------------------------------------
# The smaller faults


def test_train_leaves_the_callers_config_alone(tmp_path):
    cfg = tiny_config()
    before = copy.deepcopy(cfg.to_dict())
    train(cfg, tmp_path / "run", data=tiny_dataset(), progress=False)
    assert cfg.to_dict() == before


def test_force_resume_with_another_decay_plans_that_decay(tmp_path):
    cfg = tiny_config(decay="exp", epochs=2)
    train(cfg, tmp_path / "run", data=tiny_dataset(), progress=False)
    longer = tiny_config(decay="cosine", epochs=4, lr_final=1e-3)
    train(longer, tmp_path / "run", data=tiny_dataset(), resume=True, force_resume=True,
          progress=False)
    state = load_run_state(tmp_path / "run" / "checkpoint.pt")
    assert "T_max" in state["scheduler"] and "gamma" not in state["scheduler"]  # cosine's state
    lrs = [r["lr"] for r in state["history"]]
    # (each recorded rate is the next step's: one step past the last one trained with)
    assert lrs[1] < 0.01  # the first run reached its own lr_final
    assert lrs[-1] == pytest.approx(1e-3, rel=0.2)  # the continuation reaches the new one...
    assert lrs[2] > 0.004  # ...along a half cosine: halfway, near the mean of its two ends


def test_supervised_only_never_gathers_an_unlabeled_batch(tmp_path, monkeypatch):
    seen = []

    def spy(objective, batch, weights):
        seen.append(batch.x_unl)
        return REAL_FORWARD(objective, batch, weights)

    monkeypatch.setattr(Objective, "forward", spy)
    train(tiny_config(supervised_only=True), tmp_path / "run", data=tiny_dataset(),
          progress=False)
    assert seen and all(x is None for x in seen)


def test_labeled_batch_sets_each_steps_make_up(tmp_path, monkeypatch):
    """--labeled-batch 5 of 21: every step gets 5 labeled and 16 unlabeled images, an epoch is
    one pass over the unlabeled set, and each labeled image comes round in turn."""
    seen = []

    def spy(objective, batch, weights):
        seen.append((len(batch.x_lab), len(batch.x_unl)))
        return REAL_FORWARD(objective, batch, weights)

    monkeypatch.setattr(Objective, "forward", spy)
    data = tiny_dataset()
    train(tiny_config(epochs=1, batch_size=21, labeled_batch=5), tmp_path / "run", data=data,
          progress=False)
    assert seen == [(5, 16)] * (len(data.x_train) // 16)
    lab, unl = epoch_order(torch.arange(8), 80, torch.Generator().manual_seed(0), n_lab=20)
    assert len(lab) == 20 and sorted(lab[:16].tolist()) == sorted(list(range(8)) * 2)
    assert sorted(unl.tolist()) == list(range(80))


def test_terms_at_weight_zero_are_not_computed(monkeypatch):
    lc = LossConfig(alpha_rc=0.0, alpha_kl=1.0, alpha_nn=0.0, paper_only=True)
    logits = torch.randn(4, 3)
    ctx = StepContext(logits, torch.tensor([0, 1, 2, 0]), logits, loss_cfg=lc)
    terms = drmm_objective(ctx, {"ce": 1.0, "rc": 0.0, "kl": 1.0, "nn": 0.0})
    assert set(terms) == {"loss", "ce", "kl"}
    model = DRMM(ModelConfig(arch="conv_tiny", image_size=8, num_classes=4))
    calls = []
    monkeypatch.setattr(model, "top_down", lambda *a, **k: calls.append(1))
    cfg = tiny_config()
    cfg.loss = lc
    x = torch.rand(4, 1, 8, 8)
    terms = Objective(model, cfg)(Batch(x, torch.tensor([0, 1, 2, 3]), x),
                                  step_weights(cfg, 0, 8))
    assert not calls and set(terms) == {"loss", "ce", "kl"}  # no top-down pass at all


def test_unlabeled_subset_is_taken_before_preprocessing(tmp_path):
    from helpers import write_npz

    npz = write_npz(tmp_path / "d.npz")
    sub = load_dataset(npz, preprocess="standardize", unlabeled=40, seed=3)
    raw = load_dataset(npz, unlabeled=40, seed=3)
    assert len(sub.x_train) == 40
    mean, std = channel_stats(raw.x_train[:])  # the statistics of the 40 images trained on
    torch.testing.assert_close(sub.preprocessor.mean, mean)
    torch.testing.assert_close(sub.preprocessor.std, std)


def test_pictures_do_not_switch_the_users_backend(tmp_path):
    before = matplotlib.get_backend()
    save_image_grid([torch.rand(2, 1, 8, 8)], tmp_path / "g.png", ["row"])
    assert matplotlib.get_backend() == before and (tmp_path / "g.png").stat().st_size > 0


def test_non_finite_weights_raise_on_every_rank(tmp_path):
    """Rank 1 (is_main False) raises too, so no rank waits for one that stopped."""
    model = DRMM(ModelConfig(arch="conv_tiny", image_size=8, num_classes=4))
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    ckpt = Checkpointer(tmp_path / "c.pt", model, opt, sched, torch.device("cpu"),
                        is_main=False, steps_per_epoch=4, fixed={}, last_saved=None)
    with pytest.raises(DRMMError, match="non-finite"):
        ckpt.save(RunState(epoch=1))
    assert not (tmp_path / "c.pt").exists()


def test_yaml_round_trip_of_a_saved_config(tmp_path):
    """A run's config.json, as YAML, is a valid --config: every key is still known."""
    cfg = preset("mnist")
    path = tmp_path / "c.yaml"
    d = cfg.to_dict()
    d.pop("version")
    path.write_text(yaml.safe_dump(d))
    from drmm.config import apply_overrides

    other = preset("digits")
    apply_overrides(other, load_yaml(path), source=str(path))
    assert other.to_dict() == cfg.to_dict()
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    assert np.isfinite(cfg.train.lr)


def test_crop_flip_augmentation_trains_and_is_seeded(tmp_path):
    a = train(tiny_config(augment="crop_flip"), tmp_path / "a", data=tiny_dataset(),
              progress=False)
    b = train(tiny_config(augment="crop_flip"), tmp_path / "b", data=tiny_dataset(),
              progress=False)
    train(tiny_config(), tmp_path / "c", data=tiny_dataset(), progress=False)
    curve = [json.loads(x)["train_loss"] for x in (tmp_path / "a" / "metrics.jsonl").open()]
    other = [json.loads(x)["train_loss"] for x in (tmp_path / "c" / "metrics.jsonl").open()]
    assert (a["test_error_percent_by_epoch"] == b["test_error_percent_by_epoch"]
            and np.isfinite(curve).all())
    assert curve != other  # the augmented run saw other images
