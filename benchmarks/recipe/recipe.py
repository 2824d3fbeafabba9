"""Recipe study: training variants against the preset's recipe, on the same seeds.

    python -m benchmarks.recipe.recipe --dataset digits --variants default translate \
        --seeds 0 1 2 3 4 --out results/recipe/digits.jsonl
    python -m benchmarks.recipe.recipe --report results/recipe/digits.jsonl

Each run trains from the preset with the variant's overrides (VARIANTS, dotted config keys) and
appends one JSON line: the end-of-training test error (never the best epoch), the test-error
curve, minutes, images/s. Runs already in the file are skipped, so an interrupted study goes
on where it stopped, and two processes (one torch thread each, on two cores) can share a study
by taking different seeds into different files. --report prints the table (mean +- std over
seeds, each seed's error) of every file given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

# Each variant: overrides of the preset, by dotted config key. "default" is the preset itself.
VARIANTS: dict[str, dict] = {
    "default": {},
    "supervised_only": {"train.supervised_only": True},
    "translate": {"train.augment": "translate"},
    "epochs_80": {"train.epochs": 80},
    "graph_prior_1": {"train.graph_prior": 1},  # label-spreading pseudo-labels in epoch 1
    "no_graph_prior": {"train.graph_prior": 0},  # the preset without them
    "no_consistency": {"train.consistency": 0},  # the digits and mnist presets without L_CON
    "graph_prior_no_consistency": {"train.graph_prior": 1, "train.consistency": 0},
}


def run(dataset: str, variant: str, seed: int, extra: dict, data_dir: str | None) -> dict:
    from drmm.config import apply_overrides, preset
    from drmm.train import train

    cfg = preset(dataset)
    nested: dict[str, dict] = {}
    for key, value in {**VARIANTS[variant], **extra, "train.seed": seed,
                       "train.tensorboard": False}.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    apply_overrides(cfg, nested, source=f"recipe variant {variant}")  # checks keys and types
    if data_dir:
        cfg.train.data_dir = data_dir
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(cfg, Path(tmp) / "run", progress=False)
        history = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
    return {"dataset": dataset, "variant": variant, "seed": seed, "overrides": extra,
            "test_error": history[-1]["test_error"], "curve": [r["test_error"] for r in history],
            "minutes": metrics["wall_seconds"] / 60, "epochs": metrics["epochs"],
            "images_per_s": statistics.median(r["images_per_s"] for r in history)}


def report(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["variant"], json.dumps(r["overrides"])), []).append(r)
    print("| data | variant | test error % (mean +- std) | per seed | minutes | images/s |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    for (dataset, variant, extra), rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        errs = [100 * r["test_error"] for r in rs]
        std = statistics.stdev(errs) if len(errs) > 1 else 0.0
        name = variant + ("" if extra == "{}" else f" {extra}")
        seeds = " / ".join(f"{r['seed']}: {e:.2f}" for r, e in zip(rs, errs, strict=True))
        print(f"| {dataset} | {name} | {statistics.mean(errs):.2f} +- {std:.2f} | {seeds} |"
              f" {statistics.mean(r['minutes'] for r in rs):.1f} |"
              f" {statistics.median(r['images_per_s'] for r in rs):.0f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="more overrides for every run, e.g. train.epochs=3 (a proxy)")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", help="the JSON-lines file the runs are appended to")
    p.add_argument("--report", nargs="+", metavar="FILE", help="print the table of these files")
    a = p.parse_args(argv)
    if a.report:
        return report(a.report)
    import torch
    import yaml

    torch.set_num_threads(a.threads)
    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = ({(r["dataset"], r["variant"], r["seed"], json.dumps(r["overrides"]))
             for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set())
    for variant in a.variants:
        for seed in a.seeds:
            if (a.dataset, variant, seed, json.dumps(extra)) in done:
                continue
            r = run(a.dataset, variant, seed, extra, a.data_dir)
            print(f"recipe: {a.dataset} {variant} seed {seed}: test error"
                  f" {100 * r['test_error']:.2f} % in {r['minutes']:.1f} min", flush=True)
            with out.open("a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
