"""The reproduced table: every finished run in OUT/runs, grouped by (row, N_L), with the
paper's numbers beside it, as OUT/table.md (with Table 2 for table1) and OUT/table.csv."""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from pathlib import Path

from drmm.files import atomic_write
from drmm.losses import TERMS
from drmm.metrics import METRICS, migrate
from drmm.reproduce.tables import ROW_NOTES, TABLES

RUN_INFO = "run_info.json"  # per run: table, row, N_L, seed, schedule, N_U, hardware


# ----------------------------------------------------------------------------------------------
# The table: every finished run in OUT/runs, grouped by (row, N_L), with the paper beside it.


def collect(out: Path, table_name: str) -> list[dict]:
    """One record per finished run of this table in OUT/runs."""
    records = []
    for folder in sorted((out / "runs").glob("*")):
        info, metrics = read_json(folder / RUN_INFO), read_json(folder / METRICS)
        if not info or not metrics or info.get("table") != table_name:
            continue
        metrics = migrate(metrics)  # metrics.json of any drmm version
        epochs = {}
        for line in _lines(folder / "metrics.jsonl"):
            epochs[line["epoch"]] = line  # a resumed run may repeat an epoch: the last one wins
        speeds = [r["images_per_s"] for r in epochs.values() if "images_per_s" in r]
        config = read_json(folder / "config.json") or {}
        records.append({**info, "test_error_percent": metrics["test_error_percent"],
                        "best_test_error_percent": metrics["best_test_error_percent"],
                        "wall_seconds": metrics["wall_seconds"], "epochs": metrics["epochs"],
                        "images_per_s": statistics.fmean(speeds) if speeds else None,
                        "config": config})
    return records


def _lines(path: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def summarise(pct: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with one value) of percentages."""
    return statistics.fmean(pct), (statistics.stdev(pct) if len(pct) > 1 else None)


def fmt_err(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


DECAY_WORDS = {"exp": "decayed exponentially per step", "cosine": "along a half cosine"}


def labeled_share(t: dict) -> str:
    """How a batch divides into labeled and unlabeled images, from a config's train dict."""
    n_lab = t.get("labeled_batch")
    return (f"{n_lab} labeled, {t.get('batch_size') - n_lab} unlabeled" if n_lab
            else "half labeled, half unlabeled")


def describe_settings(config: dict, n_unlabeled: list[int] | None = None) -> str:
    """A run's complete training settings in one line, from its config dict (config.json):
    what a reader checks against Appendix A. Version-1 configs call the decay `schedule`."""
    t = config.get("train", {})
    decay = t.get("decay", t.get("schedule", "exp"))
    n_u = (", ".join(str(n) for n in sorted(set(n_unlabeled))) if n_unlabeled
           else t.get("unlabeled") or "all")
    return (f"{t.get('epochs')} epochs, {t.get('optimizer', '?').upper()} (momentum"
            f" {t.get('momentum')}) lr {t.get('lr')} -> {t.get('lr_final')}"
            f" {DECAY_WORDS.get(decay, decay)}, batch {t.get('batch_size')}"
            f" ({labeled_share(t)}), N_U = {n_u}, preprocess {t.get('preprocess', 'none')},"
            f" augment {t.get('augment', 'none')}, {describe_terms(config)},"
            f" {config.get('model', {}).get('arch')} on {t.get('dataset')}")


def describe_terms(config: dict) -> str:
    """The terms of drmm.losses.TERMS a run adds to the paper's objective, each with its weight
    setting, from its config dict."""
    added = []
    for name, term in TERMS.items():
        if term.paper or config.get("loss", {}).get("paper_only"):
            continue
        if isinstance(term.weight, str):  # a setting: its value, under its own name
            section, name = term.weight.split(".")
            value = config.get(section, {}).get(name, 0.0)
        else:
            value = term.weight
        if value:
            added.append(f"{name} {value}")
    return f"terms beyond the paper's: {', '.join(added)}" if added else "the paper's terms alone"


def table_rows(table_name: str, records: list[dict], runs: list) -> list[dict]:
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
            entry["end"] = summarise([r["test_error_percent"] for r in done])
            entry["best"] = summarise([r["best_test_error_percent"] for r in done])
            entry["wall"] = [r["wall_seconds"] for r in done]
            speeds = [r["images_per_s"] for r in done if r["images_per_s"]]
            entry["images_per_s"] = statistics.fmean(speeds) if speeds else None
            entry["hardware"] = sorted({h for r in done for h in r.get("hardware", [])})
            entry["unlabeled"] = sorted({r.get("unlabeled") for r in done})
            entry["epochs"] = sorted({r["epochs"] for r in done})
        out.append(entry)
    return out


def write_tables(out: Path, table_name: str, context: dict, runs: list) -> dict:
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
    schedules = sorted({describe_settings(r["config"], [r["unlabeled"]]) for r in records})
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
        "The paper: 500 epochs, SGD lr 0.2 -> 0.0001 decayed exponentially, batch 100, N_U = the"
        " whole training set (Appendix A).",
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
              "schedule", "epochs", "optimizer", "lr", "lr_final", "decay", "batch_size",
              "preprocess",
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
                lr=t.get("lr"), lr_final=t.get("lr_final"),
                decay=t.get("decay", t.get("schedule", "exp")), batch_size=t.get("batch_size"),
                preprocess=t.get("preprocess", "none"), dataset=t.get("dataset"),
                arch=e["records"][0]["config"].get("model", {}).get("arch"),
                images_per_s=None if not e["images_per_s"] else round(e["images_per_s"], 1),
                wall_seconds_mean=round(statistics.fmean(e["wall"]), 1),
                wall_seconds_total=round(sum(e["wall"]), 1), hardware="; ".join(e["hardware"]))
        w.writerow(d)
    return buf.getvalue()


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
