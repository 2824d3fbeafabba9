"""CIFAR-10 with 4,000 labels on all 50,000 training images: the `cifar10` preset (the photo
recipe, conv_photo) for each seed, and the same network trained on the labels alone
(`--supervised-only`), as a user would run them:

    drmm train --dataset cifar10 --seed S --epochs E [--supervised-only] --out WORK/NAME_sS

Prints each run's end-of-training test error (never the best epoch), hours, images/s and
largest mix-up, the DRMM's mean and spread over its seeds and its ratio to the supervised
network on the seeds both ran, and writes them with each run's test-error curve as JSON. A run
whose metrics.json exists is read, not retrained, so the seeds can be trained in several
sittings or by parallel processes (one torch thread each: OMP_NUM_THREADS=1) and gathered at
the end; an interrupted run resumes from its checkpoint.

    python -m benchmarks.paper.cifar10_full --data-dir ../shared/data --epochs 8 --seeds 0 1 2 \
        --supervised-seeds 0 --work runs/cifar10-4000 --out results/cifar10_4000.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import cpu_name, train_or_reuse
from drmm.files import write_json


def train(out: Path, seed: int, epochs: int | None, supervised: bool, args) -> dict:
    """The run in `out`: trained (or resumed) unless its metrics.json exists; its summary."""
    flags = ["--dataset", "cifar10", "--seed", str(seed), "--device", args.device]
    flags += ["--data-dir", args.data_dir] if args.data_dir else []
    flags += ["--epochs", str(epochs)] if epochs else []
    flags += ["--supervised-only"] if supervised else []
    metrics = train_or_reuse(out, flags)
    history = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    worst = metrics["worst_confusion"]
    return {"run": str(out), "seed": seed, "supervised_only": supervised,
            "epochs": metrics["epochs"], "labels": metrics["labels"],
            "train_images": metrics["train_images"],
            "test_error_pct": round(metrics["test_error_percent"], 2),
            "hours": round(metrics["wall_seconds"] / 3600, 2),
            "images_per_s": round(statistics.median(r["images_per_s"] for r in history), 1),
            "largest_mix_up": f"{worst['count']} {worst['true']}s called {worst['predicted']}",
            "test_error_curve_pct": [None if e is None else round(e, 2)
                                     for e in metrics["test_error_percent_by_epoch"]]}


def main(args) -> dict:
    work = Path(args.work)
    t0 = time.perf_counter()
    drmm_runs = [train(work / f"drmm_s{s}", s, args.epochs, False, args) for s in args.seeds]
    base_runs = [train(work / f"supervised_s{s}", s, args.supervised_epochs or args.epochs, True,
                       args) for s in args.supervised_seeds]
    errors = [r["test_error_pct"] for r in drmm_runs]
    report = {"preset": "cifar10", "labels": 4000, "device": args.device,
              "torch": torch.__version__, "cpu": cpu_name(),
              "note": args.note, "this_call_s": round(time.perf_counter() - t0, 1),
              "drmm_mean_pct": round(statistics.mean(errors), 2) if errors else None,
              "drmm_std_pct": round(statistics.stdev(errors), 2) if len(errors) > 1 else None,
              "runs": drmm_runs + base_runs}
    print("| run | seed | epochs | test error | hours | images/s | largest mix-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in report["runs"]:
        print(f"| {'supervised-only' if r['supervised_only'] else 'DRMM'} | {r['seed']} |"
              f" {r['epochs']} | {r['test_error_pct']:.2f} % | {r['hours']:.2f} |"
              f" {r['images_per_s']:.0f} | {r['largest_mix_up']} |")
    if errors:
        spread = f" +- {report['drmm_std_pct']:.2f}" if report["drmm_std_pct"] else ""
        print(f"DRMM mean over seeds {args.seeds}: {report['drmm_mean_pct']:.2f}{spread} %")
    both = sorted(set(args.seeds) & {r["seed"] for r in base_runs})
    if both:  # the DRMM against the supervised network on the seeds both ran

        def mean_on_both(runs: list[dict]) -> float:
            return statistics.mean(r["test_error_pct"] for r in runs if r["seed"] in both)

        ratio = mean_on_both(drmm_runs) / mean_on_both(base_runs)
        report["ratio_to_supervised"], report["ratio_seeds"] = round(ratio, 3), both
        print(f"DRMM / supervised-only test error on seeds {both}: {ratio:.2f}")
    if args.out:
        write_json(args.out, report)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="folder holding cifar10.npz or the download (default: cache)")
    p.add_argument("--work", default="runs/cifar10-4000", help="folder for the runs")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="DRMM seeds")
    p.add_argument("--supervised-seeds", type=int, nargs="*", default=[0],
                   help="seeds of the --supervised-only network")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument("--supervised-epochs", type=int,
                   help="the supervised network's epochs (default: --epochs)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--note", default="", help="how the runs shared the machine, for the JSON")
    p.add_argument("--out", help="JSON file to write")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
