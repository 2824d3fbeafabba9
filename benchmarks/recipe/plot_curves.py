"""Test-error curves of training runs, one line per run (results/recipe.md).

    python -m benchmarks.recipe.plot_curves --title "digits, 50 labels" --out curves.png \
        results/recipe/digits_runs/epochs.jsonl

    python -m benchmarks.recipe.plot_curves --x minutes --out curves.png \
        results/recipe/mnist_full/epochs.jsonl --runs e20_s0 e20_s1 e20_s2  # against wall time

Each file is a run's metrics.jsonl, named after its folder (or the file, without .jsonl), or a
folded record of many runs (results/*/epochs.jsonl: a "run" on each line, and a "batch" where
runs of several batches share names), one line per run it holds, or per --runs name given.
With several seeds, names with the same seed<N> share a colour and names that differ only in
their seed share a line style (supervised runs: dotted); with one seed, each name has a colour.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from matplotlib.figure import Figure


def curves(path: Path, runs: list[str] | None) -> list[tuple[str, list[dict]]]:
    """(name, epoch records) of each run in the file: one for a metrics.jsonl, one per run
    (those named in `runs`, if given) for a folded record."""
    rows = [json.loads(line) for line in path.open()]
    if not rows or "run" not in rows[0]:
        return [(path.parent.name if path.stem == "metrics" else path.stem, rows)]
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        name = f"{r['batch']}/{r['run']}" if "batch" in r else r["run"]
        by_run.setdefault(name, []).append(r)
    return [(name, by_run[name]) for name in (runs or by_run) if name in by_run]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", nargs="+", help="metrics.jsonl files or folded epochs.jsonl records")
    p.add_argument("--runs", nargs="+", help="the runs to draw from a folded record (default: all)")
    p.add_argument("--title", default="")
    p.add_argument("--x", choices=("epoch", "minutes"), default="epoch",
                   help="the x axis: epochs, or minutes of wall-clock time since the start")
    p.add_argument("--out", required=True, help="the PNG to write")
    a = p.parse_args(argv)
    lines = [c for path in map(Path, a.metrics) for c in curves(path, a.runs)]
    if not lines:
        p.error(f"no run named {a.runs} in {a.metrics}")
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    seeds = [re.search(r"seed(\d+)", name) for name, _ in lines]
    by_seed = len({s.group(1) for s in seeds if s}) > 1  # else each line gets its own colour
    styles = {}  # variant (the name without its seed) -> line style, in first-seen order
    for i, ((name, rows), seed) in enumerate(zip(lines, seeds, strict=True)):
        variant = re.sub(r"seed\d+", "", name)
        style = ":" if "supervised" in name else styles.setdefault(
            variant, ["-", "--", "-.", (0, (5, 1, 1, 1))][len(styles) % 4])
        colour = f"C{int(seed.group(1)) if seed else 0}" if by_seed else f"C{i}"
        evaluated = [r for r in rows if r["test_error"] is not None]  # none between evaluations
        x = [r["epoch"] if a.x == "epoch" else r["wall_seconds"] / 60 for r in evaluated]
        ax.plot(x, [100 * r["test_error"] for r in evaluated], linestyle=style, color=colour,
                marker="." if a.x == "minutes" else None, label=name)
    ax.set(xlabel="epoch" if a.x == "epoch" else "wall-clock minutes", ylabel="test error (%)",
           yscale="log", title=a.title)
    ax.legend(ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)


if __name__ == "__main__":
    main()
