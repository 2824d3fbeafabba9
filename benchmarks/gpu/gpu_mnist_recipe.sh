#!/usr/bin/env bash
# MNIST training runs side by side on one lent GPU: the label draws and settings that 2 CPU
# cores cannot afford. A ConvSmall step at batch 100 leaves the GPU mostly idle, so concurrent
# processes fill it (six runs: 3.4x the images/s of one on an H200). Test error is a property of
# the recipe, not of the device; what a run costs on the CPU is timed on the CPU
# (results/recipe.md). What earlier lists measured: results/gpu.md, its MNIST sections; their
# records: results/gpu/mnist_recipe/.
# The default list runs the `mnist` preset (20 epochs, the graph prior, the consistency term) on
# label draws 3-8 and at N_L = 50 on seeds 1 and 2, all eight at once. Runs named on the command
# line ("name|flags the preset gets", one argument each) replace the list.
#   device tool: bash benchmarks/gpu/gpu_mnist_recipe.sh   (carry [".gpu_data"], timeout_s 600)
# Each run stops at RUN_S seconds (default 570) if not done; its record then holds the epochs it
# reached. On an H200, six 20-epoch runs of 50 + 50 batches without the graph prior or the
# consistency term took ~18.5 s an epoch (1,200 steps) each plus ~15 s to start (~385 s in all);
# 14 epochs of 20 + 80 batches (750 steps an epoch) took 181 s (six runs) and 192 s (seven), and
# six such runs with the graph prior (its label spreading included) 228-239 s. The consistency
# term costs a second bottom-up pass and the preset has 20 epochs: expect runs ~2x as long as
# those 14-epoch times (~470 s).
# Output in $OUT (default /tmp/gpu_mnist_recipe): ONE file, runs.json ({run name: {"epochs":
# [the metrics.jsonl records], "final": metrics.json or null, "tail": the last log line}}): the
# device tool brings back at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/../..
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-/tmp/gpu_mnist_recipe}
RUN_S=${RUN_S:-570}
WORK=$(mktemp -d /tmp/gpu_mnist_recipe.XXXXXX)
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name --format=csv,noheader
RUNS=(  # name|the flags it adds to the preset
    "e20_s3|--seed 3" "e20_s4|--seed 4" "e20_s5|--seed 5" "e20_s6|--seed 6" "e20_s7|--seed 7"
    "e20_s8|--seed 8" "e20_nl50_s1|--seed 1 --labels 50" "e20_nl50_s2|--seed 2 --labels 50"
)
if [ $# -gt 0 ]; then RUNS=("$@"); fi  # or the runs named on the command line, "name|flags"
for run in "${RUNS[@]}"; do
    name=${run%%|*}
    read -r -a flags <<< "${run#*|}"
    # two threads each: eight label spreadings at once on the 16 cores, none oversubscribed
    OMP_NUM_THREADS=2 timeout "$RUN_S" python3 -m drmm train --dataset mnist --data-dir .gpu_data \
        --device cuda "${flags[@]}" --no-tensorboard --out "$WORK/$name" \
        > "$WORK/$name.log" 2>&1 &
done
wait
python3 - "$WORK" "$OUT_DIR/runs.json" <<'PY'
import json, pathlib, sys
work, runs = pathlib.Path(sys.argv[1]), {}
for run in sorted(p for p in work.iterdir() if p.is_dir()):
    jsonl, final = run / "metrics.jsonl", run / "metrics.json"
    log = (work / f"{run.name}.log").read_text(errors="replace").replace("\r", "\n").strip()
    runs[run.name] = {
        "epochs": ([json.loads(line) for line in jsonl.read_text().splitlines()]
                   if jsonl.exists() else []),
        "final": json.loads(final.read_text()) if final.exists() else None,
        "tail": log.splitlines()[-1] if log else "",
    }
    last = runs[run.name]["epochs"][-1:] or [{}]
    print(f"{run.name}: epoch {last[0].get('epoch')} test error {last[0].get('test_error')}"
          f"{'' if runs[run.name]['final'] else ' (cut off before the end)'}")
pathlib.Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
PY
