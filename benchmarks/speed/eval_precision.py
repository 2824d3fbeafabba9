"""The test-set evaluation of trained runs in float32 and under bf16 autocast: seconds and errors.

A run evaluates its test set after every epoch, the epochs before the last in the step's
precision and the last, the run's result, in float32 (drmm/train.py). This measures what bf16
saves there and what it moves: each run's checkpoint evaluated on its whole test set `--rounds`
times in each precision, interleaved in one process, as training evaluates it (the model
channels_last where the run's config has it, the run's eval batch size). Prints each run's
seconds (median round) and errors in both precisions, and writes JSON.

    python -m benchmarks.speed.eval_precision --data-dir ../shared/data --threads 1 \
        --out results/eval_precision.json RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import cpu_name, load_run
from drmm.evaluate import confusion, error_rate
from drmm.files import write_json
from drmm.precision import step_autocast

CPU = torch.device("cpu")


def evaluate_run(run: str, data_dir: str, rounds: int) -> dict:
    """Seconds of each evaluation of `run`'s test set and its error, per precision."""
    model, cfg, _, d = load_run(run, data_dir)  # eval mode; the test set as the run saw it
    if cfg.train.channels_last:  # the model as training evaluates it
        model = model.to(memory_format=torch.channels_last)
    seconds, errors = {"fp32": [], "bf16": []}, {}
    for _ in range(rounds):
        for precision in seconds:
            t0 = time.perf_counter()
            with step_autocast(precision, CPU):
                counts = confusion(model, d.x_test, d.y_test, cfg.train.eval_batch_size)  # (K, K)
            seconds[precision].append(time.perf_counter() - t0)
            errors[precision] = error_rate(counts)  # the same every round: eval mode, no noise
    return {"run": run, "dataset": cfg.train.dataset, "arch": cfg.model.arch,
            "test_images": len(d.x_test), "seconds": seconds,
            "median_seconds": {p: statistics.median(s) for p, s in seconds.items()},
            "test_error": errors}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="trained run folders (their checkpoint.pt)")
    p.add_argument("--data-dir", required=True, help="folder holding the runs' data sets")
    p.add_argument("--rounds", type=int, default=3, help="evaluations per precision and run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/eval_precision.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = [evaluate_run(run, a.data_dir, a.rounds) for run in a.runs]
    print(f"test-set evaluation, {a.threads} thread(s), {cpu_name()}; median of {a.rounds}")
    print(f"{'run':<40}{'fp32 s':>8}{'bf16 s':>8}{'ratio':>7}{'fp32 err':>10}{'bf16 err':>10}")
    for r in rows:
        s, e = r["median_seconds"], r["test_error"]
        print(f"{r['run']:<40}{s['fp32']:>8.1f}{s['bf16']:>8.1f}{s['fp32'] / s['bf16']:>6.2f}x"
              f"{100 * e['fp32']:>9.2f}%{100 * e['bf16']:>9.2f}%")
    result = {"cpu": cpu_name(), "threads": a.threads, "rounds": a.rounds,
              "torch": torch.__version__, "runs": rows}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
