"""A run's checkpoint: where a training run stands, written atomically, loaded safely, and
continued bit for bit.

The checkpoint (RUN_DIR/checkpoint.pt) holds the model (with the BatchNorm running statistics),
the optimiser, the LR schedule, the config, the labeled indices, the class names and
preprocessing statistics (for drmm.load), and a RunState: the epoch and the step reached in it,
the data-order generator's state at the start of that epoch, the epoch's partial loss sums, every
RNG state and the history. A run resumed from it equals an uninterrupted one exactly on CPU
(tests/test_reliability.py). A resume with other settings is refused, listing what changed,
unless forced (docs/reliability.md).

Writing: the state goes to a temporary file beside the target, is flushed and fsync'ed, then
renamed over the target, and the folder is fsync'ed so the rename itself survives a power cut. A
crash or a full disk at any moment leaves the previous checkpoint intact; a leftover temporary
file is removed by `drmm.files.remove_stale_temporaries` when the run is resumed.

Loading uses torch.load(weights_only=True): a checkpoint holds tensors and plain Python values
only (dicts, lists, tuples, numbers, strings), so a file from the internet cannot run code when
it is opened; one that carries any other pickled object is refused with a DRMMError.
"""

from __future__ import annotations

import pickle
import random
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from drmm.checkpoint_check import check_like, check_trained, check_training, describe
from drmm.config import FREE_ON_RESUME, Config
from drmm.errors import DRMMError
from drmm.files import atomic_write, require_file
from drmm.model import DRMM
from drmm.optim import make_scheduler

CHECKPOINT = "checkpoint.pt"  # the file inside a run folder
ID_KEY = "run_id"  # the run's id, in its checkpoints and its config.json (drmm/run_folder.py)
# 1: epoch ends only (model, optimizer, scheduler, epoch, rng{torch, data}, history, ...);
# 2: adds the position inside an epoch, the partial sums and every RNG state.
CHECKPOINT_FORMAT = 2

# ----------------------------------------------------------------------------------------------
# Files

