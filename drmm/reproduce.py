"""`drmm reproduce TABLE`: regenerate one of the paper's result tables with one command.

- table1: MNIST (section 5.1, Table 1): ConvSmall, N_L in {50, 100, 1000}; rows DRMM (no KL, no
  NN penalty), +NN, +KL, +KL+NN. Table 2 (the reduction in test error that each penalty brings)
  is derived from Table 1 and written beside it.
- table3: SVHN (section 5.2, Table 3): ConvLarge, N_L in {500, 1000, 2000}; rows +KL, +KL+NN.
- table4: CIFAR-10 (section 5.3, Table 4): ConvLarge, N_L in {4000, 8000}; rows +KL, +KL+NN.

Every (row, N_L, seed) is one `drmm.train.train` run in OUT/runs/<row>-nl<N>-seed<S>/. A run with
a metrics.json is finished and reused; one with only a checkpoint is resumed; so an interrupted
table continues where it stopped when the same command is run again. OUT/table.md and
OUT/table.csv are rewritten (atomically) after every finished run, from every finished run in
OUT: two commands with different --rows / --labels / --seeds add up to one table.

Schedules (SCHEDULES below): "paper" is Appendix A's (500 epochs, SGD 0.2 -> 1e-4, batch 100);
"fast" fits limited hardware and is documented beside its numbers.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from drmm.config import Config, apply_overrides, preset, validate
from drmm.data.preprocess import PREPROCESS
from drmm.errors import DRMMError

# ----------------------------------------------------------------------------------------------
# The tables: rows (loss-weight overrides of the data set's preset) and the paper's numbers.


@dataclass(frozen=True)
class Table:
    title: str  # what the table shows
    preset: str  # drmm.config preset: data set, architecture, Table 6 weights, preprocessing
    labels: tuple[int, ...]  # the paper's columns, N_L
    rows: dict[str, dict]  # row name -> loss overrides (alpha_kl / alpha_nn = 0 switch a term off)
    paper: dict[str, dict[int, float]]  # row -> N_L -> the paper's test error (%)
    model: str  # the paper's name for the network
    derived: dict[str, dict[int, float]] = field(default_factory=dict)  # Table 2's reductions


TABLES: dict[str, Table] = {
    "table1": Table(
        title="Table 1: semi-supervised test error on MNIST (N_U = 60,000)",
        preset="mnist",
        labels=(50, 100, 1000),
        rows={"DRMM": dict(alpha_kl=0.0, alpha_nn=0.0), "+NN": dict(alpha_kl=0.0),
              "+KL": dict(alpha_nn=0.0), "+KL+NN": {}},
        paper={"DRMM": {50: 21.73, 100: 13.41, 1000: 2.35},
               "+NN": {50: 22.10, 100: 12.28, 1000: 2.26},
               "+KL": {50: 2.46, 100: 1.36, 1000: 0.71},
               "+KL+NN": {50: 0.91, 100: 0.57, 1000: 0.6}},
        model="DRMM 5-layer (ConvSmall)",
        # Table 2: test error of DRMM minus that of the row, as printed in the paper.
        derived={"+NN": {50: -0.37, 100: 1.13, 1000: 0.09},
                 "+KL": {50: 19.27, 100: 12.05, 1000: 1.64},
                 "+KL+NN": {50: 20.82, 100: 12.84, 1000: 1.75}},
    ),
    "table3": Table(
        title="Table 3: semi-supervised test error on SVHN (N_U = 73,257)",
        preset="svhn",
        labels=(500, 1000, 2000),
        rows={"+KL": dict(alpha_nn=0.0), "+KL+NN": {}},
        paper={"+KL": {500: 11.11, 1000: 9.75, 2000: 8.44},
               "+KL+NN": {500: 9.85, 1000: 6.78, 2000: 6.50}},
        model="DRMM 9-layer (ConvLarge)",
    ),
    "table4": Table(
        title="Table 4: semi-supervised test error on CIFAR-10 (N_U = 50,000)",
        preset="cifar10",
        labels=(4000, 8000),
        rows={"+KL": dict(alpha_nn=0.0), "+KL+NN": {}},
        paper={"+KL": {4000: 23.24, 8000: 20.95}, "+KL+NN": {4000: 21.50, 8000: 17.16}},
        model="DRMM 9-layer (ConvLarge)",
    ),
}
ROW_NOTES = {"DRMM": "no KL, no NN penalty", "+NN": "NN penalty only", "+KL": "KL penalty only",
             "+KL+NN": "KL and NN penalties"}

# ----------------------------------------------------------------------------------------------
# Schedules: train-config overrides, plus `unlabeled`: how many training images form the
# unlabeled set (None: all of them, as in the paper; otherwise a random subset drawn with the
# run's seed, from which the labeled images are drawn too).

PAPER = dict(epochs=500, optimizer="sgd", lr=0.2, lr_final=1e-4, batch_size=100, momentum=0.0,
             unlabeled=None)  # Appendix A and Table 6, for every table
SCHEDULES: dict[str, dict[str, dict]] = {
    "paper": {"table1": PAPER, "table3": PAPER, "table4": PAPER},
    "fast": {
        # ConvSmall at ~860 images/s on 2 CPU cores: 3 epochs = 3,600 steps, ~7 minutes a run.
        # The paper's optimiser and rate range, compressed into 3 epochs.
        "table1": dict(epochs=3, optimizer="sgd", lr=0.2, lr_final=1e-4, batch_size=100,
                       momentum=0.0, unlabeled=None),
        # ConvLarge at ~43 images/s on 2 CPU cores: one epoch over 25,000 unlabeled images is
        # 500 steps, ~21 minutes a run (results/table4-fast.md). The rate ends at 1e-3, not
        # 1e-4: over so few steps a decay to 1e-4 would spend half the run below 5e-3.
        "table3": dict(epochs=1, optimizer="sgd", lr=0.2, lr_final=1e-3, batch_size=100,
                       momentum=0.0, unlabeled=25000),
        "table4": dict(epochs=1, optimizer="sgd", lr=0.2, lr_final=1e-3, batch_size=100,
                       momentum=0.0, unlabeled=25000),
    },
}
# Command-line overrides that change what a run computes; the others (device, data dir,
# progress, TensorBoard) do not, and may differ between the commands that fill one OUT.
OVERRIDES = ("dataset", "arch", "epochs", "batch_size", "preprocess", "unlabeled")
RUN_INFO = "run_info.json"  # per run: table, row, N_L, seed, schedule, N_U, hardware
SETTINGS = "reproduce.json"  # per OUT: table, schedule, overrides
COMMANDS = "commands.txt"  # per OUT: the commands that filled it, one a line


def row_slug(row: str) -> str:
    """'+KL+NN' -> 'kl-nn', 'DRMM' -> 'drmm': the row's part of its run folder's name."""
    return row.lstrip("+").lower().replace("+", "-")


def run_name(row: str, n_labeled: int, seed: int) -> str:
    return f"{row_slug(row)}-nl{n_labeled}-seed{seed}"


# ----------------------------------------------------------------------------------------------
# Building and running the runs


@dataclass
class Run:
    row: str  # table row name
    labels: int  # N_L
    seed: int
    cfg: Config  # the run's full configuration
    unlabeled: int | None  # N_U subset size, None = the whole training set
    folder: Path


def plan(table_name: str, schedule: str, rows: list[str], labels: list[int], seeds: list[int],
         out: Path, overrides: dict, free: dict) -> list[Run]:
    """Every run of the selection, its config built as preset < schedule < row < overrides."""
    table = TABLES[table_name]
    runs = []
    for row in rows:
        for n in labels:
            for seed in seeds:
                cfg = preset(table.preset)
                sched = dict(SCHEDULES[schedule][table_name])
                unlabeled = sched.pop("unlabeled")
                train = {**sched, "labels": n, "seed": seed}
                for key in ("epochs", "batch_size", "preprocess"):
                    if overrides.get(key) is not None:
                        train[key] = overrides[key]
                if overrides.get("dataset"):
                    train["dataset"] = overrides["dataset"]
                train.update({k: v for k, v in free.items() if v is not None})
                model = {"arch": overrides["arch"]} if overrides.get("arch") else {}
                apply_overrides(cfg, {"train": train, "loss": table.rows[row], "model": model},
                                source=f"{table_name} row {row}")
                if overrides.get("unlabeled") is not None:
                    unlabeled = overrides["unlabeled"] or None  # 0 = the whole training set
                validate(cfg)
                folder = out / "runs" / run_name(row, n, seed)
                runs.append(Run(row, n, seed, cfg, unlabeled, folder))
    return runs


def unlabeled_subset(data, n: int | None, seed: int):
    """The data set with its training images cut to a random n of them (seeded), or as is."""
    import dataclasses

    import numpy as np
    import torch

    if n is None or n >= len(data.y_train):
        return data
    # Its own stream (seed, 1): the labeled split uses default_rng(seed) on the subset after this.
    rng = np.random.default_rng([seed, 1])
    keep = torch.from_numpy(np.sort(rng.choice(len(data.y_train), size=n, replace=False)))
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def run_status(run: Run) -> str:
    """'done' (metrics.json), 'partial' (a checkpoint to resume) or 'todo'."""
    from drmm.train import CHECKPOINT

    if (run.folder / "metrics.json").is_file():
        return "done"
    return "partial" if (run.folder / CHECKPOINT).is_file() else "todo"


def check_reusable(run: Run) -> None:
    """A finished run is reused only if it was trained with this run's settings."""
    from drmm.train import FREE_ON_RESUME, flat

    path = run.folder / "config.json"
    try:
        saved = flat(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise DRMMError(f"{path} cannot be read ({e}); delete {run.folder} to train it again"
                        ) from e
    # Free: what does not change the result; the model's input size is read off the data.
    free = (FREE_ON_RESUME - {"train.epochs"}) | {"model.in_channels", "model.image_size",
                                                  "model.num_classes"}
    want = flat(run.cfg.to_dict())
    changed = [k for k in sorted(want) if k in saved and k not in free and saved[k] != want[k]]
    info = read_json(run.folder / RUN_INFO) or {}
    if info.get("unlabeled_requested", run.unlabeled) != run.unlabeled:
        changed.append("unlabeled")
    if changed:
        raise DRMMError(f"{run.folder} was trained with other settings ({', '.join(changed)});"
                        " use a new --out, or delete that run folder to train it again")


def hardware(device: str) -> str:
    """One line naming the processor or GPU that runs the training, and the torch build."""
    import torch

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


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_text(path: Path, text: str) -> None:
    from drmm.files import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


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

    Returns {"runs": [per-run status], "table_md": path, "table_csv": path}.
    """
    if table_name not in TABLES:
        raise DRMMError(f"unknown table {table_name!r}; choose one of {sorted(TABLES)}")
    if schedule not in SCHEDULES:
        raise DRMMError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
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
            print(f"{statuses[run.folder.name]:>7}  {run.folder}")
        return {"runs": statuses}
    context = {"commands": record_command(out, command), "schedule": schedule,
               "settings": settings}
    write_tables(out, table_name, context, runs)  # pending runs show up at once
    data = None  # loaded once, on the first run that trains
    for i, run in enumerate(runs, 1):
        status = statuses[run.folder.name]
        tag = f"[{i}/{len(runs)}] {run.row} N_L={run.labels} seed {run.seed}"
        if status == "done":
            print(f"{tag}: finished earlier, reused ({run.folder})")
            continue
        if data is None:
            from drmm.data import load_dataset

            t = run.cfg.train
            print(f"loading {t.dataset} (preprocess: {t.preprocess}) ...")
            data = load_dataset(t.dataset, t.data_dir, preprocess=t.preprocess)
        run_data = unlabeled_subset(data, run.unlabeled, run.seed)
        print(f"{tag}: {'resuming' if status == 'partial' else 'training'} in {run.folder}"
              f" ({run.cfg.train.epochs} epochs, N_U = {len(run_data.y_train)})", flush=True)
        record_run_info(run, table_name, schedule, len(run_data.y_train))
        from drmm.train import train

        metrics = train(run.cfg, run.folder, resume=status == "partial", data=run_data,
                        progress=progress)
        statuses[run.folder.name] = "done"
        print(f"{tag}: test error {100 * metrics['test_error']:.2f} % (best during training"
              f" {100 * metrics['best_test_error']:.2f} %), {fmt_time(metrics['wall_seconds'])}",
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


def record_run_info(run: Run, table_name: str, schedule: str, n_unlabeled: int) -> None:
    """OUT/runs/NAME/run_info.json: what the table needs that the run's own files lack."""
    path = run.folder / RUN_INFO
    info = read_json(path) or {}
    hw = hardware(run.cfg.train.device)
    seen = info.get("hardware", [])  # a run resumed elsewhere lists every machine it ran on
    if hw not in seen:
        seen.append(hw)
    info.update(table=table_name, row=run.row, labels=run.labels, seed=run.seed,
                schedule=schedule, unlabeled=n_unlabeled, unlabeled_requested=run.unlabeled,
                device=run.cfg.train.device, hardware=seen,
                started=info.get("started", time.strftime("%Y-%m-%d %H:%M:%S")))
    write_text(path, json.dumps(info, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# The table: every finished run in OUT/runs, grouped by (row, N_L), with the paper beside it.


def collect(out: Path, table_name: str) -> list[dict]:
    """One record per finished run of this table in OUT/runs."""
    records = []
    for folder in sorted((out / "runs").glob("*")):
        info, metrics = read_json(folder / RUN_INFO), read_json(folder / "metrics.json")
        if not info or not metrics or info.get("table") != table_name:
            continue
        epochs = {}
        for line in _lines(folder / "metrics.jsonl"):
            epochs[line["epoch"]] = line  # a resumed run may repeat an epoch: the last one wins
        speeds = [r["images_per_s"] for r in epochs.values() if "images_per_s" in r]
        config = read_json(folder / "config.json") or {}
        records.append({**info, "test_error": metrics["test_error"],
                        "best_test_error": metrics["best_test_error"],
                        "wall_seconds": metrics["wall_seconds"], "epochs": metrics["epochs"],
                        "images_per_s": statistics.fmean(speeds) if speeds else None,
                        "config": config})
    return records


def _lines(path: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def summarise(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with one value), in percent."""
    pct = [100 * v for v in values]
    return statistics.fmean(pct), (statistics.stdev(pct) if len(pct) > 1 else None)


def fmt_err(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def describe_schedule(config: dict, n_unlabeled: list[int]) -> str:
    t = config.get("train", {})
    n_u = ", ".join(str(n) for n in sorted(set(n_unlabeled)))
    return (f"{t.get('epochs')} epochs, {t.get('optimizer', '?').upper()} (momentum"
            f" {t.get('momentum')}) lr {t.get('lr')} -> {t.get('lr_final')} decayed exponentially"
            f" per step, batch {t.get('batch_size')} (half labeled, half unlabeled), N_U = {n_u},"
            f" preprocess {t.get('preprocess', 'none')}, {config.get('model', {}).get('arch')}"
            f" on {t.get('dataset')}")


def table_rows(table_name: str, records: list[dict], runs: list[Run]) -> list[dict]:
    """One row per (table row, N_L) with finished or requested runs, in the paper's order."""
    table = TABLES[table_name]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["row"], r["labels"]), []).append(r)
    wanted: dict[tuple[str, int], list[int]] = {}
    for run in runs:
        wanted.setdefault((run.row, run.labels), []).append(run.seed)
    keys = set(groups) | set(wanted)
    order = list(table.rows)
    out = []
    for row, n in sorted(keys, key=lambda k: (order.index(k[0]), k[1])):
        done = sorted(groups.get((row, n), []), key=lambda r: r["seed"])
        pending = sorted(set(wanted.get((row, n), [])) - {r["seed"] for r in done})
        entry = {"row": row, "labels": n, "seeds": [r["seed"] for r in done], "pending": pending,
                 "paper": table.paper.get(row, {}).get(n), "records": done}
        if done:
            entry["end"] = summarise([r["test_error"] for r in done])
            entry["best"] = summarise([r["best_test_error"] for r in done])
            entry["wall"] = [r["wall_seconds"] for r in done]
            speeds = [r["images_per_s"] for r in done if r["images_per_s"]]
            entry["images_per_s"] = statistics.fmean(speeds) if speeds else None
            entry["hardware"] = sorted({h for r in done for h in r.get("hardware", [])})
            entry["unlabeled"] = sorted({r.get("unlabeled") for r in done})
            entry["epochs"] = sorted({r["epochs"] for r in done})
        out.append(entry)
    return out


def write_tables(out: Path, table_name: str, context: dict, runs: list[Run]) -> dict:
    rows = table_rows(table_name, collect(out, table_name), runs)
    md, csv_text = render_markdown(table_name, rows, context), render_csv(table_name, rows, context)
    write_text(out / "table.md", md)
    write_text(out / "table.csv", csv_text)
    return {"table_md": out / "table.md", "table_csv": out / "table.csv"}


def render_markdown(table_name: str, rows: list[dict], context: dict) -> str:
    table = TABLES[table_name]
    hw_names = sorted({h for e in rows for h in e.get("hardware", [])})
    hw_key = {h: f"H{i + 1}" for i, h in enumerate(hw_names)}
    records = [r for e in rows for r in e["records"]]
    schedules = sorted({describe_schedule(r["config"], [r["unlabeled"]]) for r in records})
    lines = [
        f"# {table.title}: reproduced",
        "",
        f"{table.model}, rows as in the paper: " + "; ".join(
            f"{r} = {ROW_NOTES[r]}" for r in table.rows) + ".",
        "",
        f"Schedule **{context['schedule']}**"
        + (" (overridden: " + ", ".join(f"{k} {v}" for k, v in
                                          context["settings"]["overrides"].items()) + ")"
           if context["settings"]["overrides"] else "") + ": "
        + ("; ".join(schedules) if schedules else "no finished run yet") + ".",
        "The paper: 500 epochs, SGD lr 0.2 -> 0.0001, batch 100, N_U = the whole training set"
        " (Appendix A).",
        "",
        "| model | N_L | seeds | test error at the end (%) | best test error during training"
        " (%) † | paper (%) | schedule | images/s | wall time per run | hardware |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for e in rows:
        paper = "—" if e["paper"] is None else f"{e['paper']:.2f}"
        seeds = ",".join(map(str, e["seeds"])) or "—"
        if e["pending"]:
            seeds += f" (pending: {','.join(map(str, e['pending']))})"
        if not e["seeds"]:
            lines.append(f"| {e['row']} | {e['labels']} | {seeds} | — | — | {paper} | — | — | — |"
                         " — |")
            continue
        speed = "—" if not e["images_per_s"] else f"{e['images_per_s']:.0f}"
        wall = fmt_time(statistics.fmean(e["wall"]))
        hw = ", ".join(hw_key[h] for h in e["hardware"]) or "—"
        sched = f"{context['schedule']}, {'/'.join(map(str, e['epochs']))} ep"
        lines.append(f"| {e['row']} | {e['labels']} | {seeds} | {fmt_err(*e['end'])} |"
                     f" {fmt_err(*e['best'])} | {paper} | {sched} | {speed} | {wall} | {hw} |")
    lines += [
        "",
        "Test errors are the mean ± the sample standard deviation over the seeds (no ± with one"
        " seed). The seed draws the labeled images, the initialisation and the data order.",
        "",
        "† Read off the test set: the lowest of the test errors measured after each epoch."
        " Picking the epoch by its test error is model selection on the test data, so this"
        " number is optimistic; the end-of-training column is the honest estimate.",
        "",
    ]
    lines += [f"- {hw_key[h]}: {h}" for h in hw_names]
    total = sum(r["wall_seconds"] for r in records)
    lines += ["", f"Total training time of the {len(records)} finished run(s): {fmt_time(total)}."]
    if context.get("commands"):
        lines += ["", "Commands that made this table:", "",
                  *(f"    {c}" for c in context["commands"])]
    lines += ["", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}."]
    if table.derived:
        lines += ["", *render_derived(table_name, rows)]
    return "\n".join(lines) + "\n"


def render_derived(table_name: str, rows: list[dict]) -> list[str]:
    """Table 2: the reduction in end-of-training test error against the plain DRMM row."""
    table = TABLES[table_name]
    base = {e["labels"]: e["end"][0] for e in rows if e["row"] == "DRMM" and e["seeds"]}
    lines = ["## Table 2 (derived from Table 1): reduction in test error from the penalties",
             "",
             "Mean end-of-training test error of DRMM minus that of the row, same N_L"
             " (percentage points).",
             "",
             "| model | N_L | reduction (%) | paper (%) |",
             "| --- | ---: | ---: | ---: |"]
    for e in rows:
        if e["row"] not in table.derived:
            continue
        paper = table.derived[e["row"]].get(e["labels"])
        paper_s = "—" if paper is None else f"{paper:.2f}"
        ours = (f"{base[e['labels']] - e['end'][0]:.2f}"
                if e["seeds"] and e["labels"] in base else "— (needs DRMM and this row)")
        lines.append(f"| {e['row']} | {e['labels']} | {ours} | {paper_s} |")
    return lines


CSV_FIELDS = ["table", "row", "labels", "unlabeled", "seeds", "n_seeds", "pending_seeds",
              "err_end_mean", "err_end_std", "err_best_mean", "err_best_std", "paper_err",
              "schedule", "epochs", "optimizer", "lr", "lr_final", "batch_size", "preprocess",
              "dataset", "arch", "images_per_s", "wall_seconds_mean", "wall_seconds_total",
              "hardware"]


def render_csv(table_name: str, rows: list[dict], context: dict) -> str:
    """Errors in percent; err_best_* are read off the test set (see table.md)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for e in rows:
        d = {"table": table_name, "row": e["row"], "labels": e["labels"],
             "seeds": " ".join(map(str, e["seeds"])), "n_seeds": len(e["seeds"]),
             "pending_seeds": " ".join(map(str, e["pending"])), "paper_err": e["paper"],
             "schedule": context["schedule"]}
        if e["seeds"]:
            t = e["records"][0]["config"].get("train", {})
            d.update(
                unlabeled=" ".join(map(str, e["unlabeled"])), err_end_mean=round(e["end"][0], 4),
                err_end_std=None if e["end"][1] is None else round(e["end"][1], 4),
                err_best_mean=round(e["best"][0], 4),
                err_best_std=None if e["best"][1] is None else round(e["best"][1], 4),
                epochs=" ".join(map(str, e["epochs"])), optimizer=t.get("optimizer"),
                lr=t.get("lr"), lr_final=t.get("lr_final"), batch_size=t.get("batch_size"),
                preprocess=t.get("preprocess", "none"), dataset=t.get("dataset"),
                arch=e["records"][0]["config"].get("model", {}).get("arch"),
                images_per_s=None if not e["images_per_s"] else round(e["images_per_s"], 1),
                wall_seconds_mean=round(statistics.fmean(e["wall"]), 1),
                wall_seconds_total=round(sum(e["wall"]), 1), hardware="; ".join(e["hardware"]))
        w.writerow(d)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Command line


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
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise DRMMError(f"--data-dir {args.data_dir} does not exist; pass an existing folder")
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
        description=__doc__.split("\n\n")[0])
    p.add_argument("table", choices=sorted(TABLES), help="table1 (MNIST, with Table 2), table3"
                   " (SVHN), table4 (CIFAR-10)")
    p.add_argument("--out", required=True, help="folder for runs/, table.md and table.csv")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="fast",
                   help="paper: 500 epochs as Appendix A; fast (default): for limited"
                   " hardware, see docs/datasets.md")
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
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)


__all__ = ["SCHEDULES", "TABLES", "reproduce", "register"]
