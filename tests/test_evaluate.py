"""Evaluation: fixed translations, test-time augmentation, and `drmm eval --tta`."""

import json

import pytest
import torch

from drmm import evaluate
from drmm.checkpoint import load_trained_model
from drmm.cli import main
from drmm.config import preset
from drmm.data import load_run_data
from drmm.data.augment import translate
from drmm.evaluate import predicted_classes, shifts_within
from drmm.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A digits run of two epochs: trained enough that its calls depend on the image."""
    cfg = preset("digits")
    cfg.train.epochs, cfg.train.tensorboard = 2, False
    out = tmp_path_factory.mktemp("tiny") / "run"
    train(cfg, out, progress=False)
    return out


def test_translate_moves_the_image_and_zeroes_the_uncovered_border():
    x = torch.rand(2, 1, 5, 6) + 1  # (B, C, H, W), no zero pixels
    assert torch.equal(translate(x, 0, 0), x)
    down = translate(x, 1, 0)  # one pixel down
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and (down[..., 0, :] == 0).all()
    left = translate(x, 0, -2)  # two pixels left
    assert torch.equal(left[..., :, :-2], x[..., :, 2:]) and (left[..., :, -2:] == 0).all()
    both = translate(x, -1, 2)
    assert torch.equal(both[..., :-1, 2:], x[..., 1:, :-2])
    assert both.shape == x.shape


def test_shifts_within_a_radius():
    assert shifts_within(0) == [(0, 0)]
    shifts = shifts_within(2)
    assert len(set(shifts)) == 25 and (0, 0) in shifts
    assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) == 2


def test_tta_averages_the_softmax_over_the_shifts(tiny_run):
    model, cfg, state = load_trained_model(tiny_run)  # eval mode
    data = load_run_data(cfg, state)
    x, y = data.x_test, data.y_test  # (N, C, H, W), (N,)
    with torch.no_grad():
        plain = model(x).argmax(dim=1)  # (N,)
        probs = sum(model(translate(x, dy, dx)).softmax(dim=1)
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # (N, K)
    assert torch.equal(predicted_classes(model, x, batch_size=64), plain)
    tta = predicted_classes(model, x, batch_size=64, tta=1)  # (N,)
    assert torch.equal(tta, probs.argmax(dim=1))
    assert not torch.equal(tta, plain)  # after one epoch the shifts change some calls
    assert evaluate.test_error(model, x, y, tta=1) == int((tta != y).sum()) / len(y)
    assert model.training is False


def test_eval_cli_tta(tiny_run, capsys):
    out = tiny_run
    assert main(["eval", "--checkpoint", str(out), "--tta", "1"]) == 0
    printed = capsys.readouterr().out
    assert "softmax averaged over 9 shifts" in printed
    assert main(["eval", "--checkpoint", str(out)]) == 0
    recorded = json.loads((out / "metrics.json").read_text())["test_error"]
    assert f"test error {100 * recorded:.2f} %" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "--tta", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tta -1" in err[0]


def test_eval_variants_pairs_each_variant_with_the_runs_own_calls(tiny_run, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import eval_variants

    out = tmp_path / "v.json"
    result = eval_variants.main([str(tiny_run), "--bn-images", "300", "--tta", "1",
                                 "--out", str(out)])
    assert json.loads(out.read_text()) == result
    rows = {r["variant"]: r for r in result["variants"]}
    assert list(rows) == ["as_trained", "bn_recomputed_300", "tta_1"]
    base = rows["as_trained"]
    assert base["test_error"] == pytest.approx(result["recorded_test_error"])
    assert base["fixed"] == base["broken"] == 0
    n = result["test_images"]
    for row in rows.values():  # each variant's error = the run's, less what it fixes, plus breaks
        assert row["test_error"] == pytest.approx(
            base["test_error"] + (row["broken"] - row["fixed"]) / n)


def test_predictor_tta_matches_eval_and_its_probabilities_sum_to_one(tiny_run, tmp_path):
    import numpy as np

    from drmm.predictor import load

    predictor = load(tiny_run)
    model, cfg, state = load_trained_model(tiny_run)
    data = load_run_data(cfg, state)
    pixels = (data.x_test[:50, 0] * 255).round().to(torch.uint8)  # (N, H, W): raw images
    classes, probs = predictor.predict(pixels, batch_size=16, tta=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(50))
    expected = predicted_classes(model, pixels[:, None].float() / 255, tta=1)  # preprocess: none
    assert torch.equal(classes, expected)
    np.savez(tmp_path / "new.npz", x=pixels.numpy())
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(tiny_run), "--images", str(tmp_path / "new.npz"),
                 "--out", str(out), "--tta", "1", "--quiet"]) == 0
    rows = out.read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == [predictor.class_names[c] for c in classes.tolist()]
    assert main(["predict", "--checkpoint", str(tiny_run), "--images", str(tmp_path / "new.npz"),
                 "--out", str(out), "--tta", "-2", "--quiet"]) == 2
