"""What a loaded checkpoint must hold, checked before any command uses it (docs/reliability.md,
"Safe loading").

A checkpoint is a file from anywhere: a download, a copy, a damaged disk. Loading it with
torch.load(weights_only=True) (drmm.checkpoint) keeps it from running code; these checks keep
the plain values it may hold from crashing a command later or from giving NaN predictions: every
field's type, the weights' names and shapes against the stored config, finite numbers. Each
problem is one DRMMError that names the field, what it holds and what it should hold.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import torch

from drmm.config import Config, validate
from drmm.data.preprocess import PREPROCESS
from drmm.errors import DRMMError
from drmm.model import DRMM, feature_sizes

TRAINING_COUNTS = ("epoch", "step", "good_steps", "epoch_skipped", "skipped")  # ints >= 0
TRAINING_TIMES = ("wall_seconds", "epoch_seconds")  # finite seconds >= 0


class Checked:
    """The checks of one checkpoint file: each failure names the file and the field."""

    def __init__(self, path, state: dict):
        self.path, self.state = path, state

    def fail(self, field: str, value, expected: str):
        raise DRMMError(f"checkpoint {self.path}: {field} is {describe(value)}, expected"
                        f" {expected}; the file is damaged or not a drmm checkpoint: use another"
                        " copy of the run")

    def expect(self, ok: bool, field: str, value, expected: str) -> None:
        if not ok:
            self.fail(field, value, expected)

    def config(self, quiet: bool = False) -> Config:
        """The stored config, loaded and checked to describe a model this version builds
        (quiet: no note on options this version removed: the caller gives it)."""
        d = self.state.get("config")
        self.expect(isinstance(d, dict), "config", d, "a mapping of settings")
        try:
            cfg = Config.from_dict(d, quiet=quiet)
        except (DRMMError, TypeError, ValueError, AttributeError, KeyError, IndexError,
                RuntimeError) as e:  # any plain value where a section or a setting goes
            raise DRMMError(f"checkpoint {self.path}: its config does not load ({first_line(e)});"
                            " the file is damaged or not from a drmm run: use another copy of"
                            " the run") from e
        try:  # the checks a config file gets before training, and what only a run sets
            validate(cfg)
        except (DRMMError, TypeError, ValueError) as e:
            raise DRMMError(f"checkpoint {self.path}: its config is not one drmm trains with"
                            f" ({first_line(e)}); the file is damaged or not from a drmm run:"
                            " use another copy of the run") from e
        m = cfg.model
        self.expect(m.in_channels in (1, 3), "config model.in_channels", m.in_channels, "1 or 3")
        self.expect(m.num_classes >= 2, "config model.num_classes", m.num_classes, "at least 2")
        try:
            feature_sizes(m.specs(), m.image_size)
        except ValueError as e:
            raise DRMMError(f"checkpoint {self.path}: its config describes no network this"
                            f" version builds ({first_line(e)}); the file is damaged") from e
        return cfg

    def weights(self, key: str = "model") -> dict:
        """The network's weights: names -> tensors, every floating one finite."""
        sd = self.state.get(key)
        self.expect(isinstance(sd, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()),
            key, sd, "the network's weights (names and tensors)")
        bad = [k for k, v in sd.items() if not (v.is_floating_point() or v.dtype == torch.int64)
               or v.is_floating_point() and not bool(torch.isfinite(v).all())]
        self.expect(not bad, f"{key} {', '.join(bad[:3])}", sd[bad[0]] if bad else None,
                    "finite floating-point weights (NaN or infinite weights give NaN predictions)")
        return sd

    def fits(self, cfg: Config, key: str = "model") -> None:
        """The weights' names, shapes and dtypes are the network's that the config describes
        (built on the meta device: a config of a billion classes allocates nothing)."""
        with torch.device("meta"):
            fresh = DRMM(cfg.model).state_dict()
        sd = self.state[key]
        problems = [f"missing {sorted(fresh.keys() - sd.keys())[:3]}"] if fresh.keys() - sd.keys() \
            else []
        if sd.keys() - fresh.keys():
            problems.append(f"unexpected {sorted(sd.keys() - fresh.keys())[:3]}")
        problems += [f"size mismatch for {k}: {tuple(sd[k].shape)} in the file,"
                     f" {tuple(fresh[k].shape)} in the network" if sd[k].shape != fresh[k].shape
                     else f"{k} is {sd[k].dtype}, the network's {fresh[k].dtype}"
                     for k in sorted(fresh.keys() & sd.keys())
                     if (sd[k].shape, sd[k].dtype) != (fresh[k].shape, fresh[k].dtype)]
        if problems:
            raise DRMMError(f"{self.path}: the weights do not fit the config stored with them"
                            f" ({'; '.join(problems[:3])}); the file is damaged or not from this"
                            " version")

    def trained(self, cfg: Config) -> None:
        """What eval, predict, suggest and export read besides the weights."""
        s, k = self.state, cfg.model.num_classes
        names = s.get("class_names", [])
        self.expect(isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)
                    and len(names) in (0, k), "class_names", names, f"a list of {k} names")
        if "preprocess" in s:
            self.preprocess(cfg)
        scales = s.get("novelty_scales", {})
        self.expect(isinstance(scales, dict) and all(
            isinstance(n, str) and positive(v) for n, v in scales.items()),
            "novelty_scales", scales, "a mapping of score names to positive numbers")
        if "novelty_score" in s or "novelty_scale" in s:
            self.expect(isinstance(s.get("novelty_score"), str), "novelty_score",
                        s.get("novelty_score"), "a score name")
            self.expect(positive(s.get("novelty_scale")), "novelty_scale",
                        s.get("novelty_scale"), "a positive number")
        n = s.get("n_train")
        self.expect(n is None or is_int(n) and n >= 1, "n_train", n, "a number of images")
        if "labeled_indices" in s:
            idx = s["labeled_indices"]
            self.expect(isinstance(idx, torch.Tensor) and idx.dim() == 1
                        and idx.dtype == torch.int64 and (len(idx) == 0 or idx.min() >= 0
                                                          and (n is None or idx.max() < n)),
                        "labeled_indices", idx, "int64 indices (N_L,) of the training images")
        self.expect(isinstance(s.get("history", []), list), "history", s.get("history"),
                    "a list of epoch records")
        self.expect(isinstance(s.get("run_id", ""), str), "run_id", s.get("run_id"), "a text")

    def preprocess(self, cfg: Config) -> None:
        """The preprocessing statistics: their mode's tensors, shaped for the model's input."""
        d = self.state["preprocess"]
        fields = {"mode", "mean", "std", "whitening"}
        self.expect(isinstance(d, dict) and set(d) <= fields and d.get("mode") in PREPROCESS,
                    "preprocess", d, f"a mapping with a mode of {PREPROCESS} and its statistics")
        c, s = cfg.model.in_channels, cfg.model.image_size
        shapes = {"standardize": {"mean": (c,), "std": (c,)},
                  "zca": {"mean": (c * s * s,), "whitening": (c * s * s, c * s * s)}}
        for key, shape in shapes.get(d["mode"], {}).items():
            v = d.get(key)
            self.expect(isinstance(v, torch.Tensor) and v.is_floating_point()
                        and tuple(v.shape) == shape and bool(torch.isfinite(v).all())
                        and (key != "std" or bool((v > 0).all())),
                        f"preprocess {key}", v, f"a finite float tensor of shape {shape}")

    def training(self) -> None:
        """What a resumed run reads: the position, the history, the RNG and optimiser states."""
        s = self.state
        for key in TRAINING_COUNTS:
            self.expect(is_int(s[key]) and s[key] >= 0, key, s[key], "a count (0 or more)")
        for key in TRAINING_TIMES:
            self.expect(finite(s[key]) and s[key] >= 0, key, s[key], "seconds (0 or more)")
        self.history(s["history"], s["epoch"])
        sums = s["sums"]
        self.expect(isinstance(sums, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) and v.numel() == 1
            and v.is_floating_point() and bool(torch.isfinite(v).all()) for k, v in sums.items()),
            "sums", sums, "a mapping of loss names to finite scalar tensors")
        self.expect(accepted(torch.Generator().set_state, s["data_rng"]), "data_rng",
                    s["data_rng"], "a generator state (torch's, a uint8 tensor)")
        self.rng(s["rng"])
        self.optimizer(s["optimizer"])
        sched = s["scheduler"]
        self.expect(isinstance(sched, dict) and all(
            isinstance(k, str) and plain_number_or_list(v) for k, v in sched.items()),
            "scheduler", sched, "a learning-rate schedule's state (names and finite numbers)")

    def history(self, history, epochs: int) -> None:
        """One JSON-ready record per finished epoch, numbered from 1."""
        self.expect(isinstance(history, list) and len(history) == epochs, "history", history,
                    f"a list of {epochs} epoch records (one per finished epoch)")
        for i, r in enumerate(history):
            ok = (isinstance(r, dict) and r.get("epoch") == i + 1
                  and "test_error" in r  # null without a test set, but always there
                  and (r["test_error"] is None or finite(r["test_error"]))
                  and finite(r.get("wall_seconds")))
            self.expect(ok and json_ready(r), f"history[{i}]", r,
                        f"the record of epoch {i + 1} (epoch, test_error, wall_seconds, ...)")

    def rng(self, rng) -> None:
        self.expect(isinstance(rng, dict) and "torch" in rng, "rng", rng,
                    "a mapping of random states (torch, numpy, python)")
        # Each state is tried on a generator of its own kind: the one test that says whether
        # the run's generators will take it (torch checks the MT19937 state itself).
        self.expect(accepted(torch.Generator().set_state, rng["torch"]), "rng torch",
                    rng["torch"], "torch's generator state (a uint8 tensor)")
        if "numpy" in rng:
            v = rng["numpy"]
            ok = (isinstance(v, (list, tuple)) and len(v) == 4 and isinstance(v[0], torch.Tensor)
                  and v[0].dtype == torch.int64 and all(finite(x) for x in v[1:]))
            self.expect(ok and accepted(lambda v: np.random.RandomState().set_state(
                ("MT19937", v[0].numpy().astype(np.uint32), int(v[1]), int(v[2]), v[3])), v),
                "rng numpy", v, "NumPy's MT19937 state (keys (624,), pos, gauss)")
        if "python" in rng:
            v = rng["python"]
            ok = (isinstance(v, (list, tuple)) and len(v) == 3
                  and isinstance(v[1], (list, tuple)) and all(is_int(x) for x in v[1]))
            self.expect(ok and accepted(lambda v: random.Random().setstate(
                (v[0], tuple(v[1]), v[2])), v),
                "rng python", v, "Python's random state (version, 625 ints, gauss)")
        if "cuda" in rng:
            self.expect(isinstance(rng["cuda"], (list, tuple)) and all(
                isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"]),
                "rng cuda", rng["cuda"], "CUDA generator states (uint8 tensors)")

    def optimizer(self, opt) -> None:
        """The optimiser's state: per-parameter finite tensors, groups of finite settings."""
        self.expect(isinstance(opt, dict) and isinstance(opt.get("state"), dict)
                    and isinstance(opt.get("param_groups"), list), "optimizer", opt,
                    "an optimiser state (state and param_groups)")
        for i, g in enumerate(opt["param_groups"]):
            ok = (isinstance(g, dict) and isinstance(g.get("params"), list)
                  and all(is_int(p) for p in g["params"]) and positive(g.get("lr"))
                  and all(isinstance(k, str) and plain_number_or_list(v)
                          for k, v in g.items() if k != "params"))
            self.expect(ok, f"optimizer param_groups[{i}]", g,
                        "a parameter group (params, a positive lr, finite settings)")
        for k, st in opt["state"].items():
            ok = is_int(k) and isinstance(st, dict) and all(
                isinstance(n, str) and (v is None or finite(v) or isinstance(v, torch.Tensor)
                                        and bool(torch.isfinite(v).all()))
                for n, v in st.items())
            self.expect(ok, f"optimizer state[{k!r}]", st, "finite tensors")


def check_trained(path, state: dict) -> Config:
    """The config of a checkpoint that eval, predict, suggest and export can use (its weights
    are checked as they load, drmm.checkpoint.load_trained_model)."""
    checked = Checked(path, state)
    cfg = checked.config()
    checked.weights()
    checked.fits(cfg)
    checked.trained(cfg)
    return cfg


def check_training(path, state: dict) -> None:
    """A training checkpoint (in the current format) that a run can continue."""
    checked = Checked(path, state)
    cfg = checked.config(quiet=True)  # the resume's own reading of it gives the note
    checked.weights()
    checked.fits(cfg)
    if "online_model" in state:
        checked.weights("online_model")
        checked.fits(cfg, "online_model")
    checked.trained(cfg)
    checked.expect(isinstance(state["labeled_indices"], torch.Tensor), "labeled_indices",
                   state["labeled_indices"], "int64 indices (N_L,) of the training images")
    checked.training()


# ----------------------------------------------------------------------------------------------
# Kinds of values


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(v) -> bool:
    return finite(v) and v > 0


def plain_number_or_list(v) -> bool:
    """A setting as optimisers and schedules keep them: a finite number, a flag, None, a text,
    a finite tensor, or a list / tuple of finite numbers."""
    if v is None or isinstance(v, (bool, str)) or finite(v):
        return True
    if isinstance(v, torch.Tensor):
        return bool(torch.isfinite(v).all()) if v.is_floating_point() else True
    return isinstance(v, (list, tuple)) and all(finite(x) for x in v)


def accepted(set_state, v) -> bool:
    """Whether set_state (of a throwaway generator) takes the state v."""
    try:
        set_state(v)
    except (RuntimeError, ValueError, TypeError, OverflowError, IndexError):
        return False
    return True


def json_ready(record: dict) -> bool:
    try:
        json.dumps(record)
    except (TypeError, ValueError):
        return False
    return True


def describe(v) -> str:
    """A value in a few words: what an error message shows of what the field held."""
    if isinstance(v, torch.Tensor):
        return f"a {str(v.dtype).removeprefix('torch.')} tensor of shape {tuple(v.shape)}"
    if isinstance(v, (dict, list, tuple)):
        items = list(v.values()) if isinstance(v, dict) else list(v)
        kinds = sorted({type(x).__name__ for x in items})
        return (f"a {type(v).__name__} of {len(v)} item{'s' * (len(v) != 1)}"
                + (f" ({', '.join(kinds[:3])}{', ...' if len(kinds) > 3 else ''})" if kinds
                   else ""))
    text = repr(v)
    return (text if len(text) <= 40 else text[:37] + "...") + (
        f" (a {type(v).__name__})" if not isinstance(v, (int, float, type(None))) else "")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def mismatch(v, template, where: str):
    """(where, value) of the first part of v that is not of template's kind (an optimiser's or
    a schedule's state as this version builds it), or None: a number for a number (finite), an
    int for an int, a flag or None for a flag or None, a tensor of the same dtype and shape,
    lists of the same length, mappings alike on the keys both have."""
    if isinstance(template, (list, tuple)) and isinstance(v, (list, tuple)) \
            and len(v) == len(template):
        return next((m for i, (a, b) in enumerate(zip(v, template, strict=True))
                     if (m := mismatch(a, b, f"{where}[{i}]"))), None)
    if isinstance(template, dict) and isinstance(v, dict):
        return next((m for k in sorted(v.keys() & template.keys(), key=str)
                     if (m := mismatch(v[k], template[k], f"{where}[{k!r}]"))), None)
    if template is None or isinstance(template, bool):
        ok = v is None or isinstance(v, bool)
    elif isinstance(template, str):
        ok = isinstance(v, str)
    elif is_int(template):
        ok = is_int(v)
    elif isinstance(template, float):
        ok = finite(v)
    elif isinstance(template, torch.Tensor):
        ok = (isinstance(v, torch.Tensor) and v.dtype == template.dtype
              and v.shape == template.shape
              and (not v.is_floating_point() or bool(torch.isfinite(v).all())))
    else:
        ok = not isinstance(template, (list, tuple, dict))
    return None if ok else (where, v)


def check_like(field: str, value, template) -> None:
    """Refuse a checkpoint's optimiser or schedule state that is not of the kind this run
    builds (it would fail, or give a NaN rate, at the first step)."""
    found = mismatch(value, template, field)
    if found is not None:
        where, v = found
        raise DRMMError(f"the checkpoint's {where} is {describe(v)}, not of the kind this run's"
                        " is; the file is damaged or not from this version: use another copy of"
                        " the run")
