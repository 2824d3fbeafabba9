"""The benchmarks keep working: each runs on a tiny configuration."""

import json

import numpy as np
import pytest
import torch

from benchmarks.paper import table_cost
from benchmarks.recipe import plot_curves
from benchmarks.speed import step_throughput


def test_step_throughput_tiny(tmp_path):
    out = tmp_path / "s.json"
    result = step_throughput.main(step_throughput.parse_args(
        ["--arch", "conv_tiny", "--batch", "8", "--warmup", "1", "--steps", "1", "--rounds", "3",
         "--channels-last", "--threads", "1", "2", "--device", "cpu", "--out", str(out)]))
    assert json.loads(out.read_text()) == result
    kinds = ["supervised", "drmm", "supervised_channels_last", "drmm_channels_last"]
    assert set(result["images_per_s"]) == {f"{k}_{n}t" for k in kinds for n in (1, 2)}
    for v in [*result["images_per_s"].values(), *result["ratios"].values()]:
        assert 0 < v["p10"] <= v["median"] <= v["p90"]
        assert v["median_ci95"][0] <= v["median"] <= v["median_ci95"][1]
    assert {"drmm_1t_over_supervised_1t", "drmm_channels_last_2t_over_drmm_2t",
            "drmm_2t_over_drmm_1t"} <= set(result["ratios"])
    assert set(result["wide_spread"]) <= set(result["images_per_s"]) | set(result["ratios"])
    assert set(result["drmm_step_breakdown_seconds"]) == {
        "bottom_up", "top_down", "objective", "backward", "optimizer"}


def test_table_cost_prices_the_paper_schedule(tmp_path):
    out = tmp_path / "c.json"
    result = table_cost.main(table_cost.parse_args(
        ["--batch", "4", "--images-per-s", "table1=1000", "table4=50", "--out", str(out)]))
    assert json.loads(out.read_text()) == result
    t1, t3, t4 = (result["tables"][k] for k in ("table1", "table3", "table4"))
    assert t3["gflops_per_image"] == t4["gflops_per_image"]  # both ConvLarge at 32x32x3
    assert t4["gflops_per_image"] > 10 * t1["gflops_per_image"]  # ConvLarge >> ConvSmall
    # 500 epochs of 2 x N_U images (50 labeled + 50 unlabeled a step); 3 seeds per cell
    assert t1["images_per_run"] == 500 * 2 * 60000 and t1["runs"] == 4 * 3 * 3
    assert t1["hours_per_run"] == t1["images_per_run"] / 1000 / 3600
    assert t4["hours_per_table"] == t4["hours_per_run"] * 2 * 2 * 3
    assert t3["images_per_s"] is None and "hours_per_run" not in t3  # no speed, no price


def test_plot_curves_against_epochs_and_minutes(tmp_path):
    for name in ("a", "b"):  # run folders: each line is named after its folder
        (tmp_path / name).mkdir()
        rows = [{"epoch": e, "test_error": None if e == 2 else 0.1 / e,  # eval_every 2
                 "wall_seconds": 60.0 * e} for e in (1, 2, 3)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    for x in ("epoch", "minutes"):
        out = tmp_path / f"{x}.png"
        plot_curves.main(["--x", x, "--out", str(out), str(tmp_path / "a" / "metrics.jsonl"),
                          str(tmp_path / "b" / "metrics.jsonl")])
        assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_curves_reads_a_folded_record_run_by_run(tmp_path):
    folded = tmp_path / "epochs.jsonl"  # results/*/epochs.jsonl: one line per run and epoch
    rows = [{"run": run, "epoch": e, "test_error": 0.1 / e, "wall_seconds": 60.0 * e}
            for run in ("a_seed0", "a_seed1", "b_seed0") for e in (1, 2)]
    folded.write_text("\n".join(map(json.dumps, rows)))
    assert [(name, len(r)) for name, r in plot_curves.curves(folded, None)] == [
        ("a_seed0", 2), ("a_seed1", 2), ("b_seed0", 2)]
    assert [name for name, _ in plot_curves.curves(folded, ["b_seed0", "a_seed0"])] == [
        "b_seed0", "a_seed0"]
    plot_curves.main([str(folded), "--runs", "a_seed1", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):  # a name the record lacks: refused, not an empty figure
        plot_curves.main([str(folded), "--runs", "c_seed0", "--out", str(tmp_path / "d.png")])


def test_recipe_study_runs_resumes_and_reports(tmp_path, capsys):
    from benchmarks.recipe import recipe

    out = tmp_path / "r.jsonl"
    argv = ["--dataset", "digits", "--variants", "default", "translate", "--seeds", "0",
            "--set", "train.epochs=1", "train.batch_size=200", "--out", str(out)]
    recipe.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["variant"], r["seed"], r["epochs"]) for r in rows] == [
        ("default", 0, 1), ("translate", 0, 1)]
    assert all(0 <= r["test_error"] <= 1 and len(r["curve"]) == 1 for r in rows)
    recipe.main(argv)  # every run is in the file already: nothing runs again
    assert len(out.read_text().splitlines()) == 2
    capsys.readouterr()
    recipe.main(["--report", str(out)])
    table = capsys.readouterr().out
    assert "| digits | translate {\"train.epochs\": 1, \"train.batch_size\": 200} |" in table


