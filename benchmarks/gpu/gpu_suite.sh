#!/usr/bin/env bash
# GPU suite: one command of about 9 minutes on one H100 that checks the CUDA path and
# measures what a GPU is lent for. Four parts, each a process in its own `timeout`, so one
# slow part cannot eat the others' time:
#
#   1. correctness (CORRECT_S, default 90 s; on an H200 it took 45 s, pytest included, and
#      once 51 s before pytest, which a budget of 60 s then cut off after 7 s): a
#      training step in fp32 and in bf16 autocast, evaluation, checkpoint save + load, a
#      crashed-and-resumed run against an uninterrupted one (max |weight difference|
#      reported: cuDNN is not bit-deterministic), then
#      `pytest -q -x tests/test_model.py tests/test_losses.py` (CPU tests).
#   2. throughput (THROUGHPUT_S, 110 s; on an H200 the first group took 47-57 s, cuDNN's
#      autotuning of eight variants included, the second 14 s): the DRMM step against the
#      supervised (DCN) step, ConvSmall and ConvLarge, batch 100 and 500, fp32 and bf16,
#      channels-last and NCHW; images/s, their ratio, peak memory
#      (benchmarks/speed/step_throughput.py's timing, interleaved).
#   3. mnist (MNIST_S, 165 s): MNIST N_L = 100, +KL+NN, the paper's optimiser (SGD 0.2 -> 1e-4,
#      exponential decay, batch 100, no momentum) over as many epochs as fit, after timing
#      the step on this GPU.
#   4. cifar10 (CIFAR_S, 195 s): CIFAR-10 N_L = 4000, ConvLarge +KL+NN (Table 6 weights),
#      standardized, the same optimiser, on the subset .gpu_data/cifar10_subset.npz (all 4,000
#      labeled images, as many unlabeled and test images as fitted: its README.txt says which),
#      with the standard augmentation (random 32x32 crop of the image padded by 4 pixels,
#      horizontal flip; AUGMENT=0: none). drmm trains with it as --augment crop_flip
#      (train.augment, drmm/data/augment.py), both halves of each batch, on the GPU.
#
# The data on the GPU machine (no network, no registry) travels in .gpu_data/, made here by
#   python -m benchmarks.gpu.gpu_data        # MNIST .gz files, the CIFAR subset, pytest.zip
# and carried: run from the repository root with carry [".gpu_data"]:
#   bash benchmarks/gpu/gpu_suite.sh         # (device tool: timeout_s 600)
# It needs python3 with torch (CUDA), numpy, tqdm, matplotlib, pyyaml; pytest, if missing, is
# taken from .gpu_data/pytest.zip. Data are looked for in .gpu_data, shared/data,
# ../shared/data and $DRMM_DATA_DIR (MNIST) and $CIFAR_NPZ (CIFAR-10).
#
# Output in OUT_DIR (default $OUT, else /tmp/gpu_suite), at most 6 files: gpu_suite.json (one
# record per part, written as each part goes: a part cut off by its timeout keeps what it
# measured), gpu_suite.log (everything printed), {mnist,cifar10}_metrics.jsonl and
# {mnist,cifar10}_reconstructions.png. A summary, one line per part, ends the output.
#
# GPU settings: cudnn.benchmark on; the data live on the GPU (train() keeps them there); the NaN
# check, a host sync, runs every 200 steps (log_every) and at epoch ends only.
# TRAIN_PRECISION=bf16 trains parts 3 and 4 in bf16 autocast (default fp32).
#
# SMOKE=1 runs every part on the CPU on tiny data (a few hundred MNIST images, 1 epoch, a tiny
# CIFAR subset or, without .gpu_data, a random CIFAR-like file), in about 45 s: every code
# path runs but part 1's pytest call (the test suite runs those tests itself), no number means
# anything. tests/test_gpu_suite.py runs it.
set -uo pipefail  # no -e: a failing part is recorded and the next one runs
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
OUT_DIR=${OUT_DIR:-${OUT:-/tmp/gpu_suite}}
if [ "$SMOKE" = 1 ]; then d=300; else d=""; fi  # SMOKE: the budgets only catch a hang
CORRECT_S=${CORRECT_S:-${d:-90}}
THROUGHPUT_S=${THROUGHPUT_S:-${d:-110}}
MNIST_S=${MNIST_S:-${d:-165}}
CIFAR_S=${CIFAR_S:-${d:-195}}
MARGIN_S=${MARGIN_S:-8}  # each part plans to end this long before its timeout
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/gpu_suite_work.XXXXXX)  # run folders, checkpoints: not sent back
rm -f "$OUT_DIR/gpu_suite.json"
exec > >(tee "$OUT_DIR/gpu_suite.log") 2>&1
TEE_PID=$!
# At exit: drop the work folder, then let tee write the log's last lines before the end.
trap 'rm -rf "$WORK"; exec >&- 2>&-; wait "$TEE_PID"' EXIT
T0=$(date +%s)
echo "gpu_suite: $(date -u +%FT%TZ), SMOKE=$SMOKE, out $OUT_DIR, budgets (s): correctness" \
     "$CORRECT_S, throughput $THROUGHPUT_S, mnist $MNIST_S, cifar10 $CIFAR_S"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader

