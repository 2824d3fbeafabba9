"""Sampling from a trained DRMM (Appendix B): the switch prior, the draws, `drmm sample`."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drmm.analysis.sampling import fit_switch_prior, flat_index, sample_images, window_position
from drmm.checkpoint import save_checkpoint
from drmm.config import Config
from drmm.errors import DRMMError
from drmm.model import DRMM, ModelConfig
from drmm.synthetic import render_dataset


def tiny_model() -> DRMM:
    return DRMM(ModelConfig(arch="conv_tiny", image_size=12)).eval()


def test_window_positions_round_trip_max_pool_indices():
    _, t = F.max_pool2d(torch.randn(3, 4, 10, 10), 2, return_indices=True)  # (3, 4, 5, 5)
    k = window_position(t, 10)
    assert k.min() >= 0 and k.max() <= 3
    assert torch.equal(flat_index(k, 10), t)


def test_prior_holds_frequencies_per_class():
    model = tiny_model()
    x = torch.rand(40, 1, 12, 12)  # (N, C, H, W)
    prior = fit_switch_prior(model, x, batch_size=16)
    assert prior.counts.sum() == 40
    assert len(prior.a) == len(model.layers) == len(prior.t)
    for layer, p_a, p_t in zip(model.layers, prior.a, prior.t, strict=True):
        assert p_a.shape[0] == 10 and p_a.min() >= 0 and p_a.max() <= 1
        assert (p_t is not None) == layer.pooled
        if p_t is not None:
            assert p_t.shape[-1] == 4
            torch.testing.assert_close(p_t.sum(-1), torch.ones(p_t.shape[:-1]))
    # class c's a-frequencies are the mean of the a-switches of the images assigned to c
    bu = model.bottom_up(x)
    c = int(bu.c_hat[0])
    mine = bu.switches[1].a[bu.c_hat == c].float().mean(0)
    torch.testing.assert_close(prior.a[1][c], mine)


def test_a_prior_from_one_image_renders_its_reconstruction():
    """With one image the frequencies are 0 / 1, so every draw is that image's own switches:
    the sample must equal the top-down reconstruction of the image."""
    model = tiny_model()
    x = torch.rand(1, 1, 12, 12)
    prior = fit_switch_prior(model, x)
    bu = model.bottom_up(x)
    want = model.top_down(bu).image  # (1, 1, 12, 12) rendered from c-hat
    got = sample_images(model, prior, bu.c_hat.repeat(3), torch.Generator().manual_seed(0))
    for image in got:
        torch.testing.assert_close(image, want[0])


def test_mixture_weights_are_each_class_share_of_its_images():
    model = tiny_model()
    x = torch.rand(60, 1, 12, 12)  # (N, C, H, W)
    prior = fit_switch_prior(model, x, components=3)
    assert prior.weights.shape == (10, 3) and prior.counts.sum() == 60
    torch.testing.assert_close(prior.weights.sum(1), torch.ones(10))
    assert len(prior.a[0]) == 30  # (K*M, C, H, W): one table per class and component


def test_one_component_per_image_draws_whole_switch_configurations():
    """With as many components as images, each component's frequencies are one image's 0 / 1
    switches, so every sample is the reconstruction of one training image of its class."""
    model = tiny_model()
    x = torch.rand(12, 1, 12, 12)
    prior = fit_switch_prior(model, x, components=12)
    bu = model.bottom_up(x)
    recon = model.top_down(bu).image  # (12, 1, 12, 12) each rendered from its c-hat
    c = int(bu.c_hat.mode().values)
    got = sample_images(model, prior, torch.full((8,), c), torch.Generator().manual_seed(0))
    mine = recon[bu.c_hat == c]  # (n_c, 1, 12, 12)
    for image in got:
        assert min((image - r).abs().max() for r in mine) < 1e-5


def test_samples_have_image_shape_and_follow_the_seed():
    model = tiny_model()
    prior = fit_switch_prior(model, torch.rand(30, 1, 12, 12))
    classes = torch.arange(10).repeat_interleave(2)  # (20,)
    a = sample_images(model, prior, classes, torch.Generator().manual_seed(1))
    b = sample_images(model, prior, classes, torch.Generator().manual_seed(1))
    c = sample_images(model, prior, classes, torch.Generator().manual_seed(2))
    assert a.shape == (20, 1, 12, 12) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def run_cli(argv):
    from drmm.analysis import sample

    parser = argparse.ArgumentParser()
    sample.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def checkpoint(tmp_path):
    data = tmp_path / "syn.npz"
    np.savez(data, **render_dataset(30, 10, seed=0))
    cfg = Config()
    cfg.model.arch, cfg.model.image_size = "conv_tiny", 32
    cfg.train.dataset = f"npz:{data}"
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": DRMM(cfg.model).state_dict(), "config": cfg.to_dict()})
    return path


def test_sample_command_writes_samples_and_reconstructions(checkpoint, tmp_path, capsys):
    out = tmp_path / "samples.png"
    assert run_cli(["sample", "--checkpoint", str(checkpoint), "--n-per-class", "3",
                    "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    assert (tmp_path / "samples_reconstructions.png").stat().st_size > 5000
    assert "3 samples per class" in capsys.readouterr().out


def test_sample_command_rejects_bad_arguments(checkpoint, tmp_path):
    with pytest.raises(DRMMError, match="must end in .png"):
        run_cli(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.jpg")])
    with pytest.raises(DRMMError, match="at least 1"):
        run_cli(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.png"),
                 "--n-per-class", "0"])
    with pytest.raises(DRMMError, match="at least 1"):
        run_cli(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.png"),
                 "--components", "0"])
