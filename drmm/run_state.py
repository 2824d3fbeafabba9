"""Where a training run stands, and the checkpoint that lets it continue bit for bit.

The checkpoint (RUN_DIR/checkpoint.pt, written atomically by drmm.checkpoint) holds the model
(with the BatchNorm running statistics), the optimiser, the LR schedule, the config, the labeled
indices, the class names and preprocessing statistics (for drmm.load), and a RunState: the
epoch and the step reached in it, the data-order generator's state at the start of that epoch,
the epoch's partial loss sums, every RNG state and the history. A run resumed from it equals an
uninterrupted one exactly on CPU (tests/test_reliability.py). A resume with other settings is
refused, listing what changed, unless forced (docs/reliability.md).
"""

from __future__ import annotations

import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from drmm.checkpoint import load_checkpoint
from drmm.config import FREE_ON_RESUME, Config
from drmm.errors import DRMMError

# 1: epoch ends only (model, optimizer, scheduler, epoch, rng{torch, data}, history, ...);
# 2: adds the position inside an epoch, the partial sums and every RNG state.
CHECKPOINT_FORMAT = 2


@dataclass
class RunState:
    """Everything beyond the model, optimiser and schedule that a run needs to continue."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished inside epoch `epoch` (0: at its start)
    data_rng: torch.Tensor | None = None  # the data-order generator at the start of `epoch`
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # loss terms over good steps
    good_steps: int = 0  # steps of this epoch that updated the weights
    epoch_skipped: int = 0  # batches of this epoch skipped for a NaN / inf
    skipped: int = 0  # batches of the whole run skipped for a NaN / inf
    wall_seconds: float = 0.0  # training time of the run so far, all processes
    epoch_seconds: float = 0.0  # time spent inside epoch `epoch` so far
    history: list[dict] = field(default_factory=list)  # one record per finished epoch
    rng: dict = field(default_factory=dict)  # torch / numpy / python (/ cuda) RNG states

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """Count a step that updated the weights, with its loss terms."""
        self.sums = {k: self.sums.get(k, 0.0) + v for k, v in terms.items()}
        self.good_steps += 1

    def means(self) -> dict[str, float]:
        """The epoch's mean loss terms so far (one host sync)."""
        if not self.good_steps:
            return {}
        return {k: v.item() / self.good_steps for k, v in self.sums.items()}

    def finish_epoch(self, record: dict, data_rng: torch.Tensor) -> None:
        """Log the epoch and stand at the start of the next, whose order data_rng will draw."""
        self.history.append(record)
        self.epoch, self.step, self.sums, self.good_steps, self.epoch_skipped = \
            self.epoch + 1, 0, {}, 0, 0
        self.epoch_seconds, self.data_rng = 0.0, data_rng
        self.wall_seconds = record["wall_seconds"]

    def to_checkpoint(self) -> dict:
        d = asdict(self)
        d["sums"] = {k: v.detach().cpu() for k, v in self.sums.items()}
        return d

    @classmethod
    def from_checkpoint(cls, state: dict) -> RunState:
        return cls(**{k: state[k] for k in cls.__dataclass_fields__})


def load_run_state(path: Path) -> dict:
    """A training checkpoint, in the current format; a DRMMError if it is not one."""
    if not path.is_file():
        raise DRMMError(f"{path} does not exist: nothing to resume; check the run folder, or"
                        " start the run without --resume")
    state = load_checkpoint(path)
    version = state.get("format", 1)
    need = {"model", "optimizer", "scheduler", "epoch", "config", "labeled_indices", "rng",
            "history"}
    if version >= 2:
        need |= {"step", "data_rng", "sums", "good_steps", "epoch_skipped", "skipped",
                 "wall_seconds", "epoch_seconds", "n_train"}
    missing = sorted(need - state.keys())
    if missing or not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise DRMMError(f"{path} is not a drmm training checkpoint this version can resume"
                        f" (format {version!r}, missing {missing}); start a new run")
    if version == 1:  # epoch-level checkpoints of earlier versions: at an epoch's start
        history = state["history"]
        state.update(step=0, data_rng=state["rng"]["data"], sums={}, good_steps=0,
                     epoch_skipped=0, skipped=0, epoch_seconds=0.0, n_train=None,
                     wall_seconds=history[-1]["wall_seconds"] if history else 0.0)
    return state


def check_resume(out: Path, state: dict, cfg: Config, labeled: np.ndarray, n_train: int,
                 force: bool) -> None:
    """Refuse to resume with other settings or other data unless forced; list what differs."""
    changes = Config.from_dict(state["config"]).diff(cfg, ignore=FREE_ON_RESUME)
    if not torch.equal(state["labeled_indices"], torch.from_numpy(labeled)) \
            or state["n_train"] not in (None, n_train):
        changes.append(f"the data: {n_train} training images and their labeled split differ"
                       f" from the run's ({state['n_train']} images)")
    if changes and not force:
        raise DRMMError(f"{out} was trained with other settings ({'; '.join(changes)}); resume"
                        " without changing them, pass --force-resume to continue anyway, or"
                        " start a new run with another --out")
    if changes:
        print(f"drmm: warning: resuming {out} with changed settings: {'; '.join(changes)}",
              file=sys.stderr)
    if cfg.train.epochs < state["epoch"]:
        raise DRMMError(f"{out} has already trained {state['epoch']} epochs; --epochs"
                        f" {cfg.train.epochs} must be at least that")


def get_rng_states(device: torch.device) -> dict:
    """Every random state a run could touch, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()  # ('MT19937', keys (624,) uint32, pos, has_gauss, gauss)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss),
                             gauss))
    if "python" in states:
        version, internal, gauss_next = states["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state_all(states["cuda"])


def position(epoch: int, step: int, steps_per_epoch: int) -> str:
    """Where a run stands after `step` steps of epoch index `epoch`, in words (1-based)."""
    if step == 0:
        return f"end of epoch {epoch}" if epoch else "start of the run"
    return f"epoch {epoch + 1}, step {step} of {steps_per_epoch}"
