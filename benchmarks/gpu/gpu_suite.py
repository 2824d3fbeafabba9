"""The parts of benchmarks/gpu/gpu_suite.sh, one per process so that each runs in its own
timeout.

    python -m benchmarks.gpu.gpu_suite PART --out OUT_DIR --work WORK_DIR --deadline UNIX_TIME ...

PART: correctness | throughput | mnist | cifar10 (the four parts: suite_correctness.py,
suite_throughput.py, suite_training.py), mark (records how a part's process ended), summary
(prints the summary lines), fake-cifar (a tiny random CIFAR-like npz for SMOKE=1). Each part
writes its record under its name into OUT_DIR/gpu_suite.json as it goes (so a part cut off by
its timeout still leaves what it measured) and prints one line starting with `gpu_suite[PART]`.
--smoke runs every code path on the CPU on tiny data; its numbers mean nothing. Run it through
gpu_suite.sh, which says more.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from benchmarks.gpu.suite_base import PARTS, RESULTS, read_results, record
from benchmarks.gpu.suite_correctness import part_correctness
from benchmarks.gpu.suite_throughput import part_throughput
from benchmarks.gpu.suite_training import copy_run_files, part_cifar10, part_mnist

# ----------------------------------------------------------------------------------------------
# Bookkeeping


def mark(a) -> None:
    """After a part's process ended with exit code a.rc: its status, and the files of a
    training run that its timeout cut short."""
    out = Path(a.out)
    rec = read_results(out).get(a.part, {})
    if a.rc == 0 and rec.get("status") == "ok":
        return
    why = {124: "timed out", 137: "killed (timeout)"}.get(a.rc, f"failed (exit code {a.rc})")
    rec["status"] = why if a.rc else "ended without a record"
    rec["summary"] = f"{rec['status']}; see gpu_suite.log"
    run_dir = Path(rec.get("run_dir", "/nonexistent"))
    if (run_dir / "metrics.jsonl").is_file():  # the epochs finished before the cut
        copy_run_files(run_dir, out, a.part)
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rec["epochs_done"] = len(history)
        rec["test_error_curve"] = [r["test_error"] for r in history]
        if history:
            rec["summary"] += (f"; {len(history)} epochs done, last test error"
                               f" {100 * history[-1]['test_error']:.2f} %")
    record(out, a.part, rec)
    print(f"gpu_suite[{a.part}]: {rec['summary']}", flush=True)


def skip(a) -> None:
    record(Path(a.out), a.part, {"status": "skipped", "summary": a.why})


def summary(a) -> int:
    """Prints one line per part; returns 1 unless every part ended ok."""
    results = read_results(Path(a.out))
    print(f"gpu_suite: summary ({Path(a.out) / RESULTS})")
    for part in PARTS:
        rec = results.get(part, {"status": "missing", "summary": "no record"})
        print(f"  {part}: [{rec.get('status')}] {rec.get('summary', '')}")
    return int(any(results.get(part, {}).get("status") != "ok" for part in PARTS))


def fake_cifar(a) -> None:
    """A tiny random CIFAR-like npz: 4 labeled images per class, 40 unlabeled, 20 test."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.concatenate([np.repeat(np.arange(10), 4), np.full(40, -1)])
    np.savez_compressed(a.path, x_train=rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8),
                        y_train=y, x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
                        y_test=np.arange(20) % 10)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=[*PARTS, "mark", "skip", "summary", "fake-cifar"])
    p.add_argument("--out", default="/tmp/gpu_suite")
    p.add_argument("--work", default="/tmp/gpu_suite_work")
    p.add_argument("--deadline", type=float, default=math.inf, help="unix time to finish by")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--mnist-dir", help="folder with the MNIST .gz files (or a mnist/ folder)")
    p.add_argument("--cifar", help="the prepared CIFAR-10 npz")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="of the training runs")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--pytest-path", help="added to PYTHONPATH for pytest (a pytest.zip)")
    p.add_argument("--rc", type=int, help="mark: the part's exit code")
    p.add_argument("--for", dest="part_name", choices=PARTS, help="mark, skip: the part")
    p.add_argument("--why", help="skip: the reason")
    p.add_argument("--path", help="fake-cifar: the file to write")
    a = p.parse_args(argv)
    if a.part in ("mark", "skip"):
        a.part, action = a.part_name, a.part
        return (mark if action == "mark" else skip)(a)
    return {"correctness": part_correctness, "throughput": part_throughput, "mnist": part_mnist,
            "cifar10": part_cifar10, "summary": summary, "fake-cifar": fake_cifar}[a.part](a)


if __name__ == "__main__":
    sys.exit(main())
