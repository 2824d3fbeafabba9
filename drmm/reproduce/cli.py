"""`drmm reproduce TABLE`: regenerate one of the paper's result tables with one command.

    drmm reproduce table1 --schedule fast --labels 100 --seeds 0,1,2 --out runs/table1
    drmm reproduce table1 --schedule paper --out runs/t1 --dry-run   # each run's settings

The tables and schedules are in drmm/reproduce/tables.py, the planning and running in
plan.py, the report in report.py.
"""

from __future__ import annotations

import sys

from drmm.data.preprocess import PREPROCESS
from drmm.errors import DRMMError
from drmm.files import require_dir
from drmm.reproduce.plan import reproduce
from drmm.reproduce.tables import SCHEDULES, TABLES


def int_list(text: str, what: str, minimum: int) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DRMMError(f"--{what} {text!r}: expected comma-separated integers, e.g. 0,1,2"
                        ) from None
    if not values or min(values) < minimum:
        raise DRMMError(f"--{what} {text!r}: expected integers of at least {minimum}")
    return list(dict.fromkeys(values))  # in order, without repeats


def row_list(text: str, table_name: str) -> list[str]:
    names = {r.lower(): r for r in TABLES[table_name].rows}
    rows = []
    for part in (x.strip() for x in text.split(",")):
        if part.lower() not in names:
            raise DRMMError(f"--rows: {table_name} has no row {part!r}; its rows are"
                            f" {','.join(TABLES[table_name].rows)}")
        rows.append(names[part.lower()])
    return list(dict.fromkeys(rows))


def command_line(args) -> str:
    """The command as typed, rebuilt from the parsed arguments (for the table's header)."""
    parts = ["drmm reproduce", args.table, "--schedule", args.schedule, "--seeds", args.seeds]
    for name in ("labels", "rows", "dataset", "epochs", "batch_size", "unlabeled", "arch",
                 "preprocess", "device"):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(parts + ["--out", str(args.out)])


def cmd_reproduce(args) -> int:
    overrides = {"dataset": args.dataset, "arch": args.arch, "epochs": args.epochs,
                 "batch_size": args.batch_size, "preprocess": args.preprocess,
                 "unlabeled": args.unlabeled}
    if args.data_dir is not None:
        require_dir(args.data_dir, "--data-dir", "pass an existing folder")
    if args.unlabeled is not None and args.unlabeled < 0:
        raise DRMMError("--unlabeled must be 0 (the whole training set) or a positive count")
    try:
        result = reproduce(
            args.table, args.out, schedule=args.schedule,
            seeds=int_list(args.seeds, "seeds", 0),
            labels=None if args.labels is None else int_list(args.labels, "labels", 1),
            rows=None if args.rows is None else row_list(args.rows, args.table),
            overrides=overrides, device=args.device, data_dir=args.data_dir,
            tensorboard=not args.no_tensorboard, progress=not args.quiet, dry_run=args.dry_run,
            command=command_line(args))
    except KeyboardInterrupt:
        print(f"drmm: interrupted; run the same command again to continue the table in {args.out}"
              " (finished runs are reused, the interrupted one resumes)", file=sys.stderr)
        return 130
    if not args.dry_run:
        done = sum(s == "done" for s in result["runs"].values())
        print(f"{done}/{len(result['runs'])} runs finished; table in {result['table_md']}"
              f" and {result['table_csv']}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="regenerate one of the paper's Tables 1, 3, 4 (Table 2 comes with 1)",
        description="Regenerate one of the paper's result tables: every (row, N_L, seed) is a"
                    " training run in OUT/runs/, reused when finished; OUT/table.md and"
                    " OUT/table.csv hold the table.")
    p.add_argument("table", choices=sorted(TABLES), help="table1 (MNIST, with Table 2), table3"
                   " (SVHN), table4 (CIFAR-10)")
    p.add_argument("--out", required=True, help="folder for runs/, table.md and table.csv")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="fast",
                   help="paper: Appendix A (500 epochs, SGD 0.2 -> 1e-4 exponential); fast"
                   " (default): for limited hardware (drmm/reproduce/tables.py); cpu-hour"
                   " (table1): the mnist preset's recipe; --dry-run prints every setting")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--labels", help="comma-separated N_L (default: the paper's columns)")
    p.add_argument("--rows", help="comma-separated rows, e.g. DRMM,+KL+NN (default: all)")
    p.add_argument("--dataset", help="replace the table's data set, e.g. npz:PATH (the table's"
                   " architecture, weights and preprocessing are kept)")
    p.add_argument("--data-dir", help="folder with local copies of the data / download target")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N")
    p.add_argument("--epochs", type=int, help="override the schedule's epochs")
    p.add_argument("--batch-size", type=int, help="override the batch size (default 100)")
    p.add_argument("--unlabeled", type=int,
                   help="N_U: train on a random subset of this many training images (0: all)")
    p.add_argument("--arch", help="override the architecture (e.g. conv_tiny for a smoke test)")
    p.add_argument("--preprocess", choices=PREPROCESS,
                   help="override the input preprocessing")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs, their state and complete training settings; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)


