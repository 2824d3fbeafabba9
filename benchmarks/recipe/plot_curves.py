"""Test-error curves of training runs, one line per metrics.jsonl (results/recipe.md).

    python -m benchmarks.recipe.plot_curves --title "digits, 50 labels" --out curves.png \
        results/recipe/digits_runs/*.jsonl

    python -m benchmarks.recipe.plot_curves --x minutes --out curves.png \
        results/recipe/mnist_full/*/metrics.jsonl       # against wall-clock time

Each file's name (without .jsonl; a run folder's name for its metrics.jsonl) labels its line;
with several seeds, names with the same seed<N> share a colour and names that differ only in
their seed share a line style (supervised runs: dotted); with one seed, each name has a colour.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from matplotlib.figure import Figure


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", nargs="+", help="metrics.jsonl files")
    p.add_argument("--title", default="")
    p.add_argument("--x", choices=("epoch", "minutes"), default="epoch",
                   help="the x axis: epochs, or minutes of wall-clock time since the start")
    p.add_argument("--out", required=True, help="the PNG to write")
    a = p.parse_args(argv)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    paths = list(map(Path, a.metrics))
    names = [p.parent.name if p.stem == "metrics" else p.stem for p in paths]
    seeds = [re.search(r"seed(\d+)", name) for name in names]
    by_seed = len({s.group(1) for s in seeds if s}) > 1  # else each line gets its own colour
    styles = {}  # variant (the name without its seed) -> line style, in first-seen order
    for i, (path, name, seed) in enumerate(zip(paths, names, seeds, strict=True)):
        rows = [json.loads(line) for line in path.open()]
        variant = re.sub(r"seed\d+", "", name)
        style = ":" if "supervised" in name else styles.setdefault(
            variant, ["-", "--", "-.", (0, (5, 1, 1, 1))][len(styles) % 4])
        colour = f"C{int(seed.group(1)) if seed else 0}" if by_seed else f"C{i}"
        x = [r["epoch"] if a.x == "epoch" else r["wall_seconds"] / 60 for r in rows]
        ax.plot(x, [100 * r["test_error"] for r in rows], linestyle=style, color=colour,
                marker="." if a.x == "minutes" else None, label=name)
    ax.set(xlabel="epoch" if a.x == "epoch" else "wall-clock minutes", ylabel="test error (%)",
           yscale="log", title=a.title)
    ax.legend(ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)


if __name__ == "__main__":
    main()
