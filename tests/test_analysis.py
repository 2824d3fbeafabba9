"""The linear decoding analysis of section 5.4 on a tiny model and data set, and `drmm analyze`."""

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from drmm.analysis.decoding import (
    DecodingConfig,
    activations,
    decode_model,
    layer_names,
    quantise,
)
from drmm.checkpoint import save_checkpoint
from drmm.config import Config
from drmm.errors import DRMMError
from drmm.model import DRMM, ModelConfig
from drmm.synthetic import Z_NAMES, render_dataset


def tiny_model(size: int = 16) -> DRMM:
    model = DRMM(ModelConfig(arch="conv_tiny", image_size=size))
    model.eval()
    return model


def test_quantise_makes_equal_frequency_bins():
    z = np.random.default_rng(0).normal(size=200)
    bins = quantise(z, z, 10)
    assert np.bincount(bins).tolist() == [20] * 10


def test_activations_cover_image_every_conv_layer_and_class_scores():
    model = tiny_model()
    x = torch.rand(5, 1, 16, 16)  # (B, C, H, W)
    names = layer_names(model)
    assert names == ["image", "conv1", "conv2", "class scores"]
    dims = [activations(model, x, layer, batch_size=2).shape for layer in range(len(names))]
    # conv_tiny at 16: conv1 8 x (18 -> 9 pooled)^2, conv2 16 x 7^2, then 10 class scores
    assert dims == [(5, 256), (5, 8 * 9 * 9), (5, 16 * 7 * 7), (5, 10)]
    np.testing.assert_allclose(activations(model, x, 3), model(x).detach().numpy(), atol=1e-5)


