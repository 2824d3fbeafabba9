"""Test-error curves of training runs, one line per metrics.jsonl (results/recipe.md).

    python benchmarks/plot_curves.py --title "digits, 50 labels" --out curves.png \
        results/recipe/digits_runs/*.jsonl

Each file's name (without .jsonl) labels its line; names with the same seed<N> share a colour,
names that differ only in their seed share a line style (supervised runs: dotted).
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
    p.add_argument("--out", required=True, help="the PNG to write")
    a = p.parse_args(argv)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    styles = {}  # variant (the name without its seed) -> line style, in first-seen order
    for path in map(Path, a.metrics):
        rows = [json.loads(line) for line in path.open()]
        seed = re.search(r"seed(\d+)", path.stem)
        variant = re.sub(r"seed\d+", "", path.stem)
        style = ":" if "supervised" in path.stem else styles.setdefault(
            variant, ["-", "--", "-.", (0, (5, 1, 1, 1))][len(styles) % 4])
        ax.plot([r["epoch"] for r in rows], [100 * r["test_error"] for r in rows],
                linestyle=style, color=f"C{int(seed.group(1)) if seed else 0}", label=path.stem)
    ax.set(xlabel="epoch", ylabel="test error (%)", yscale="log", title=a.title)
    ax.legend(ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)


if __name__ == "__main__":
    main()
