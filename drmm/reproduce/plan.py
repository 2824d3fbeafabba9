"""Planning and running a table's runs: `reproduce`.

Every (row, N_L, seed) is one `drmm.train.train` run in OUT/runs/<row>-nl<N>-seed<S>/, its
config built as: the table's preset (with the paper's step for a schedule of PAPER_STEP) < the
schedule (complete) < the row's loss weights < the command line's overrides. A run with a
metrics.json is finished and reused (only if it was trained with the same settings); one with
only a checkpoint is resumed; so an interrupted table continues where it stopped when the same
command is run again. OUT/table.md and OUT/table.csv are rewritten after every finished run,
from every finished run in OUT.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from drmm.checkpoint import CHECKPOINT
from drmm.config import FREE_ON_RESUME, SCHEDULE_KEYS, Config, apply_overrides, preset, validate
from drmm.errors import DRMMError
from drmm.reproduce.report import RUN_INFO, describe_settings, read_json, write_tables, write_text
from drmm.reproduce.tables import PAPER_STEP, SCHEDULES, TABLES, run_name
from drmm.step import paper_step
from drmm.train import train

# Command-line overrides that change what a run computes; the others (device, data dir,
# progress, TensorBoard) do not, and may differ between the commands that fill one OUT.
OVERRIDES = ("dataset", "arch", "epochs", "batch_size", "preprocess", "unlabeled")
SETTINGS = "reproduce.json"  # per OUT: table, schedule, overrides
COMMANDS = "commands.txt"  # per OUT: the commands that filled it, one a line
# Settings that may differ from a finished run's and still reuse it: those that do not change
# its result, and the model's input size and classes, which are read off the data.
FREE_ON_REUSE = (FREE_ON_RESUME - {"train.epochs"}) | {"model.in_channels", "model.image_size",
                                                       "model.num_classes"}


@dataclass
class Run:
    row: str  # table row name
    labels: int  # N_L
    seed: int
    cfg: Config  # the run's full configuration
    folder: Path


def plan(table_name: str, schedule: str, rows: list[str], labels: list[int], seeds: list[int],
         out: Path, overrides: dict, free: dict) -> list[Run]:
    """Every run of the selection, its config built as preset < schedule < row < overrides."""
    table = TABLES[table_name]
    sched = SCHEDULES[schedule][table_name]
    assert set(SCHEDULE_KEYS) <= set(sched), f"schedule {schedule} is incomplete"
    runs = []
    for row in rows:
        for n in labels:
            for seed in seeds:
                cfg = preset(table.preset)
                if schedule in PAPER_STEP:  # no term the preset adds to the paper's objective
                    cfg = paper_step(cfg)
                train_cfg = {**sched, "labels": n, "seed": seed}
                train_cfg.update({k: v for k, v in overrides.items() if k not in ("arch",)})
                if overrides.get("unlabeled") == 0:
                    train_cfg["unlabeled"] = None  # 0 = the whole training set
                train_cfg.update({k: v for k, v in free.items() if v is not None})
                model = {"arch": overrides.get("arch") or table.arch}
                loss = {**table.weights, **table.rows[row]}
                apply_overrides(cfg, {"train": train_cfg, "loss": loss, "model": model},
                                source=f"{table_name} row {row}")
                validate(cfg)
                runs.append(Run(row, n, seed, cfg, out / "runs" / run_name(row, n, seed)))
    return runs


def run_status(run: Run) -> str:
    """'done' (metrics.json), 'partial' (a checkpoint to resume) or 'todo'."""
    if (run.folder / "metrics.json").is_file():
        return "done"
    return "partial" if (run.folder / CHECKPOINT).is_file() else "todo"


def check_reusable(run: Run) -> None:
    """A finished run is reused only if it was trained with this run's settings."""
    path = run.folder / "config.json"
    try:
        saved = Config.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, DRMMError) as e:
        raise DRMMError(f"{path} cannot be read ({e}); delete {run.folder} to train it again"
                        ) from e
    changed = saved.diff(run.cfg, ignore=FREE_ON_REUSE)
    if changed:
        raise DRMMError(f"{run.folder} was trained with other settings ({'; '.join(changed)});"
                        " use a new --out, or delete that run folder to train it again")


def check_settings(out: Path, settings: dict, write: bool) -> None:
    """One OUT holds one table, schedule and set of overrides; refuse to mix them."""
    path = out / SETTINGS
    saved = read_json(path)
    if path.exists() and saved is None:
        raise DRMMError(f"{path} cannot be read; delete it (the runs are kept) and run again")
    if saved is not None and saved != settings:
        diff = [f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in sorted(settings)
                if saved.get(k) != settings.get(k)]
        raise DRMMError(f"{out} holds runs made with other settings ({'; '.join(diff)});"
                        " use another --out for these settings")
    if saved is None and write:
        write_text(path, json.dumps(settings, indent=2) + "\n")


