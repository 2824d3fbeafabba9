"""The objective's table (drmm.losses.TERMS) is the one place a term is defined: a term added
here, with a weight setting of its own or a fixed weight, gets its flag and its validation, is
off in the paper's step and in the paper's schedule, is named in the run summary, and is
trained and logged by a run, with no change to drmm/."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from helpers import fabricated, one_line_error, tiny_config

import drmm.config
import drmm.losses
from drmm import config_args
from drmm.cli import build_parser, config_from_args, main
from drmm.config import PRESETS, Config
from drmm.losses import LossConfig, Term
from drmm.reproduce.plan import plan
from drmm.reproduce.report import describe_settings
from drmm.step import paper_step, step_weights
from drmm.train import train


@dataclass
class L2LossConfig(LossConfig):
    alpha_l2: float = 0.0  # weight of L_L2, the mean squared class score (0: off)


@dataclass
class L2Config(Config):
    loss: L2LossConfig = field(default_factory=L2LossConfig)


def squared_scores(ctx):
    """L_L2, an L2 penalty on the logits: the labeled images' mean squared class score."""
    return ctx.logits_lab.pow(2).mean()  # ()


@pytest.fixture(params=["setting", "number"])
def l2(request, monkeypatch) -> float:
    """The term "l2" in TERMS, its weight the setting loss.alpha_l2 (a field the config gains
    for the test) or the number 0.01; returns the weight a run gets (the setting: 0.5)."""
    if request.param == "number":
        monkeypatch.setitem(drmm.losses.TERMS, "l2", Term(squared_scores, 0.01))
        return 0.01
    monkeypatch.setitem(drmm.losses.TERMS, "l2", Term(squared_scores, "loss.alpha_l2"))
    monkeypatch.setattr(drmm.config, "Config", L2Config)  # what presets are built on
    monkeypatch.setitem(config_args.SECTIONS, "loss", L2LossConfig)  # what flags are made of
    return 0.5


def with_l2(cfg: Config, weight: float) -> Config:
    """cfg with the term's setting at `weight` (a fixed weight needs none)."""
    if hasattr(cfg.loss, "alpha_l2"):
        cfg.loss.alpha_l2 = weight
    return cfg


def test_the_setting_has_a_flag_and_refuses_a_negative_weight(l2, tmp_path, capsys):
    if l2 == 0.01:
        pytest.skip("a fixed weight has no setting")
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--alpha-l2", "0.5"])
    cfg = config_from_args(args)
    assert cfg.loss.alpha_l2 == 0.5 and step_weights(cfg, 0, 10)["l2"] == 0.5
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "the mean squared class score" in capsys.readouterr().out  # the field's comment
    assert main(["train", "--alpha-l2", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "loss.alpha_l2 -1.0 must be a finite number, at least 0" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_the_paper_step_and_the_paper_schedule_switch_it_off(l2, tmp_path, monkeypatch):
    cfg = with_l2(drmm.config.preset("mnist"), l2)
    assert step_weights(cfg, 0, 10)["l2"] == l2
    assert step_weights(paper_step(cfg), 0, 10)["l2"] == 0.0
    if l2 == 0.5:  # a preset that switches it on
        monkeypatch.setitem(PRESETS, "mnist", {**PRESETS["mnist"],
                                               "loss": {**PRESETS["mnist"]["loss"],
                                                        "alpha_l2": 0.5}})
    for schedule, weight in (("paper", 0.0), ("fast", 0.0), ("cpu-hour", l2)):
        (run,) = plan("table1", schedule, ["+KL+NN"], [100], [0], tmp_path, {}, {})
        assert step_weights(run.cfg, 0, 10)["l2"] == weight, schedule  # cpu-hour: the preset's


def test_the_settings_summary_names_it(l2):
    cfg = with_l2(tiny_config(consistency=0.0), l2)
    cfg.loss.paper_only = False
    name = "alpha_l2" if l2 == 0.5 else "l2"
    assert f"terms beyond the paper's: {name} {l2}," in describe_settings(cfg.to_dict())
    assert "the paper's terms alone," in describe_settings(paper_step(cfg).to_dict())


def test_a_short_run_trains_and_logs_it(l2, tmp_path):
    cfg = with_l2(tiny_config(consistency=0.0), l2)
    cfg.loss.paper_only = False
    train(cfg, tmp_path, data=fabricated(), progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lc = cfg.loss
    for r in records:  # an epoch's mean loss is the weighted sum of its terms' means
        assert r["train_loss"] == pytest.approx(
            lc.alpha_h * r["train_ce"] + lc.alpha_rc * r["train_rc"] + lc.alpha_kl * r["train_kl"]
            + lc.alpha_nn * r["train_nn"] + l2 * r["train_l2"], rel=1e-4, abs=1e-6)
        assert r["train_l2"] > 0
