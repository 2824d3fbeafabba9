"""The recipe's additions to the paper's step: augmentations, the consistency term's strong
views, the ramp of the unlabeled batch; and runs of options that were removed, which still load
and resume."""

import itertools
import json
import math

import pytest
import torch
from helpers import (
    REAL_FORWARD,
    assert_same_run,
    crash_at,
    tiny_config,
    tiny_dataset,
)

from drmm.checkpoint import load_checkpoint, save_checkpoint
from drmm.config import Config, apply_overrides, preset, validate
from drmm.data.augment import JITTER, augment, colour_jitter, cutout, random_affine, strong_view
from drmm.errors import DRMMError
from drmm.losses import ramp
from drmm.model import DRMM, ModelConfig
from drmm.step import Batch, Objective, epoch_images, step_weights, unlabeled_per_step
from drmm.train import train


def test_ramp_rises_linearly_and_none_is_one():
    assert [ramp(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert ramp(0, 0) == 1.0  # no ramp: the full value from the first step


@pytest.mark.parametrize("mode, pad, mirrors", [("crop_flip", 4, (0, 1)), ("translate", 2, (0,))])
def test_augmentation_is_a_crop_of_the_padded_image(mode, pad, mirrors):
    """Each image of both halves: one of the (2 pad + 1)^2 crops of the zero-padded image,
    mirrored (crop_flip, half the time) or never (translate)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 12, 12)  # (B, C, H, W)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = range(2 * pad + 1)
    seen = set()
    for _ in range(10):
        lab, _, unl = augment((x, None, x), mode)
        for out, i in itertools.product((lab, unl), range(len(x))):
            found = [(dy, dx, m) for dy in offsets for dx in offsets for m in (0, 1)
                     if torch.equal(out[i], padded[i, :, dy:dy + 12, dx:dx + 12].flip(2) if m
                                    else padded[i, :, dy:dy + 12, dx:dx + 12])]
            assert len(found) == 1
            seen.add(found[0])
    assert {m for _, _, m in seen} == set(mirrors)
    assert len(seen) > 0.3 * len(offsets) ** 2 * len(mirrors)  # many of the crops (80 draws)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mass (B,), centre (B, 2) in pixels (row, column) and main-axis angle (B,) in degrees of
    a batch of one-channel images (B, 1, H, W)."""
    img = x[:, 0]  # (B, H, W)
    rows, cols = torch.meshgrid(torch.arange(img.shape[1]).float(),
                                torch.arange(img.shape[2]).float(), indexing="ij")  # (H, W)
    mass = img.sum((1, 2))  # (B,)
    cy, cx = (img * rows).sum((1, 2)) / mass, (img * cols).sum((1, 2)) / mass  # (B,)
    dy, dx = rows - cy.view(-1, 1, 1), cols - cx.view(-1, 1, 1)  # (B, H, W)
    syy, sxx, sxy = ((img * d).sum((1, 2)) / mass for d in (dy * dy, dx * dx, dx * dy))
    angle = 0.5 * torch.atan2(2 * sxy, sxx - syy) * 180 / torch.pi  # (B,) 0: along the rows
    return mass, torch.stack([cy, cx], 1), angle


def test_affine_turns_zooms_and_shifts_each_image_within_its_bounds():
    """A horizontal bar comes out turned by at most 10 degrees, its centre moved by a shift of
    at most 2 px each way, turned and zoomed with the image, its area scaled by 0.9^2 to 1.1^2;
    each image has its own draw, and no turn, zoom or shift is the image itself."""
    x = torch.zeros(200, 1, 28, 28)  # (B, C, H, W)
    x[:, :, 13:15, 6:22] = 1  # a 2 x 16 bar through the centre
    torch.testing.assert_close(random_affine(x, 0.0, 0.0, 0), x, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    out = random_affine(x, 10.0, 0.1, 2)  # (B, C, H, W)
    mass0, centre0, _ = moments(x)
    mass, centre, angle = moments(out)
    assert angle.abs().max() <= 10.5 and angle.min() < -5 and angle.max() > 5
    shift = (centre - centre0).abs()  # (B, 2)
    bound = 2 * 1.1 * (math.cos(math.radians(10)) + math.sin(math.radians(10)))  # 2.55 px
    assert shift.max() <= bound + 0.05 and shift.max() > 1.5
    ratio = mass / mass0  # (B,) bilinear resampling keeps the area times zoom^2
    assert ratio.min() >= 0.9**2 - 0.02 and ratio.max() <= 1.1**2 + 0.02
    assert ratio.min() < 0.85 and ratio.max() > 1.15
    assert len(torch.unique(out.flatten(1), dim=0)) == len(x)  # a draw per image


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(64, 1, 20, 20)  # (B, C, H, W)
    out = cutout(x, 0.4)  # a square of side at most 8 px, centred anywhere
    zeros = (out == 0).flatten(1).sum(1)  # (B,) pixels cut per image
    assert zeros.max() == 7 * 7 and zeros.min() >= 1  # (the side is 2 * 4 - 1, centre pixel in)
    assert ((out == 0) | (out == 1)).all()  # the rest untouched
    rows, cols = (out[:, 0] == 0).any(2), (out[:, 0] == 0).any(1)  # (B, H), (B, W)
    assert (rows.sum(1) <= 7).all() and (cols.sum(1) <= 7).all()  # one square, not scattered
    assert strong_view(x).shape == x.shape


def test_colour_jitter_changes_brightness_contrast_and_saturation_per_image():
    torch.manual_seed(0)
    x = torch.randn(256, 3, 8, 8)  # (B, C, H, W) standardized photos
    out = colour_jitter(x, JITTER)
    shift = (out.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs()  # (B,) brightness moves the mean
    assert shift.max() <= JITTER + 1e-5 and shift.max() > JITTER / 2
    spread = out.std((1, 2, 3)) / x.std((1, 2, 3))  # (B,) contrast and saturation scale it
    assert spread.min() >= (1 - JITTER) ** 2 - 1e-4 and spread.max() <= (1 + JITTER) ** 2 + 1e-4
    assert spread.min() < 0.8 and spread.max() > 1.2
    assert len(torch.unique(out.flatten(1), dim=0)) == len(x)  # a draw per image
    grey = x.mean(1, keepdim=True).expand_as(x)  # (B, 3, H, W) no colour: saturation keeps it
    assert torch.allclose(colour_jitter(grey, JITTER).std(1), torch.zeros(256, 8, 8), atol=1e-5)
    gray = torch.randn(16, 1, 8, 8)  # (B, 1, H, W) grayscale: brightness and contrast only
    assert colour_jitter(gray, JITTER).shape == gray.shape


def test_the_colour_strong_view_is_what_the_step_trains_on(monkeypatch):
    """train.strong_view = colour: the step's strong views are jittered; affine: never."""
    seen = []
    monkeypatch.setattr("drmm.data.augment.colour_jitter", lambda x, j: seen.append(j) or x)
    cfg = tiny_config(consistency=1.0)
    cfg.loss.paper_only, cfg.loss.con_threshold = False, 0.0
    model = DRMM(ModelConfig(arch="conv_tiny", image_size=8, num_classes=4))
    data = tiny_dataset()
    batch = Batch(data.x_train[:5], data.y_train[:5], data.x_train[5:10])
    Objective(model, cfg)(batch, step_weights(cfg, 0, 8))
    assert seen == []
    cfg.train.strong_view = "colour"
    Objective(model, cfg)(batch, step_weights(cfg, 0, 8))
    assert seen == [JITTER]


def test_consistency_term_trains_on_the_strong_view(monkeypatch):
    """With train.consistency the step adds L_CON on a second bottom-up pass (the strong
    views); every parameter the step reaches still gets a finite gradient."""
    cfg = tiny_config(consistency=1.0)
    cfg.loss.paper_only, cfg.loss.con_threshold = False, 0.0  # every image: the term is not 0
    model = DRMM(ModelConfig(arch="conv_tiny", image_size=8, num_classes=4))
    data = tiny_dataset()
    x_unl = data.x_train[5:10]
    batch = Batch(data.x_train[:5], data.y_train[:5], x_unl, x_strong=strong_view(x_unl))
    terms = Objective(model, cfg)(batch, step_weights(cfg, 0, 8))
    assert terms["con"].item() > 0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    batch.x_strong = None  # the step makes its own views
    assert "con" in Objective(model, cfg)(batch, step_weights(cfg, 0, 8))
    cfg.train.consistency = 0.0
    assert "con" not in Objective(model, cfg)(batch, step_weights(cfg, 0, 8))


@pytest.mark.parametrize("view", ["affine", "colour"])
def test_consistency_run_logs_its_term_and_resumes_exactly(tmp_path, monkeypatch, view):
    """The strong views are drawn from the saved random state: a crashed run with consistency
    resumes to the same end bit for bit, and its log carries the term."""
    cfg = tiny_config(checkpoint_every=3, augment="translate", consistency=1.0, strong_view=view)
    cfg.loss.paper_only = False
    ref = tmp_path / "ref"
    train(cfg, ref, data=tiny_dataset(), progress=False)
    assert "train_con" in (ref / "metrics.jsonl").read_text()
    out = tmp_path / "run"
    crash_at(monkeypatch, cfg, out)
    train(cfg, out, resume=True, data=tiny_dataset(), progress=False)
    assert_same_run(ref, out)


def test_a_run_of_a_removed_option_loads_and_resumes_with_a_note(tmp_path, monkeypatch, capsys):
    """A checkpoint of a version that had the weight average (and a KL warm-up): its config
    drops the keys with one line saying so, its SGD weights ("online_model") continue, to
    the end an uninterrupted run reaches."""
    cfg = tiny_config(checkpoint_every=3)
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(cfg, ref, data=tiny_dataset(), progress=False)
    crash_at(monkeypatch, cfg, run)
    state = load_checkpoint(run / "checkpoint.pt")  # as an older version wrote it:
    state["config"]["version"] = 5
    state["config"]["train"].update(ema=0.98, kl_warmup=0.0)
    state["config"]["loss"].update(alpha_bal=0.0, kl_threshold=0.0, render_from="c_hat")
    state["online_model"] = state["model"]  # the SGD weights, and their average as "model"
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(run / "checkpoint.pt", state)
    capsys.readouterr()
    train(cfg, run, resume=True, data=tiny_dataset(), progress=False)
    note = [line for line in capsys.readouterr().err.splitlines() if "no longer has" in line]
    assert len(note) == 1 and "train.ema" in note[0] and "kl_warmup" not in note[0]  # was off
    assert_same_run(ref, run)


def test_a_removed_option_in_a_config_file_is_a_clear_error():
    with pytest.raises(DRMMError, match=r"train.ema \(removed: it measured no gain"):
        apply_overrides(Config(), {"train": {"ema": 0.99}}, source="x.yaml")


@pytest.mark.parametrize("world", [1, 2, 4])
def test_unlabeled_ramp_grows_from_a_quarter_to_the_whole_share(world):
    """The cifar10 preset's 80 unlabeled images a step: 20 at the first step, never fewer
    later, a multiple of the processes, all 80 from the ramp's end; no ramp: 80 throughout."""
    cfg = preset("cifar10", quiet=True)
    cfg.train.unlabeled_ramp = 1.5
    counts = [unlabeled_per_step(cfg, s, 10, world) for s in range(30)]  # 10 steps an epoch
    assert counts[0] == 20 and counts == sorted(counts) and counts[14] < 80
    assert set(counts[15:]) == {80} and all(n % world == 0 for n in counts)
    assert epoch_images(cfg, 0, 10, world) == 10 * 20 + sum(counts[:10])
    cfg.train.unlabeled_ramp = 0.0
    assert {unlabeled_per_step(cfg, s, 10, world) for s in range(30)} == {80}
    assert epoch_images(cfg, 0, 10, world) == 10 * cfg.train.batch_size


def test_a_ramped_run_takes_fewer_unlabeled_images_and_resumes_exactly(tmp_path, monkeypatch):
    """The step gets the ramp's unlabeled images (2 of 10 at first), the records count the
    images the steps took, and a crashed run resumes to the end an uninterrupted one reaches."""
    cfg = tiny_config(checkpoint_every=3, unlabeled_ramp=1.5)  # 8 steps an epoch
    sizes = []

    def forward(self, batch, weights):
        sizes.append(len(batch.x_unl))
        return REAL_FORWARD(self, batch, weights)

    monkeypatch.setattr(Objective, "forward", forward)
    ref = tmp_path / "ref"
    train(cfg, ref, data=tiny_dataset(), progress=False)
    assert sizes == [unlabeled_per_step(cfg, s, 8) for s in range(16)]
    assert sizes[0] == 2 and sizes[-1] == 10 and len(set(sizes)) > 3
    for epoch, line in enumerate((ref / "metrics.jsonl").read_text().splitlines()):
        record = json.loads(line)
        assert math.isclose(record["images_per_s"] * record["epoch_seconds"],
                            epoch_images(cfg, epoch, 8), rel_tol=1e-9)
    out = tmp_path / "run"
    crash_at(monkeypatch, cfg, out)
    train(cfg, out, resume=True, data=tiny_dataset(), progress=False)
    assert_same_run(ref, out)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_a_bad_unlabeled_ramp_is_a_clear_error(bad):
    cfg = tiny_config(unlabeled_ramp=bad)
    with pytest.raises(DRMMError, match="unlabeled_ramp .* must be a number of epochs"):
        validate(cfg)
