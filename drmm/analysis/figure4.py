"""Figure 4's layout from several `drmm analyze` results (section 5.4): one panel per latent,
every model of every run as a line, e.g. the DRMM and the DCN at N_L = 4000 and at N_L = 50K.

    python -m drmm.analysis.figure4 --csv results/decoding.csv "N_L=4000" \\
        --csv results/decoding_50k/decoding.csv "N_L=50K" --out results/figure4.png

Each CSV's model names get its label appended ("DRMM" -> "DRMM N_L=4000"); the merged rows are
written beside the figure (figure4.csv next to figure4.png), so the figure's numbers are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drmm.analysis.cli import read_csv, write_csv
from drmm.analysis.plot import plot_decoding
from drmm.errors import DRMMError


def merge(sources: list[tuple[str, str]]) -> list[dict]:
    """Rows of every (csv path, label), model names suffixed with the label."""
    rows = []
    for path, label in sources:
        rows += [{**r, "model": f"{r['model']} {label}"} for r in read_csv(path)]
    keys = {(r["model"], r["layer"], r["latent"]) for r in rows}
    if len(keys) < len(rows):
        raise DRMMError("two CSVs give the same model name, layer and latent; give each --csv"
                        " its own label")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", nargs=2, action="append", required=True, metavar=("FILE", "LABEL"),
                   help="a decoding.csv and the label its lines get (repeat per run)")
    p.add_argument("--out", required=True, help="the PNG to write (its rows go to .csv beside)")
    p.add_argument("--title", default="Linear decoding of the latents from each layer")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix != ".png":
            raise DRMMError(f"--out {out}: give a .png file name")
        rows = merge(args.csv)
        write_csv(rows, out.with_suffix(".csv"))
        plot_decoding(rows, out, title=args.title)
    except DRMMError as e:
        print(f"figure4: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
