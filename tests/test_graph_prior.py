"""The graph prior: label spreading's pseudo-labels, their loss term, and a run steered by them."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from helpers import fabricated, tiny_config

from drmm.config import Config, validate
from drmm.errors import DRMMError
from drmm.graph_prior import propagate_labels
from drmm.losses import LossConfig, StepContext, drmm_objective, graph_prior
from drmm.model import DRMM
from drmm.step import Batch, Objective
from drmm.train import train


def test_pseudo_labels_follow_the_clusters():
    data = fabricated()  # two blobs, the classes alternate: images 0 and 1 are one of each
    pseudo, certainty = propagate_labels(data.x_train, np.array([0, 1]),
                                         data.y_train[:2].numpy(), num_classes=2)
    assert pseudo.shape == certainty.shape == (80,) and pseudo.dtype == torch.int64
    assert torch.equal(pseudo, data.y_train)
    assert ((certainty > 0) & (certainty <= 1)).all()


def test_a_class_without_labeled_images_is_never_a_pseudo_label():
    data = fabricated()
    pseudo, certainty = propagate_labels(data.x_train, np.array([0, 1]),
                                         data.y_train[:2].numpy(), num_classes=3)
    assert set(pseudo.tolist()) == {0, 1} and certainty.min() >= 0


def test_graph_term_by_hand_and_its_weight():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], requires_grad=True)  # q0 = 3/4, 1/2
    pseudo, certainty = torch.tensor([0, 1]), torch.tensor([0.5, 0.0])
    value = graph_prior(logits, pseudo, certainty)
    assert value.item() == pytest.approx(0.5 * math.log(4 / 3) / 2)
    value.backward()
    assert logits.grad[1].abs().sum() == 0  # certainty 0: no pull at all
    ctx = StepContext(logits.detach(), torch.tensor([0, 1]), logits.detach(),
                      torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1), [torch.zeros(1)],
                      graph=(pseudo, certainty), loss_cfg=LossConfig())
    weights = {"ce": 1.0, "rc": 0.2, "kl": 1.0, "nn": 1.0}
    plain = drmm_objective(ctx, weights)
    steered = drmm_objective(ctx, {**weights, "graph": 0.25})
    off = drmm_objective(ctx, {**weights, "graph": 0.0})
    assert "graph" not in plain and "graph" not in off and "graph" in steered
    assert steered["loss"].item() == pytest.approx(plain["loss"].item() + 0.25 * value.item())


def test_pseudo_labels_alone_train_the_classifier(tmp_path):
    """With every other term off, the graph prior is all the signal there is: the network learns
    the two classes from two labeled images' spread labels, and the term fades after 3 epochs."""
    cfg = tiny_config(epochs=4, optimizer="adam", lr=0.01, lr_final=0.01, graph_prior=3.0,
                      consistency=0.0)
    cfg.loss.paper_only = False
    cfg.loss.alpha_h = cfg.loss.alpha_rc = cfg.loss.alpha_kl = cfg.loss.alpha_nn = 0.0
    train(cfg, tmp_path, data=fabricated(), progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["train_graph"] > records[2]["train_graph"]
    assert "train_graph" not in records[3]  # weight 0 from epoch 4 on: not computed
    assert records[-1]["test_error"] <= 0.1


def test_graph_prior_is_off_in_older_configs_and_never_negative():
    old = copy.deepcopy(Config().to_dict())
    old["version"] = 4
    old["train"].pop("graph_prior")
    assert Config.from_dict(old).train.graph_prior == 0.0
    cfg = Config()
    cfg.train.graph_prior = -1.0
    with pytest.raises(DRMMError, match="graph_prior"):
        validate(cfg)


@pytest.mark.parametrize("unsup_on", ["unlabeled", "all"])
def test_step_takes_the_graph_term_over_the_images_it_names(unsup_on):
    """With unsup_on "all" the labeled images join the term with their own labels, certainty 1."""
    cfg = tiny_config()
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 12, 2
    cfg.loss.unsup_on = unsup_on
    torch.manual_seed(0)
    model = DRMM(cfg.model).eval()  # eval: the same BatchNorm statistics in both passes
    data = fabricated()
    x_lab, y_lab, x_unl = data.x_train[:4], data.y_train[:4], data.x_train[4:10]
    pseudo, certainty = torch.tensor([1, 0, 1, 0, 1, 0]), torch.rand(6)
    with torch.no_grad():
        terms = Objective(model, cfg)(Batch(x_lab, y_lab, x_unl, graph=(pseudo, certainty)),
                                      {"ce": 1.0, "graph": 0.5})
        logits = model(torch.cat([x_lab, x_unl]) if unsup_on == "all" else x_unl)  # (B, K)
    if unsup_on == "all":
        pseudo, certainty = torch.cat([y_lab, pseudo]), torch.cat([torch.ones(4), certainty])
    assert terms["graph"].item() == pytest.approx(graph_prior(logits, pseudo, certainty).item(),
                                                  rel=1e-5)