MNIST_DIR=""
for dir in .gpu_data shared/data ../shared/data "${DRMM_DATA_DIR:-}"; do
    if [ -n "$dir" ] && { [ -f "$dir/mnist/train-images-idx3-ubyte.gz" ] \
                          || [ -f "$dir/train-images-idx3-ubyte.gz" ]; }; then
        MNIST_DIR=$dir
        break
    fi
done
CIFAR=${CIFAR_NPZ:-.gpu_data/cifar10_subset.npz}
if [ ! -f "$CIFAR" ] && [ "$SMOKE" = 1 ]; then  # the smoke test needs no prepared data
    CIFAR=$WORK/fake_cifar10.npz
    "$PYTHON" -m benchmarks.gpu.gpu_suite fake-cifar --path "$CIFAR"
fi
PYTEST_PATH=""
if ! "$PYTHON" -c "import pytest" 2> /dev/null && [ -f .gpu_data/pytest.zip ]; then
    PYTEST_PATH=$PWD/.gpu_data/pytest.zip
fi
echo "gpu_suite: MNIST from ${MNIST_DIR:-nowhere}, CIFAR-10 from $CIFAR," \
     "pytest ${PYTEST_PATH:-installed}"

COMMON=(--out "$OUT_DIR" --work "$WORK" --precision "${TRAIN_PRECISION:-fp32}")
[ "$SMOKE" = 1 ] && COMMON+=(--smoke)
[ "${AUGMENT:-1}" = 0 ] && COMMON+=(--no-augment)
[ -n "$PYTEST_PATH" ] && COMMON+=(--pytest-path "$PYTEST_PATH")

run_part() {  # name, budget in seconds, then the part's own arguments
    local name=$1 budget=$2 rc start
    shift 2
    echo "gpu_suite: --- $name (at most ${budget} s) ---"
    start=$(date +%s)
    timeout --kill-after=10 "$budget" "$PYTHON" -m benchmarks.gpu.gpu_suite "$name" \
        "${COMMON[@]}" --deadline "$(( start + budget - MARGIN_S ))" "$@"
    rc=$?
    echo "gpu_suite: $name ended after $(( $(date +%s) - start )) s, exit code $rc"
    "$PYTHON" -m benchmarks.gpu.gpu_suite mark --for "$name" --rc "$rc" --out "$OUT_DIR"
}

skip_part() {  # name, why
    echo "gpu_suite: --- $1 skipped: $2 ---"
    "$PYTHON" -m benchmarks.gpu.gpu_suite skip --for "$1" --why "$2" --out "$OUT_DIR"
}

NO_DATA="run python -m benchmarks.gpu.gpu_data and carry .gpu_data"
if [ -n "$MNIST_DIR" ]; then
    run_part correctness "$CORRECT_S" --mnist-dir "$MNIST_DIR"
else
    skip_part correctness "no MNIST files ($NO_DATA)"
fi
run_part throughput "$THROUGHPUT_S"
if [ -n "$MNIST_DIR" ]; then
    run_part mnist "$MNIST_S" --mnist-dir "$MNIST_DIR"
else
    skip_part mnist "no MNIST files ($NO_DATA)"
fi
if [ -f "$CIFAR" ]; then
    run_part cifar10 "$CIFAR_S" --cifar "$CIFAR"
else
    skip_part cifar10 "no $CIFAR ($NO_DATA)"
fi

echo "gpu_suite: total $(( $(date +%s) - T0 )) s"
"$PYTHON" -m benchmarks.gpu.gpu_suite summary --out "$OUT_DIR"  # exit code 1 unless all parts ok
