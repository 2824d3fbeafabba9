"""benchmarks/own_data/novelty_study.py: the rank combinations by hand, the sets, and a tiny run."""


import numpy as np
import pytest
from helpers import tiny_train, write_npz, write_yaml

from benchmarks.own_data import novelty_study
from drmm.cli import main


def test_ranks_against_the_training_images():
    reference = {"render": np.array([1.0, 2.0, 3.0, 4.0]),
                 "softmax": np.array([0.1, 0.2, 0.3, 0.4])}
    raw = {"render": np.array([0.5, 2.0, 9.0]), "softmax": np.array([0.35, 0.05, 0.4])}
    out = novelty_study.with_rank(raw, reference)
    render_cdf, softmax_cdf = np.array([0, 0.5, 1.0]), np.array([0.75, 0.0, 1.0])
    np.testing.assert_allclose(out["rank"], (render_cdf + softmax_cdf) / 2)
    np.testing.assert_allclose(out["max"], np.maximum(render_cdf, softmax_cdf))
    over = np.maximum(raw["render"] / np.quantile(reference["render"], 0.99),
                      raw["softmax"] / np.quantile(reference["softmax"], 0.99))
    np.testing.assert_allclose(out["max99"], over)


def test_shuffled_keeps_each_images_pixels():
    images = np.random.default_rng(1).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    out = novelty_study.shuffled(images)
    assert out.shape == images.shape and not np.array_equal(out, images)
    for a, b in zip(images, out, strict=True):  # the same pixels (colour triples), elsewhere
        assert sorted(map(tuple, a.reshape(-1, 3))) == sorted(map(tuple, b.reshape(-1, 3)))


def test_study_of_a_tiny_run(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DRMM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(tiny_train(write_npz(tmp_path / "d.npz"), run, write_yaml(tmp_path), "--labels",
                           "8")) == 0
    out = tmp_path / "study.json"
    report = novelty_study.main(["--run", f"tiny={run}", "--data-dir", str(shared_data),
                                 "--limit", "16", "--calibration", "40", "--out", str(out)])
    r = report["runs"]["tiny"]
    assert r["images"] == 16 and r["image_shape"] == [1, 8, 8]
    assert set(r["auroc"]) == set(novelty_study.SETS)
    for row in r["auroc"].values():
        assert set(row) == set(novelty_study.SCORES)
        assert all(0 <= v <= 1 for v in row.values())
    assert report["overall_mean"]["render"] == pytest.approx(r["mean"]["render"])
    assert out.is_file()