def reproduce(table_name: str, out: str | Path, schedule: str = "fast",
              seeds: list[int] | None = None, labels: list[int] | None = None,
              rows: list[str] | None = None, overrides: dict | None = None,
              device: str | None = None, data_dir: str | None = None,
              tensorboard: bool = True, progress: bool = True, dry_run: bool = False,
              command: str = "") -> dict:
    """Run (or reuse) every selected run of the table, then write OUT/table.md and table.csv.

    Returns {"runs": [per-run status], "table_md": path, "table_csv": path}. With dry_run,
    prints each run's state and complete training settings, and runs nothing.
    """
    if table_name not in TABLES:
        raise DRMMError(f"unknown table {table_name!r}; choose one of {sorted(TABLES)}")
    if schedule not in SCHEDULES:
        raise DRMMError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
    if table_name not in SCHEDULES[schedule]:
        have = sorted(k for k, v in SCHEDULES.items() if table_name in v)
        raise DRMMError(f"schedule {schedule!r} has no {table_name} (it covers "
                        f"{sorted(SCHEDULES[schedule])}); choose one of {have}")
    table = TABLES[table_name]
    out = Path(out)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise DRMMError(f"unknown overrides {unknown}; known: {list(OVERRIDES)}")
    seeds = [0, 1, 2] if seeds is None else seeds
    labels = list(table.labels) if labels is None else labels
    rows = list(table.rows) if rows is None else rows
    bad = [r for r in rows if r not in table.rows]
    if bad:
        raise DRMMError(f"{table_name} has no rows {bad}; its rows are {list(table.rows)}")
    if not (seeds and labels and rows):
        raise DRMMError("nothing to run: --seeds, --labels and --rows must each name one or more")
    free = {"device": device, "data_dir": data_dir, "tensorboard": tensorboard}
    runs = plan(table_name, schedule, rows, labels, seeds, out, overrides, free)
    settings = {"table": table_name, "schedule": schedule, "overrides": overrides}
    check_settings(out, settings, write=not dry_run)
    statuses = {r.folder.name: run_status(r) for r in runs}
    for run in runs:
        if statuses[run.folder.name] == "done":
            check_reusable(run)
    if dry_run:
        for run in runs:
            print(f"{statuses[run.folder.name]:>7}  {run.folder}: "
                  + describe_settings(run.cfg.to_dict()))
        return {"runs": statuses}
    context = {"commands": record_command(out, command), "schedule": schedule,
               "settings": settings}
    write_tables(out, table_name, context, runs)  # pending runs show up at once
    for i, run in enumerate(runs, 1):
        status = statuses[run.folder.name]
        tag = f"[{i}/{len(runs)}] {run.row} N_L={run.labels} seed {run.seed}"
        if status == "done":
            print(f"{tag}: finished earlier, reused ({run.folder})")
            continue
        print(f"{tag}: {'resuming' if status == 'partial' else 'training'} in {run.folder}"
              f" ({describe_settings(run.cfg.to_dict())})", flush=True)
        record_run_info(run, table_name, schedule)
        metrics = train(run.cfg, run.folder, resume=status == "partial", progress=progress)
        record_run_info(run, table_name, schedule, n_unlabeled=metrics["train_images"])
        statuses[run.folder.name] = "done"
        print(f"{tag}: test error {metrics['test_error_percent']:.2f} % (best during training"
              f" {metrics['best_test_error_percent']:.2f} %), {metrics['wall_seconds']:.0f} s",
              flush=True)
        write_tables(out, table_name, context, runs)
    paths = write_tables(out, table_name, context, runs)
    return {"runs": statuses, **paths}


def record_command(out: Path, command: str) -> list[str]:
    """Add the command to OUT/commands.txt (once) and return every command recorded there."""
    path = out / COMMANDS
    try:
        commands = [c for c in path.read_text().splitlines() if c.strip()]
    except OSError:
        commands = []
    if command and command not in commands:
        commands.append(command)
        write_text(path, "\n".join(commands) + "\n")
    return commands


def record_run_info(run: Run, table_name: str, schedule: str,
                    n_unlabeled: int | None = None) -> None:
    """OUT/runs/NAME/run_info.json: what the table needs that the run's own files lack."""
    path = run.folder / RUN_INFO
    info = read_json(path) or {}
    hw = hardware(run.cfg.train.device)
    seen = info.get("hardware", [])  # a run resumed elsewhere lists every machine it ran on
    if hw not in seen:
        seen.append(hw)
    info.update(table=table_name, row=run.row, labels=run.labels, seed=run.seed,
                schedule=schedule, unlabeled=n_unlabeled or info.get("unlabeled"),
                device=run.cfg.train.device, hardware=seen,
                started=info.get("started", time.strftime("%Y-%m-%d %H:%M:%S")))
    write_text(path, json.dumps(info, indent=2) + "\n")


def hardware(device: str) -> str:
    """One line naming the processor or GPU that runs the training, and the torch build."""
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{name} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:  # Linux names the model here; platform often does not
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"

