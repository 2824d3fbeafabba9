#!/usr/bin/env bash
# GPU check: MNIST with N_L = 100 labels (Table 1's middle column, the +KL+NN row) trained on one
# CUDA GPU inside a single 10-minute command, with the longest schedule that fits.
#
# It times 150 training steps first, then trains as many epochs as fit in BUDGET_S seconds
# (default 420; at most the paper's 500) with the paper's optimiser: plain SGD, learning rate
# 0.2 -> 1e-4 decayed exponentially over the run, batch 100 = 50 labeled + 50 unlabeled
# (Appendix A). It prints the test error at the end of training, the best test error seen
# during training (read off the test set: optimistic), images/s and seconds per epoch.
#
# Needs only python3 with torch (CUDA) and numpy, plus tqdm, matplotlib and pyyaml, which the
# training path imports (all in the GPU image); it installs nothing and reads no network.
# MNIST's four .gz files are looked for in $DRMM_DATA_DIR, shared/data, ../shared/data and
# .gpu_data (each with or without a mnist/ folder), and md5-checked.
#
# Usage, from the repository root:
#   bash benchmarks/gpu_check.sh                # OUT_DIR defaults to $OUT (device tool) or /tmp
#   BUDGET_S=300 DRMM_DATA_DIR=/data bash benchmarks/gpu_check.sh
# Writes $OUT_DIR/gpu_check_summary.json and $OUT_DIR/gpu_check_metrics.jsonl.
# SMOKE=1 runs the whole script on the CPU on 300 training images, to check it before a GPU
# session is spent on it (its numbers mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-${OUT:-/tmp}}
BUDGET_S=${BUDGET_S:-420}
SMOKE=${SMOKE:-0}

DATA_DIR=""
for d in "${DRMM_DATA_DIR:-}" shared/data ../shared/data .gpu_data; do
    if [ -n "$d" ] && { [ -f "$d/mnist/train-images-idx3-ubyte.gz" ] \
                        || [ -f "$d/train-images-idx3-ubyte.gz" ]; }; then
        DATA_DIR=$d
        break
    fi
done
if [ -z "$DATA_DIR" ]; then
    echo "gpu_check: no MNIST files found; copy the four .gz files to .gpu_data/mnist/" \
         "(and carry .gpu_data) or set DRMM_DATA_DIR" >&2
    exit 2
fi
mkdir -p "$OUT_DIR"

"$PYTHON" - "$DATA_DIR" "$OUT_DIR" "$BUDGET_S" "$SMOKE" <<'PY'
import importlib
import json
import math
import sys
import time
from pathlib import Path

data_dir, out_dir, budget, smoke = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), \
    sys.argv[4] == "1"
missing = []
for name in ("torch", "numpy", "tqdm", "matplotlib", "yaml"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_check: missing Python packages {missing}; the training path imports them")

import torch  # noqa: E402

from drmm.config import preset  # noqa: E402
from drmm.data import load_dataset  # noqa: E402
from drmm.train import Objective, make_optimizer, train, train_step  # noqa: E402
from drmm.model import DRMM  # noqa: E402

device = "cpu" if smoke else "cuda"
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
t_start = time.perf_counter()
gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (SMOKE=1)"
print(f"gpu_check: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, data {data_dir}")

cfg = preset("mnist")  # ConvSmall, Table 6 weights 1 / 0.2 / 1 / 1, images in [0, 1]
t = cfg.train
t.labels, t.seed, t.device, t.data_dir = 100, 0, device, data_dir
t.optimizer, t.lr, t.lr_final, t.decay, t.batch_size = "sgd", 0.2, 1e-4, "exp", 100
t.tensorboard, t.log_every = False, 200  # fewer host syncs
data = load_dataset("mnist", data_dir)
if smoke:  # a few steps only
    data.x_train, data.y_train = data.x_train[:300], data.y_train[:300]
    data.x_test, data.y_test = data.x_test[:300], data.y_test[:300]

# Calibrate: seconds per training step and per test evaluation on this GPU.
model = DRMM(cfg.model).to(device)
opt, sched = make_optimizer(model, cfg, 10**6)
x, y = data.x_train[:100].to(device), data.y_train[:50].to(device)  # (100, 1, 28, 28), (50,)
stepper = Objective(model, cfg)


def steps(n):
    for _ in range(n):  # the training loop's step, without its NaN check (a host sync)
        train_step(stepper, model, opt, sched, (x[:50], y, x[50:]), check=False)
    if device == "cuda":
        torch.cuda.synchronize()


n_timed = 3 if smoke else 150
steps(2 if smoke else 20)  # warm-up: cuDNN autotuning, allocator
t0 = time.perf_counter()
steps(n_timed)
step_s = (time.perf_counter() - t0) / n_timed
steps_per_epoch = len(data.x_train) // (t.batch_size // 2)
epoch_s = steps_per_epoch * step_s * 1.15 + 1.0  # +15 % and 1 s: evaluation, bookkeeping
left = budget - (time.perf_counter() - t_start)
t.epochs = max(1, min(500, math.floor(left / epoch_s)))
print(f"gpu_check: {step_s * 1e3:.2f} ms per step ({t.batch_size / step_s:.0f} images/s),"
      f" ~{epoch_s:.1f} s per epoch -> {t.epochs} epochs in the {left:.0f} s left of the budget")
del model, opt

run_dir = Path("/tmp/gpu_check_run")
if run_dir.exists():
    import shutil

    shutil.rmtree(run_dir)
metrics = train(cfg, run_dir, data=data, progress=False)
history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
speeds = [r["images_per_s"] for r in history]
epoch_times = [r["epoch_seconds"] for r in history]
summary = {
    "gpu": gpu,
    "torch": torch.__version__,
    "dataset": "mnist",
    "labels": t.labels,
    "row": "+KL+NN",
    "schedule": f"{t.epochs} epochs, SGD lr {t.lr} -> {t.lr_final}, batch {t.batch_size}",
    "epochs": t.epochs,
    "test_error_end": metrics["test_error"],
    "test_error_best_during_training_read_off_test_set": metrics["best_test_error"],
    "images_per_s_mean": sum(speeds) / len(speeds),
    "seconds_per_epoch_mean": sum(epoch_times) / len(epoch_times),
    "train_wall_seconds": metrics["wall_seconds"],
    "total_seconds": time.perf_counter() - t_start,
    "test_error_curve": metrics["test_error_curve"],
}
(out_dir / "gpu_check_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
(out_dir / "gpu_check_metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text())
print(f"gpu_check: test error {100 * summary['test_error_end']:.2f} % after {t.epochs} epochs"
      f" (best during training {100 * metrics['best_test_error']:.2f} %, read off the test set;"
      " paper, 500 epochs: 0.57 %)")
print(f"gpu_check: {summary['images_per_s_mean']:.0f} images/s,"
      f" {summary['seconds_per_epoch_mean']:.1f} s per epoch,"
      f" training {metrics['wall_seconds']:.0f} s, total {summary['total_seconds']:.0f} s")
PY