def test_top_down_templates_and_switches_are_decoded_per_layer():
    model = tiny_model()
    x = torch.rand(5, 1, 16, 16)  # (B, C, H, W)
    top = [activations(model, x, layer, 2, "top_down").shape for layer in range(4)]
    # the rendered image I-hat, z(1) and z(2) at each layer's pooled output size, class scores
    assert top == [(5, 256), (5, 8 * 9 * 9), (5, 16 * 7 * 7), (5, 10)]
    with torch.no_grad():
        bu = model.bottom_up(x)
        td = model.top_down(bu)
    np.testing.assert_allclose(activations(model, x, 0, 2, "top_down"),
                               td.image.flatten(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(activations(model, x, 2, 2, "top_down"),
                               td.templates[0].flatten(1).numpy(), atol=1e-5)
    switches = activations(model, x, 1, 2, "switches")  # conv1: a and the one-hot t, 18x18
    assert switches.shape == (5, 2 * 8 * 18 * 18)
    assert set(np.unique(switches)) <= {0.0, 1.0}
    a, t = switches[:, :8 * 18 * 18], switches[:, 8 * 18 * 18:]
    assert t.sum() == 5 * 8 * 9 * 9  # one winner per pool window
    np.testing.assert_array_equal(a, bu.switches[0].a.flatten(1).float().numpy())
    assert activations(model, x, 2, 2, "switches").shape == (5, 16 * 7 * 7)  # no pool: a only
    with pytest.raises(DRMMError, match="unknown decoding source"):
        activations(model, x, 1, 2, "pixels")


def blob_images(n: int, seed: int = 0):
    """Images of one bright blob at column u (a decodable latent) plus a latent v that the
    images do not depend on at all."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(3, 13, n), rng.uniform(0, 1, n)
    cols = np.arange(16)
    x = np.exp(-((cols[None, :] - u[:, None]) ** 2) / 2)  # (n, 16) one row profile
    x = np.repeat(x[:, None, None, :], 16, axis=2)  # (n, 1, 16, 16)
    x = x + 0.05 * rng.normal(size=x.shape)
    return torch.tensor(x, dtype=torch.float32), np.stack([u, v], 1)


@pytest.mark.parametrize("source, components", [("bottom_up", 10), ("top_down", 10),
                                                ("switches", 0)])
def test_decoding_finds_a_present_latent_and_not_an_absent_one(source, components):
    x, z = blob_images(600)
    rows = decode_model(tiny_model(), x, z, ["u", "v"], "toy",
                        DecodingConfig(source=source, n_components=components, max_images=0))
    err = {(r["layer_name"], r["latent"]): r["error"] for r in rows}
    assert err[("image", "u")] < 0.5  # far below the 0.9 chance: position is linear in PCs
    assert err[("image", "v")] > 0.75  # nothing to decode: near chance
    for r in rows:
        assert 0.8 < r["chance"] < 0.95
        assert 0.0 <= r["error"] <= 1.0


def test_decoding_is_seeded_and_reports_every_layer_and_latent():
    d = render_dataset(10, 120, seed=0)
    x = torch.tensor(d["x_test"][:, None] / 255.0, dtype=torch.float32)
    model = tiny_model(32)
    cfg = DecodingConfig(max_images=100, seed=1)
    rows = decode_model(model, x, d["z_test"], list(d["z_names"]), "m", cfg)
    assert len(rows) == len(layer_names(model)) * len(Z_NAMES)
    assert {r["latent"] for r in rows} == set(Z_NAMES)
    again = decode_model(model, x, d["z_test"][:, :2], list(d["z_names"])[:2], "m", cfg)
    assert again == [r for r in rows if r["latent"] in Z_NAMES[:2]]


@pytest.fixture
def synthetic_run(tmp_path):
    """A rendered npz and two untrained conv_tiny checkpoints, a DRMM and a DCN."""
    data = tmp_path / "syn.npz"
    np.savez(data, **render_dataset(20, 80, seed=0))
    paths = []
    for supervised in (False, True):
        cfg = Config()
        cfg.model.arch, cfg.model.image_size = "conv_tiny", 32
        cfg.train.supervised_only = supervised
        path = tmp_path / f"{'dcn' if supervised else 'drmm'}.pt"
        save_checkpoint(path, {"model": DRMM(cfg.model).state_dict(), "config": cfg.to_dict()})
        paths.append(str(path))
    return data, paths


def run_cli(argv):
    from drmm.analysis import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_analyze_writes_csv_and_figure_for_two_models(synthetic_run, tmp_path):
    data, paths = synthetic_run
    out = tmp_path / "an"
    assert run_cli(["analyze", "--checkpoint", *paths, "--data", str(data), "--out", str(out),
                    "--max-images", "0", "--quiet"]) == 0
    with open(out / "decoding.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["model", "layer", "latent", "error"]
    assert len(rows) == 2 * 4 * len(Z_NAMES)
    assert {r["model"] for r in rows} == {"DRMM", "DCN"}
    assert {r["layer"] for r in rows} == {"0", "1", "2", "3"}
    assert (out / "decoding.png").stat().st_size > 10_000
    top = tmp_path / "top"
    assert run_cli(["analyze", "--checkpoint", paths[0], "--data", str(data), "--out", str(top),
                    "--max-images", "0", "--source", "top_down", "--components", "5",
                    "--quiet"]) == 0
    with open(top / "decoding.csv") as f:
        top_rows = list(csv.DictReader(f))
    assert len(top_rows) == 4 * len(Z_NAMES)
    image = {r["latent"]: r["error"] for r in rows if r["model"] == "DRMM" and r["layer"] == "0"}
    rendered = {r["latent"]: r["error"] for r in top_rows if r["layer"] == "0"}
    assert image != rendered  # layer 0 is now I-hat, not the image


def test_analyze_rejects_bad_inputs(synthetic_run, tmp_path):
    data, paths = synthetic_run
    out = str(tmp_path / "an")
    with pytest.raises(DRMMError, match="one name per checkpoint"):
        run_cli(["analyze", "--checkpoint", *paths, "--data", str(data), "--out", out,
                 "--names", "A"])
    bare = tmp_path / "bare.npz"
    arrays = dict(np.load(data))
    np.savez(bare, **{k: v for k, v in arrays.items() if not k.startswith("z_")})
    with pytest.raises(DRMMError, match="no z_test"):
        run_cli(["analyze", "--checkpoint", paths[0], "--data", str(bare), "--out", out])
    small = tmp_path / "small.npz"
    np.savez(small, **{**arrays, "x_train": arrays["x_train"][:, :16, :16],
                       "x_test": arrays["x_test"][:, :16, :16]})
    with pytest.raises(DRMMError, match="does not fit"):
        run_cli(["analyze", "--checkpoint", paths[0], "--data", str(small), "--out", out])
    with pytest.raises(DRMMError, match="--components -1"):
        run_cli(["analyze", "--checkpoint", paths[0], "--data", str(data), "--out", out,
                 "--components", "-1"])
    assert not (tmp_path / "an").exists()


def test_default_names_tell_runs_apart():
    from drmm.analysis.cli import default_names

    a, b, c = Config(), Config(), Config()
    c.train.supervised_only = True
    assert default_names([a, c]) == ["DRMM", "DCN"]
    b.train.labels = 4000
    assert default_names([a, b]) == ["DRMM N_L=50", "DRMM N_L=4000"]
    assert default_names([a, a]) == ["DRMM N_L=50 #1", "DRMM N_L=50 #2"]


def fake_run(folder, supervised: bool, labels: int, error: float):
    cfg = Config()
    cfg.train.supervised_only, cfg.train.labels = supervised, labels
    cfg.train.decay = "cosine"  # not the default, so a misread key cannot pass for it
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    (folder / "metrics.json").write_text(json.dumps(
        {"test_error": error, "best_test_error": error - 0.01, "labels": labels,
         "wall_seconds": 600.0}))
    return str(folder)


def test_table5_puts_both_runs_beside_the_paper(tmp_path):
    from drmm.analysis.table5 import main

    drmm = fake_run(tmp_path / "drmm", False, 4000, 0.1234)
    dcn = fake_run(tmp_path / "dcn", True, 4000, 0.2)
    out = tmp_path / "t5.md"
    assert main(["--drmm", drmm, "--dcn", dcn, "--out", str(out)]) == 0
    text = out.read_text()
    assert "| DRMM + KL and NN penalty | 12.34 | 11.34 | 10 min | 6.48 |" in text
    assert "| DCN (supervised only, same network) | 20.00 | 19.00 | 10 min | 23.44 |" in text
    # the settings come from the saved config as it is now (its decay is no longer `schedule`)
    from drmm.reproduce.report import DECAY_WORDS

    assert DECAY_WORDS["cosine"] in text
    assert main(["--drmm", dcn, "--dcn", drmm, "--out", str(tmp_path / "x.md")]) == 2
    assert not (tmp_path / "x.md").exists()


def test_figure4_merges_runs_into_one_figure(tmp_path):
    from drmm.analysis.cli import read_csv, write_csv
    from drmm.analysis.figure4 import main

    def rows(scale):  # two models, three layers, two latents
        return [{"model": m, "layer": k, "latent": z, "error": scale * (0.5 + 0.1 * k),
                 "chance": 0.9, "layer_name": f"l{k}"}
                for m in ("DRMM", "DCN") for k in range(3) for z in ("x", "slant")]

    write_csv(rows(1.0), tmp_path / "a.csv")
    write_csv(rows(0.8), tmp_path / "b.csv")
    out = tmp_path / "fig" / "figure4.png"
    assert main(["--csv", str(tmp_path / "a.csv"), "N_L=4000", "--csv", str(tmp_path / "b.csv"),
                 "N_L=50K", "--out", str(out)]) == 0
    merged = read_csv(out.with_suffix(".csv"))
    assert {r["model"] for r in merged} == {"DRMM N_L=4000", "DCN N_L=4000", "DRMM N_L=50K",
                                            "DCN N_L=50K"}
    b = {(r["model"], r["layer"], r["latent"]): r["error"] for r in merged}
    assert b[("DCN N_L=50K", 2, "x")] == pytest.approx(0.8 * 0.7)
    assert out.stat().st_size > 10_000
    # the same label twice would draw two runs as one line; a missing file names itself
    assert main(["--csv", str(tmp_path / "a.csv"), "L", "--csv", str(tmp_path / "b.csv"), "L",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert main(["--csv", str(tmp_path / "none.csv"), "L", "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