def test_pixel_decodability_tiny(tmp_path):
    from benchmarks.paper import pixel_decodability
    from drmm.errors import DRMMError
    from drmm.synthetic import render_dataset

    data = tmp_path / "syn.npz"
    np.savez(data, **render_dataset(120, 60, seed=0))
    out = tmp_path / "p.json"
    result = pixel_decodability.main(
        ["--data", str(data), "--latents", "x", "slant", "--fit", "100", "--epochs", "1",
         "--arch", "conv_tiny", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert list(result["latents"]) == ["x", "slant"]
    for row in result["latents"].values():
        for key in ("chance", *pixel_decodability.DECODERS):
            assert 0 <= row[key] <= 1, key
    with pytest.raises(DRMMError, match="unknown latents \\['roll'\\]"):
        pixel_decodability.main(["--data", str(data), "--latents", "roll"])


def test_show_mix_up_names_the_largest_off_diagonal_cell(tmp_path):
    from benchmarks.recipe import show_mix_up
    from drmm.checkpoint import load_trained_model
    from drmm.config import preset
    from drmm.data import load_run_data
    from drmm.train import train

    cfg = preset("digits")
    cfg.train.epochs, cfg.train.batch_size, cfg.train.tensorboard = 1, 200, False
    train(cfg, tmp_path / "run", progress=False)
    result = show_mix_up.main([str(tmp_path / "run"), "--out", str(tmp_path / "m.png")])
    model, cfg, state = load_trained_model(tmp_path / "run")
    data = load_run_data(cfg, state)  # as the run sees it
    pred = model(data.x_test[:]).argmax(dim=1)  # (N,)
    cells = {(int(t), int(p)): int(((data.y_test == t) & (pred == p)).sum())
             for t in range(10) for p in range(10) if t != p}
    assert result["images"] == max(cells.values()) > 0  # one epoch leaves mistakes
    assert cells[(int(result["true"]), int(result["predicted"]))] == result["images"]
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    chosen = show_mix_up.main([str(tmp_path / "run"), "--true", "0", "--predicted", "1",
                               "--out", str(tmp_path / "c.png")])
    assert chosen["images"] == cells[(0, 1)] and chosen["true"] == "0"
    with pytest.raises(SystemExit):  # one of the two alone: refused, not silently ignored
        show_mix_up.main([str(tmp_path / "run"), "--true", "0", "--out", str(tmp_path / "d.png")])


def test_graph_labels_reports_the_pseudo_labels_of_a_run(tmp_path):
    from benchmarks.recipe import graph_labels
    from drmm.config import preset
    from drmm.train import train

    cfg = preset("digits")
    cfg.train.epochs, cfg.train.batch_size, cfg.train.tensorboard = 1, 200, False
    train(cfg, tmp_path / "run", progress=False)
    result = graph_labels.main([str(tmp_path / "run"), "--out", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text()) == result
    assert 0 <= result["certainty_weighted_error"] <= 1 and 0 < result["pseudo_label_error"] < 0.5
    assert sum(result["mix_up"]["pseudo_labels"]) == result["mix_up"]["images"] > 0
    rows = result["disagreements"]
    assert [r["certainty_at_least"] for r in rows] == list(graph_labels.CERTAINTIES)
    assert rows[0]["images"] == result["images"] and rows[0]["disagree"] > 0
    for r, looser in zip(rows[1:], rows, strict=False):  # a higher bound keeps fewer images
        assert r["disagree"] <= looser["disagree"] and r["images"] <= looser["images"]
    for r in rows:  # at most one of the two is right where they differ
        assert r["graph_right"] + r["run_right"] <= r["disagree"] <= r["images"]


def test_eval_variants_pairs_each_variant_with_the_runs_own_calls(tmp_path):
    import torch

    from benchmarks.recipe import eval_variants
    from drmm.config import preset
    from drmm.train import train

    x = torch.rand(2, 1, 5, 6) + 1  # (B, C, H, W), no zero pixels
    down, left = eval_variants.translate(x, 1, 0), eval_variants.translate(x, 0, -2)
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and (down[..., 0, :] == 0).all()
    assert torch.equal(left[..., :, :-2], x[..., :, 2:]) and (left[..., :, -2:] == 0).all()
    assert torch.equal(eval_variants.translate(x, 0, 0), x)

    cfg = preset("digits")
    cfg.train.epochs, cfg.train.tensorboard = 2, False
    train(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "v.json"
    result = eval_variants.main([str(tmp_path / "run"), "--bn-images", "300", "--tta", "1",
                                 "--out", str(out)])
    assert json.loads(out.read_text()) == result
    rows = {r["variant"]: r for r in result["variants"]}
    assert list(rows) == ["as_trained", "bn_recomputed_300", "tta_1"]
    base = rows["as_trained"]
    assert base["test_error"] == pytest.approx(result["recorded_test_error"])
    assert base["fixed"] == base["broken"] == 0
    assert rows["tta_1"]["fixed"] + rows["tta_1"]["broken"] > 0  # the shifts change some calls
    n = result["test_images"]
    for row in rows.values():  # each variant's error = the run's, less what it fixes, plus breaks
        assert row["test_error"] == pytest.approx(
            base["test_error"] + (row["broken"] - row["fixed"]) / n)


def test_cpu_name_says_when_the_kernels_are_capped(monkeypatch):
    from benchmarks.common import CAP_SETTINGS, cpu_name

    for k in CAP_SETTINGS:
        monkeypatch.delenv(k, raising=False)
    assert "capped" not in cpu_name()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_name().endswith("; kernels capped: ONEDNN_MAX_CPU_ISA=AVX2")


def test_eval_precision_times_both_precisions_and_matches_the_runs_result(tmp_path):
    from benchmarks.speed import eval_precision
    from drmm.config import preset
    from drmm.metrics import percent
    from drmm.train import train

    cfg = preset("digits")
    cfg.train.epochs, cfg.train.batch_size, cfg.train.tensorboard = 1, 200, False
    cfg.train.precision = "bf16"  # the last epoch is still evaluated in float32
    metrics = train(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "e.json"
    result = eval_precision.main([str(tmp_path / "run"), "--data-dir", str(tmp_path),
                                  "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    (row,) = result["runs"]
    assert {p: len(s) for p, s in row["seconds"].items()} == {"fp32": 2, "bf16": 2}
    assert row["test_images"] > 0 and all(s > 0 for s in row["median_seconds"].values())
    # one epoch, the last: evaluated in float32 (bf16 calls some of these test images otherwise)
    assert percent(row["test_error"]["fp32"]) == metrics["test_error_percent"]
    assert 0 <= row["test_error"]["bf16"] <= 1


def test_photo_graph_compares_the_graphs_with_the_run(tmp_path):
    from helpers import tiny_train, write_yaml

    from benchmarks.own_data import own_data, photo_graph
    from drmm.cli import main as drmm

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 8)  # (80,) ten classes, as CIFAR-10
    x = (rng.integers(0, 60, (80, 8, 8, 3)) + 19 * y[:, None, None, None]).astype(np.uint8)
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    np.savez(tmp_path / "data" / "cifar10" / "cifar10.npz", x_train=x, y_train=y,
             x_test=x[:20], y_test=y[:20])
    folder, _ = own_data.build_folder(tmp_path / "w", str(tmp_path / "data"), per_class=2,
                                      n_unlabeled=40, n_held_out=5, seed=0, source="cifar10")
    run = tmp_path / "run"
    assert drmm(tiny_train(f"folder:{folder}", run, write_yaml(tmp_path))) == 0
    result = photo_graph.main([str(run), "--data-dir", str(tmp_path / "data"),
                               "--out", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text()) == result
    assert result["labeled"] == 20 and result["unlabeled"] == 40
    row = result["runs"][0]
    for part in (result["pixel_graph"], row["feature_graph"]):
        assert 0 <= part["error"] <= 1
        assert list(part["error_at_coverage"]) == list(row["run_error_at_coverage"])
    assert row["graph_right"] + row["run_right"] <= row["disagree"] <= 40
    other, _ = own_data.build_folder(tmp_path / "w2", str(tmp_path / "data"), per_class=2,
                                     n_unlabeled=40, n_held_out=5, seed=1, source="cifar10")
    assert drmm(tiny_train(f"folder:{other}", tmp_path / "run2", write_yaml(tmp_path))) == 0
    with pytest.raises(SystemExit, match="pass runs on one folder"):  # one pixel graph for all
        photo_graph.main([str(run), str(tmp_path / "run2"), "--data-dir", str(tmp_path / "data")])
    y[:] = (y + 1) % 10  # another data set than the folder's: refused, not silently scored
    np.savez(tmp_path / "data" / "cifar10" / "cifar10.npz", x_train=x, y_train=y,
             x_test=x[:20], y_test=y[:20])
    with pytest.raises(SystemExit, match="not CIFAR-10's"):
        photo_graph.main([str(run), "--data-dir", str(tmp_path / "data")])


def test_step_profile_times_each_part_without_its_inner_parts():
    """A part's time excludes the parts called inside it; untimed calls record nothing."""
    import time

    from benchmarks.speed.step_profile import PartTimer

    timer = PartTimer()
    inner = timer.wrap("inner", lambda: time.sleep(0.1))

    def outer_body():
        time.sleep(0.01)
        inner()

    outer = timer.wrap("outer", outer_body)
    outer()  # not active: nothing recorded
    assert not timer.totals
    timer.active = True
    outer()
    assert timer.totals["inner"] >= 0.1
    assert 0.01 <= timer.totals["outer"] < 0.1  # its own 10 ms, not the inner 100 ms


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_profile_before_is_the_same_step_bit_for_bit(precision):
    """The profile's "before" step (switches as bool a, kept by the strong views' pass too,
    un-pool then mask, NCHW reductions) and the step now give the same loss and gradients bit
    for bit: the speed changes move no number."""
    from benchmarks.speed.step_profile import BEFORE, patched
    from drmm.config import preset
    from drmm.model import DRMM
    from drmm.precision import step_autocast
    from drmm.step import Batch, Objective, step_weights

    cfg = preset("cifar10", quiet=True)
    torch.manual_seed(0)
    model = DRMM(cfg.model).to(memory_format=torch.channels_last)
    x = torch.randn(12, 3, 32, 32).contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
    batch = Batch(x[:4], torch.arange(4), x[4:], x_strong=x[4:].flip(3))
    weights = step_weights(cfg, 10, 100)

    def step():
        model.zero_grad()
        with step_autocast(precision, torch.device("cpu")):
            terms = Objective(model, cfg)(batch, weights)
        terms["loss"].backward()
        return terms, [p.grad.clone() for p in model.parameters()]

    now_terms, now_grads = step()
    with patched(BEFORE):
        before_terms, before_grads = step()
    assert set(now_terms) == set(before_terms) and "nn" in now_terms and "con" in now_terms
    for k in now_terms:
        assert torch.equal(now_terms[k], before_terms[k]), k
    for g_now, g_before in zip(now_grads, before_grads, strict=True):
        assert torch.equal(g_now, g_before)
