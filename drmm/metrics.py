"""RUN_DIR/metrics.json: a run's final figures, named so that a person reads them as the
terminal printed them, and read back from runs of every version.

    {"format": 2, "test_error_percent": 7.6, "best_test_error_percent": 7.2,
     "worst_confusion": {"true": "8", "predicted": "1", "count": 8}, "epochs": 40, ...,
     "test_error_percent_by_epoch": [31.4, ..., 7.6]}

Percentages are in percent (the terminal's "test error 7.60 %"), times in seconds (their keys
say so), the largest mix-up of classes by name. Format 1 (no "format" key) stored fractions
("test_error": 0.076) and the mix-up as a bare [true, predicted, count] triple of class
indices; `read_metrics` migrates it, as drmm.config migrates an old config. The per-epoch log
(metrics.jsonl, drmm/records.py) keeps fractions: it is the checkpoint's history as written.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from drmm.checkpoint import CHECKPOINT
from drmm.errors import DRMMError

METRICS = "metrics.json"  # the file inside a run folder
METRICS_FORMAT = 2
# Format 1 key -> format 2 key, for the fractions that became percentages.
PERCENT_KEYS = {"test_error": "test_error_percent", "best_test_error": "best_test_error_percent",
                "test_error_curve": "test_error_percent_by_epoch"}


def percent(fraction: float | None) -> float | None:
    """A fraction as a percentage, without float noise (0.076 -> 7.6, not 7.6000000000000005);
    None stays None (no test set)."""
    return None if fraction is None else round(100 * fraction, 10)


def confusion_entry(worst, class_names: list[str]) -> dict | None:
    """A (true, predicted, count) triple of class indices as {"true": name, "predicted": name,
    "count": n}; None stays None (no test set)."""
    if worst is None:
        return None
    true, pred, count = (int(v) for v in worst)
    name = (lambda c: class_names[c]) if class_names else str
    return {"true": name(true), "predicted": name(pred), "count": count}


def migrate(metrics: dict, class_names: list[str] | None = None) -> dict:
    """metrics.json of any format as format 2. class_names: the run's, for format 1's class
    indices (without them an index stands for its class, which is its name for the built-in
    digit sets)."""
    version = metrics.get("format", 1)
    if not isinstance(version, int) or version > METRICS_FORMAT:
        raise DRMMError(f"metrics format {version!r} is newer than this drmm reads"
                        f" ({METRICS_FORMAT}); upgrade drmm")
    if version == METRICS_FORMAT:
        return dict(metrics)
    out = {"format": METRICS_FORMAT}
    for key, value in metrics.items():
        if key in PERCENT_KEYS:
            out[PERCENT_KEYS[key]] = ([percent(v) for v in value] if isinstance(value, list)
                                      else percent(value))
        elif key == "worst_confusion":
            out[key] = confusion_entry(value, class_names or [])
        else:
            out[key] = value
    return out


def read_metrics(run: str | Path, class_names: list[str] | None = None) -> dict:
    """The metrics.json of a run folder (or the file itself), in format 2 whatever its age."""
    path = Path(run)
    path = path / METRICS if path.is_dir() else path
    try:
        metrics = json.loads(path.read_text())
    except OSError as e:
        raise DRMMError(f"cannot read {path} ({e.strerror or e}); is it a finished drmm run?"
                        ) from e
    except ValueError as e:
        raise DRMMError(f"{path} is not valid JSON ({e}); the run's metrics are damaged") from e
    if not isinstance(metrics, dict):
        raise DRMMError(f"{path} holds no metrics object; the run's metrics are damaged")
    if class_names is None and isinstance(metrics.get("worst_confusion"), list):
        class_names = stored_class_names(path.parent / CHECKPOINT)
    return migrate(metrics, class_names)


def stored_class_names(checkpoint: Path) -> list[str] | None:
    """The class names a run's checkpoint stores, or None where it cannot be read (memory
    mapped: the weights are not read)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return [str(c) for c in state["class_names"]]
    except Exception:  # noqa: BLE001 - any unreadable checkpoint: the indices stand for names
        return None
