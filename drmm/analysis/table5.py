"""Table 5's analogue (section 5.4) from two finished runs on the rendered data set.

    python -m drmm.analysis.table5 --drmm runs/syn4k-drmm --dcn runs/syn4k-dcn \
        --out results/table5-synthetic.md

Reads each run's metrics.json and config.json (written by `drmm train`) and writes a Markdown
table beside the paper's numbers, with the settings that differ from the paper's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drmm.errors import DRMMError
from drmm.files import atomic_write
from drmm.metrics import read_metrics
from drmm.reproduce.report import describe_settings

# The paper's Table 5: test error (%) on its Blender set, ConvLarge 9-layer networks, N_U = 50K.
PAPER = {"Conv Large 9-layer (DCN)": {4000: 23.44, 50000: 2.63},
         "DRMM 9-layer + KL and NN penalty": {4000: 6.48, 50000: 2.22}}


def read_run(folder: str) -> tuple[dict, dict]:
    run = Path(folder)
    if not (run / "metrics.json").is_file():
        raise DRMMError(f"{run} has no metrics.json; is the run finished? (drmm train --out {run})")
    return read_metrics(run), json.loads((run / "config.json").read_text())


def describe(cfg: dict) -> str:
    """The run's training settings (as `reproduce` reports them) and its loss weights."""
    lo, size = cfg["loss"], cfg["model"].get("image_size")
    return (f"{describe_settings(cfg)}, {size}x{size}, seed {cfg['train'].get('seed')};"
            f" weights H/RC/KL/NN {lo['alpha_h']}/{lo['alpha_rc']}/{lo['alpha_kl']}/"
            f"{lo['alpha_nn']}")


def table(drmm_run: str, dcn_run: str) -> str:
    (m_drmm, c_drmm), (m_dcn, c_dcn) = read_run(drmm_run), read_run(dcn_run)
    if not c_dcn["train"]["supervised_only"] or c_drmm["train"]["supervised_only"]:
        raise DRMMError("--dcn must be a --supervised-only run and --drmm a semi-supervised one")
    n_l = m_drmm["labels"]
    if m_dcn["labels"] != n_l:
        raise DRMMError(f"the runs used different N_L ({n_l} and {m_dcn['labels']})")
    lines = [
        f"# Table 5 analogue: our rendered data set, N_L = {n_l}",
        "",
        "Test error (%) on the 10,000 test images of `drmm render` (section 5.4's set is not"
        " public; ours is drawn by drmm/synthetic). Final epoch; the best epoch is read off the"
        " test set and shown only for reference.",
        "",
        "| Model | ours, final | ours, best epoch | wall time | paper (its Blender set,"
        f" N_L = {n_l}) |",
        "|---|---|---|---|---|",
    ]
    for name, m, paper in (("DCN (supervised only, same network)", m_dcn,
                            PAPER["Conv Large 9-layer (DCN)"]),
                           ("DRMM + KL and NN penalty", m_drmm,
                            PAPER["DRMM 9-layer + KL and NN penalty"])):
        lines.append(f"| {name} | {m['test_error_percent']:.2f}"
                     f" | {m['best_test_error_percent']:.2f}"
                     f" | {m['wall_seconds'] / 60:.0f} min | {paper.get(n_l, '-')} |")
    lines += ["", "Settings:", f"- DRMM: {describe(c_drmm)}", f"- DCN: {describe(c_dcn)}",
              f"- data: {c_drmm['train']['dataset']}", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drmm", required=True, help="run folder of the DRMM + KL + NN run")
    p.add_argument("--dcn", required=True, help="run folder of the --supervised-only run")
    p.add_argument("--out", required=True, help="Markdown file to write")
    p.add_argument("--notes", help="a text file appended verbatim (hardware, budget, remarks)")
    args = p.parse_args(argv)
    try:
        text = table(args.drmm, args.dcn)
        if args.notes:
            text += "\n" + Path(args.notes).read_text()
        atomic_write(args.out, lambda f: f.write(text.encode()))
    except DRMMError as e:
        print(f"table5: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