def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoint.pt): the file, checked to exist."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise DRMMError(f"folder {path} holds no {CHECKPOINT}; pass a drmm run folder or a"
                            " checkpoint file")
        return path / CHECKPOINT
    return require_file(path, "checkpoint", "pass a drmm run folder or its checkpoint.pt")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The dict saved at path (a file or a run folder); refuses pickled code and reports
    corrupt files as DRMMError."""
    path = resolve_checkpoint(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler stopped: at a global (a class or function: what a pickle
        # runs code through) or at an opcode it does not allow (junk, or an exotic pickle).
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise DRMMError(f"checkpoint {path} holds objects other than tensors and plain"
                            f" values (a pickled {found.group(1)}); refusing to load it"
                            " (unpickling it could run code)") from e
        raise DRMMError(f"checkpoint {path} is not a weights-only checkpoint"
                        f" ({weights_only_reason(e)});"
                        " refusing to load it: it is corrupt, or a pickle that could run code"
                        ) from e
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError, ...
        reason = first_line(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
        raise DRMMError(f"checkpoint {path} cannot be read ({reason}); it is corrupt or"
                        " truncated: use an older copy or start the run again") from e
    if not isinstance(state, dict):
        raise DRMMError(f"checkpoint {path} holds a {type(state).__name__}, not a dict;"
                        " it is not a drmm checkpoint")
    return state


def weights_only_reason(e: BaseException) -> str:
    """The line of torch's weights-only error that says what was refused."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return next((line.rstrip(".") for line in lines if line.startswith("Unsupported")),
                first_line(e))


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def state_dict_problem(e: BaseException, limit: int = 300) -> str:
    """torch's load_state_dict error in one line: which keys are missing, unexpected or of
    another shape (its first line alone, "Error(s) in loading state_dict", says nothing)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = "; ".join(lines[1:]) if len(lines) > 1 else first_line(e)
    return detail if len(detail) <= limit else detail[:limit - 3] + "..."


def load_trained_model(path: str | Path):
    """(model, config, state) of a drmm checkpoint or run folder, the model in eval mode (its
    BatchNorm running statistics in use and left alone); a DRMMError if it is not one."""
    state = load_checkpoint(path)
    if not {"config", "model"} <= state.keys():
        raise DRMMError(f"{path} is not a drmm checkpoint (no config or model);"
                        " pass the checkpoint.pt of a drmm run")
    cfg = check_trained(resolve_checkpoint(path), state)  # types, finite weights
    try:
        model = DRMM(cfg.model)
        model.load_state_dict(state["model"])
    except (ValueError, RuntimeError) as e:
        raise DRMMError(f"{path}: the weights do not fit the config stored with them"
                        f" ({state_dict_problem(e)}); the file is damaged or not from this"
                        " version") from e
    return model.eval(), cfg, state


# ----------------------------------------------------------------------------------------------
# The run's state


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
    known = type(version) is int and 1 <= version <= CHECKPOINT_FORMAT  # not a bool, not None
    need = {"model", "optimizer", "scheduler", "epoch", "config", "labeled_indices", "rng",
            "history"}
    if known and version >= 2:
        need |= {"step", "data_rng", "sums", "good_steps", "epoch_skipped", "skipped",
                 "wall_seconds", "epoch_seconds", "n_train"}
    missing = sorted(need - state.keys())
    if missing or not known:
        raise DRMMError(f"{path} is not a drmm training checkpoint this version can resume"
                        f" (format {version!r}, missing {missing}); start a new run")
    if version == 1:  # epoch-level checkpoints of earlier versions: at an epoch's start
        history, rng = state["history"], state["rng"]
        last = history[-1] if isinstance(history, list) and history else {}
        state.update(step=0, data_rng=rng.get("data") if isinstance(rng, dict) else None,
                     sums={}, good_steps=0, epoch_skipped=0, skipped=0, epoch_seconds=0.0,
                     n_train=None,
                     wall_seconds=last.get("wall_seconds") if isinstance(last, dict) else None)
    check_training(path, state)  # types, shapes, finite numbers: before anything uses them
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


# ----------------------------------------------------------------------------------------------
# Saving a run, and continuing it


def restore_run(saved: dict, model: DRMM, opt, sched, gen: torch.Generator, cfg: Config,
                steps_per_epoch: int, device) -> tuple[RunState, object]:
    """Load a checkpoint into a run that continues it: model, optimiser, RNG states, the data
    order's generator at the epoch's start; returns the RunState and the LR schedule. If the
    run's length or rates changed (a longer run, or forced), the decay is planned anew from the
    current rate to lr_final at the new last step, in the shape the config now names."""
    run = RunState.from_checkpoint(saved)
    if run.step >= steps_per_epoch:
        raise DRMMError(f"the checkpoint stands at step {run.step} of an epoch, which has"
                        f" {steps_per_epoch} steps; resume with the run's own settings")
    run.sums = {k: v.to(device) for k, v in run.sums.items()}
    gen.set_state(run.data_rng)  # the generator as it was at the epoch's start
    steps_left = steps_per_epoch * (cfg.train.epochs - run.epoch) - run.step
    check_like("optimizer param_groups", saved["optimizer"]["param_groups"],
               opt.state_dict()["param_groups"])
    kept = optimizer_state_keys(opt)
    try:
        # runs of versions with a weight average kept the weights SGD moves as "online_model"
        model.load_state_dict(saved.get("online_model", saved["model"]))
        opt.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DRMMError(f"the checkpoint does not fit this config ({state_dict_problem(e)});"
                        " resume with the run's own settings") from e
    check_optimizer_state(opt, kept)
    set_rng_states(saved["rng"], device)
    was, t = Config.from_dict(saved["config"], quiet=True).train, cfg.train
    if (was.epochs, was.lr, was.lr_final, was.decay) == (t.epochs, t.lr, t.lr_final, t.decay):
        check_like("scheduler", saved["scheduler"], sched.state_dict())
        if saved["scheduler"].get("T_max", 1) < 1:
            raise DRMMError("the checkpoint's scheduler has T_max below 1; the file is damaged:"
                            " use another copy of the run")
        sched.load_state_dict(saved["scheduler"])
        return run, sched
    for group in opt.param_groups:  # a changed lr rescales the current rate
        group["lr"] *= t.lr / was.lr
    lr_final = min(t.lr_final, opt.param_groups[0]["lr"])  # never climb back up
    return run, make_scheduler(opt, t.decay, lr_final, steps_left)


def optimizer_state_keys(opt) -> tuple[set, dict]:
    """(the settings of opt's parameter group, {name: None or a tensor} of what opt keeps per
    parameter once it has stepped: SGD its momentum buffer, None without momentum; Adam step,
    exp_avg, exp_avg_sq), read off a trial step of an optimiser like it on a one-element
    parameter."""
    probe = torch.zeros(1, requires_grad=True)
    probe.grad = torch.zeros(1)
    settings = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "initial_lr")}
    trial = type(opt)([probe], **settings)
    trial.step()
    return set(opt.param_groups[0]), dict(trial.state[probe])


def check_optimizer_state(opt, kept: tuple[set, dict]) -> None:
    """The loaded optimiser: every setting of its group there (the optimiser's own loading
    fills in those that older versions lacked); every parameter's state none yet, or what opt
    keeps, each tensor finite and shaped as its parameter (the step count: a scalar >= 0)."""
    settings, kept = kept
    for group in opt.param_groups:
        if settings - set(group):
            raise DRMMError(f"the checkpoint's optimizer param_groups lack"
                            f" {sorted(settings - set(group))}; the file is damaged: use another"
                            " copy of the run")
        for p in group["params"]:
            state = opt.state.get(p, {})
            if state and set(state) != set(kept):
                raise DRMMError(f"the checkpoint's optimizer state holds {sorted(state)} for a"
                                f" parameter, the optimiser keeps {sorted(kept)}; the file is"
                                " damaged: use another copy of the run")
            for name, v in state.items():
                shape = () if name == "step" else tuple(p.shape)
                ok = (v is None if kept[name] is None else isinstance(v, torch.Tensor)
                      and tuple(v.shape) == shape and bool(torch.isfinite(v).all())
                      and (name != "step" or bool(v >= 0)))
                if not ok:
                    raise DRMMError(f"the checkpoint's optimizer state {name} is"
                                    f" {describe(v)} for a parameter of shape {tuple(p.shape)};"
                                    " the file is damaged: use another copy of the run")


class Checkpointer:
    """Writes the run's checkpoint (rank 0), after every rank has checked the weights."""

    def __init__(self, path: Path, model: DRMM, opt, sched, device, is_main: bool,
                 steps_per_epoch: int, fixed: dict, last_saved: str | None):
        self.path, self.model, self.opt, self.sched = path, model, opt, sched
        self.device, self.is_main, self.steps_per_epoch = device, is_main, steps_per_epoch
        self.fixed = fixed  # what every checkpoint of the run holds alike: config, split, ...
        self.last_saved = last_saved  # where the last good checkpoint stands, in words

    def save(self, run: RunState, extra: dict | None = None) -> None:
        """Check the weights, then write the checkpoint (rank 0), with `extra` entries."""
        where = position(run.epoch, run.step, self.steps_per_epoch)
        state = self.model.state_dict()  # parameters and BatchNorm running statistics
        # Every rank holds the same weights, so every rank raises here alike: none is left
        # waiting for the others.
        if not all(v.isfinite().all() for v in state.values() if v.is_floating_point()):
            raise DRMMError(f"the model's weights became non-finite by the {where}; not saved,"
                            f" the last good checkpoint (at the {self.last_saved}) is kept."
                            " Lower --lr")
        if self.is_main:
            run.rng = get_rng_states(self.device)
            save_checkpoint(self.path, {
                "format": CHECKPOINT_FORMAT, **run.to_checkpoint(), **self.fixed, "model": state,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                **(extra or {})})
        self.last_saved = where
