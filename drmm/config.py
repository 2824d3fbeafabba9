"""Run configuration: model, objective and training protocol, with per-dataset presets.

Precedence: the dataset's preset < a YAML file (--config) < explicit command-line flags.
The training protocol follows Appendix A: batch 100 = 50 labeled + 50 unlabeled images, the
labeled set replicated to the unlabeled set's size, SGD with an exponentially decayed learning
rate (0.2 -> 1e-4 over the run), BatchNorm running averages at test time.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import sys
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from drmm.data.augment import AUGMENTS, STRONG_VIEWS
from drmm.data.folder import folder_preset
from drmm.data.preprocess import PREPROCESS
from drmm.errors import DRMMError
from drmm.files import UniqueKeyLoader, require_file
from drmm.losses import KL_MODES, TERMS, LossConfig
from drmm.model import ARCHS, ModelConfig
from drmm.precision import PRECISIONS

# Appendix A and Table 6: the paper's schedule, for every table. A named schedule (here, in
# PRESETS below and in drmm/reproduce/tables.py) sets every one of these keys, so that no
# setting of the run it plans is inherited from somewhere else; TrainConfig's defaults are it.
# Which terms a run's objective has is not part of a schedule: the paper's step is
# drmm.step.paper_step (loss.paper_only), whatever a preset adds.
PAPER_SCHEDULE: dict = dict(
    optimizer="sgd",  # plain SGD
    lr=0.2,  # initial learning rate
    lr_final=1e-4,  # learning rate at the last step
    decay="exp",  # exponential decay per step from lr to lr_final
    momentum=0.0,  # none
    epochs=500,  # passes over the unlabeled set
    batch_size=100,  # 50 labeled + 50 unlabeled images per step
    labeled_batch=None,  # half of each batch labeled
    unlabeled=None,  # N_U: the whole training set
    augment="none",  # no data augmentation
)
SCHEDULE_KEYS = tuple(PAPER_SCHEDULE)

# MNIST-100 in under an hour of 2 CPU cores: the `mnist` preset and `drmm reproduce table1
# --schedule cpu-hour`. Why each departure from PAPER_SCHEDULE is there, with its measured
# effect: docs/recipe.md#the-mnist-preset. In short: Adam with cosine decay (the paper's SGD
# decay, squeezed into a few epochs, spends most of them at tiny rates); shifts of +-2 px
# (without them a label draw can lose a class); 20 labeled + 80 unlabeled images a step (the
# labeled cross-entropy is near 0 after the first epochs); the graph prior in the first epoch
# (it decides where clusters of unlabeled images go before entropy minimisation settles them);
# the consistency term; 20 epochs.
CPU_HOUR_MNIST: dict = dict(PAPER_SCHEDULE, optimizer="adam", lr=1e-3, lr_final=1e-5,
                            decay="cosine", epochs=20, labeled_batch=20, augment="translate",
                            graph_prior=1.0, consistency=1.0)


# Colour photos (the `cifar10` and photo-folder presets): conv_photo, Table 6's weights for
# colour images, each channel standardized (the statistics are saved with the run), random
# crops and mirror images, the consistency term on colour-jittered, turned, mirrored, cut-out
# views (the jitter lowered the error on four photo folders, one held aside, and left CIFAR-10
# level), Adam with cosine decay; no graph prior (pixel neighbours of photos rarely share a class:
# docs/recipe.md#colour-folders-and-cifar10).
PHOTO_RECIPE: dict = dict(CPU_HOUR_MNIST, preprocess="standardize", augment="crop_flip",
                          graph_prior=0.0, strong_view="colour")


@dataclass
class TrainConfig:
    dataset: str = "digits"  # digits | mnist | svhn | cifar10 | npz:PATH | folder:DIR
    data_dir: str | None = None  # local copies / download target; None = ~/.cache/drmm
    preprocess: str = "none"  # none ([0, 1]) | standardize | gcn | zca; see drmm/data/preprocess.py
    labels: int | None = 50  # N_L, labeled images drawn class-balanced; None: all the data label
    labeled_indices: str | None = None  # file (.npy / text) naming exactly the labeled images
    unlabeled: int | None = None  # N_U: a seeded random subset of the training images; None: all
    channels: int | None = None  # folder:DIR: 1 gray, 3 RGB; None: RGB if any file is in colour
    image_size: int | None = None  # folder:DIR: resize every image to this square size, pixels
    resize: str = "crop"  # how --image-size fits a non-square image: crop (centre square) | squash
    augment: str = PAPER_SCHEDULE["augment"]  # none | crop_flip | translate | affine: augment.py
    epochs: int = PAPER_SCHEDULE["epochs"]  # an epoch = one pass over the unlabeled set
    batch_size: int = PAPER_SCHEDULE["batch_size"]  # images per step, labeled and unlabeled
    labeled_batch: int | None = PAPER_SCHEDULE["labeled_batch"]  # labeled per step (None: half)
    unlabeled_ramp: float = 0.0  # epochs in which unlabeled images a step grow 1/4 -> all (0: off)
    optimizer: str = PAPER_SCHEDULE["optimizer"]  # sgd (the paper) | adam
    lr: float = PAPER_SCHEDULE["lr"]  # initial learning rate
    lr_final: float = PAPER_SCHEDULE["lr_final"]  # learning rate at the last step
    decay: str = PAPER_SCHEDULE["decay"]  # lr -> lr_final per step: exp (the paper) | cosine
    momentum: float = PAPER_SCHEDULE["momentum"]  # SGD momentum (the paper: plain SGD)
    weight_decay: float = 0.0  # L2 penalty (the paper: none)
    graph_prior: float = 0.0  # epochs of graph pseudo-labels (0: off; the paper: off)
    consistency: float = 0.0  # weight of L_CON, strong views (0: off; the paper: off)
    strong_view: str = "affine"  # L_CON's view: affine | colour (also colours jittered): augment.py
    seed: int = 0  # seeds the split, the initialisation and the data order
    device: str = "cpu"  # cpu | cuda | cuda:N
    supervised_only: bool = False  # DCN baseline: labeled half only, no top-down pass
    bn_mode: str = "separate"  # separate: each half gets its own BN batch statistics | joint
    eval_batch_size: int = 1000  # images per forward pass at test time
    eval_every: int = 1  # evaluate on the test set every K epochs and after the last (1: each)
    log_every: int = 20  # steps between progress-bar / NaN checks (each costs a host sync)
    tensorboard: bool = True  # write TensorBoard event files under RUN_DIR/tb
    report: bool = True  # write RUN_DIR/report.html at the end (later: drmm report RUN)
    checkpoint_every: int = 0  # also checkpoint every K steps inside an epoch (0: epoch ends only)
    skip_nonfinite: bool = False  # skip (and count) batches with a NaN/inf loss instead of stopping
    verify: bool = True  # md5-check cached data files each time they are read (downloads always)
    precision: str = "auto"  # auto (bf16 where the CPU has it natively) | fp32 | bf16: precision.py
    sync_bn: bool = False  # torchrun: BatchNorm statistics over all ranks (SyncBatchNorm, CUDA)
    channels_last: bool = True  # NHWC memory layout, faster on CPUs: results/recipe.md, "Layout"

    def batch_split(self) -> tuple[int, int]:
        """(labeled, unlabeled) images per step: labeled_batch of batch_size, half by default."""
        n_lab = self.labeled_batch or self.batch_size // 2
        return n_lab, self.batch_size - n_lab


# The allowed values of every setting that has a fixed set: validate() and the CLI read them here.
CHOICES: dict[str, tuple] = {
    "model.arch": tuple(ARCHS),
    "loss.kl_mode": KL_MODES,
    "loss.unsup_on": ("unlabeled", "all"),
    "train.preprocess": PREPROCESS,
    "train.augment": AUGMENTS,
    "train.strong_view": STRONG_VIEWS,
    "train.optimizer": ("sgd", "adam"),
    "train.decay": ("exp", "cosine"),
    "train.bn_mode": ("separate", "joint"),
    "train.precision": PRECISIONS,
    "train.channels": (None, 1, 3),
    "train.resize": ("crop", "squash"),
}
# Settings a resumed run may change: they move, extend or observe the run, not what it computes.
FREE_ON_RESUME = frozenset({
    "train.epochs", "train.data_dir", "train.device", "train.tensorboard", "train.log_every",
    "train.eval_batch_size", "train.eval_every", "train.checkpoint_every", "train.skip_nonfinite",
    "train.verify", "train.precision", "train.channels_last", "train.report"})
# Version of Config.to_dict's layout. Each step of MIGRATIONS turns version v into v + 1, so a
# checkpoint of any older version still loads; keys added since then take the defaults that
# reproduce what the older version did.
CONFIG_VERSION = 11
# Keys renamed since version 1, old -> new: the migration below, and the hint an old YAML gets.
# train.schedule became train.decay (a "schedule" is now a named set of settings).
RENAMED = {"train.schedule": "train.decay"}
# Options that measured no gain and were removed (docs/recipe.md, "tried and not kept"), with
# the value that left each off: a saved config that has one drops it, and says so if it was on.
REMOVED = {"train.kl_warmup": 0.0, "train.ema": 0.0, "loss.alpha_bal": 0.0,
           "loss.kl_threshold": 0.0, "loss.render_from": "c_hat"}


def renamed_keys(d: dict) -> dict:
    """d with every key of RENAMED under its new name."""
    moves = {tuple(old.split(".")): new.split(".")[1] for old, new in RENAMED.items()}
    return {section: ({moves.get((section, k), k): v for k, v in values.items()}
                      if isinstance(values, dict) else values) for section, values in d.items()}


def without_removed(d: dict, quiet: bool = False) -> dict:
    """d without the keys of REMOVED; one line on stderr names those that were on."""
    d = {section: dict(values) if isinstance(values, dict) else values
         for section, values in d.items()}
    dropped = []
    for key, off in REMOVED.items():
        section, name = key.split(".")
        values = d.get(section)
        if isinstance(values, dict) and name in values and values.pop(name) != off:
            dropped.append(key)
    if dropped and not quiet:
        print(f"drmm: note: this run used {', '.join(dropped)}, which drmm no longer has (they"
              " measured no gain, docs/recipe.md); it continues without them", file=sys.stderr)
    return d


def squash_resize(d: dict) -> dict:
    """d with train.resize = "squash" where it has no train.resize: what older versions did."""
    train = d.get("train") or {}
    if not isinstance(train, dict) or "resize" in train:
        return d
    return {**d, "train": {**train, "resize": "squash"}}


MIGRATIONS = {
    # 1 -> 2: the keys of RENAMED; labeled_indices, unlabeled, channels, image_size, augment are
    # new (their defaults: what version 1 did).
    1: renamed_keys,
    # 2 -> 3: train.kl_warmup, train.ema, loss.render_from are new (removed again in 6).
    2: dict,
    # 3 -> 4: train.labeled_batch is new (its default: half of each batch, as before).
    3: dict,
    # 4 -> 5: train.graph_prior is new (its default: off, as before).
    4: dict,
    # 5 -> 6: the keys of REMOVED go (without_removed, called with the caller's `quiet`).
    5: dict,
    # 6 -> 7: train.resize is new; runs before it squashed non-square images (its default, crop,
    # would change their predictions).
    6: squash_resize,
    # 7 -> 8: loss.paper_only (its default: every term of the table on, as before) and
    # train.report (a page written at the end; it changes no number) are new.
    7: dict,
    # 8 -> 9: train.unlabeled_ramp is new (its default: no ramp, as before).
    8: dict,
    # 9 -> 10: train.strong_view is new (its default, affine: the strong view as before).
    9: dict,
    # 10 -> 11: train.eval_every is new (its default: evaluate after every epoch, as before).
    10: dict,
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, quiet: bool = False) -> Config:
        """A config saved by to_dict (by this or an older version); newer ones are refused.
        quiet: no note on options of older versions that this one removed."""
        d = dict(d)
        version = d.pop("version", 1)  # version 1 wrote no version
        d.pop("run_id", None)  # config.json's run id (drmm/run_folder.py): not a setting
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise DRMMError(f"config version {version!r} is newer than this drmm reads"
                            f" ({CONFIG_VERSION}); upgrade drmm")
        for v in range(version, CONFIG_VERSION):
            d = MIGRATIONS[v](d)
        d = without_removed(d, quiet)  # any version may hold them: YAML files too
        cfg = cls()
        apply_overrides(cfg, d, source="saved config")
        return cfg

    def flat(self) -> dict:
        """{"train.lr": 0.2, ...}: every setting under its dotted name."""
        return {f"{section}.{k}": v for section, values in asdict(self).items()
                for k, v in values.items()}

    def diff(self, other: Config, ignore=frozenset()) -> list[str]:
        """'key: mine -> other's' for every setting that differs, keys in `ignore` aside."""
        a, b = self.flat(), other.flat()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]


def field_help(cls) -> dict[str, str]:
    """{field: its comment} of a config dataclass (and of the dataclasses it extends): the
    comment on each field's line is its documentation, for readers of the source and for
    `--help` alike (one text, one place)."""
    comments = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        for line in inspect.getsource(klass).splitlines():
            found = re.match(r"\s+(\w+): [^#]+#\s*(.+)$", line)
            if found:
                comments[found.group(1)] = found.group(2).strip()
    return comments


# Table 6 weights (a_H, a_RC, a_KL, a_NN): MNIST 1/0.2/1/1; SVHN and CIFAR-10 1/0.5/0.2/0.5.
MNIST_WEIGHTS = dict(alpha_h=1.0, alpha_rc=0.2, alpha_kl=1.0, alpha_nn=1.0)
LARGE_WEIGHTS = dict(alpha_h=1.0, alpha_rc=0.5, alpha_kl=0.2, alpha_nn=0.5)

PRESETS: dict[str, dict] = {
    # The README's first command. Shifts of +-2 px and the consistency term keep every class on
    # label draws where entropy minimisation alone loses one; its time and test error:
    # docs/recipe.md#the-digits-preset.
    "digits": {
        "model": dict(arch="conv_small", in_channels=1, image_size=16, num_classes=10),
        "loss": MNIST_WEIGHTS,
        "train": dict(dataset="digits", labels=50, epochs=40, lr=0.2, lr_final=1e-3,
                      augment="translate", consistency=1.0),
    },
    # MNIST-100 in under an hour on 2 CPU cores (CPU_HOUR_MNIST above; its time and test error:
    # docs/recipe.md#the-mnist-preset); configs/mnist_paper.yaml is the paper's 500 epochs.
    "mnist": {
        "model": dict(arch="conv_small", in_channels=1, image_size=28, num_classes=10),
        "loss": MNIST_WEIGHTS,
        "train": dict(CPU_HOUR_MNIST, dataset="mnist", labels=100),
    },
    # ConvLarge (Table 6) for 10 epochs; what ConvLarge costs on 2 CPU cores and on a GPU:
    # docs/datasets.md#schedules; the paper's 500 epochs: `drmm reproduce table3`.
    "svhn": {
        "model": dict(arch="conv_large", in_channels=3, image_size=32, num_classes=10),
        "loss": LARGE_WEIGHTS,
        "train": dict(dataset="svhn", labels=1000, epochs=10, lr=0.2, lr_final=1e-4,
                      preprocess="standardize"),
    },
    # CIFAR-10, 4,000 labels, with the photo recipe (PHOTO_RECIPE) over 8 epochs of all 50,000
    # images: what fits under 2 hours of one CPU core, and its test error:
    # docs/recipe.md#cifar10-on-all-50000-images-svhn-and-npz; the paper's ConvLarge runs:
    # `drmm reproduce table4`. The 10,000 test images are evaluated every 4 epochs and after
    # the last: each evaluation costs about 2.5 % of an epoch, and changes no training number.
    "cifar10": {
        "model": dict(arch="conv_photo", in_channels=3, image_size=32, num_classes=10),
        "loss": LARGE_WEIGHTS,
        "train": dict(PHOTO_RECIPE, dataset="cifar10", labels=4000, epochs=8, eval_every=4),
    },
    # Any prepared-arrays file (`--dataset npz:PATH`); channels and size are read off the data.
    # labels None: every image the file labels (-1 marks the unlabeled ones); --labels N draws N.
    "npz": {
        "model": dict(arch="conv_small"),
        "loss": MNIST_WEIGHTS,
        "train": dict(labels=None, epochs=20, lr=0.2, lr_final=1e-4),
    },
    # The user's own images (`--dataset folder:DIR`, drmm/data/folder.py), labels None: the
    # labeled/ images are the labeled set. A folder of grayscale images gets the mnist preset's
    # recipe (held on three MNIST-as-PNG label draws: docs/recipe.md#grayscale-folders); a
    # folder with colour images gets "folder_photo" (preset() picks by the files).
    "folder": {
        "model": dict(arch="conv_small"),
        "loss": MNIST_WEIGHTS,
        "train": dict(CPU_HOUR_MNIST, labels=None),
    },
    # L_CON from top q(c|I) 0.8 rather than 0.95 (a threshold more of a photo folder's unlabeled
    # images pass), and 50 epochs rather than 20 or 40: each lowered the held-out error on the
    # label draws it was chosen on, with a rule fixed before the runs; 50 is what fits one hour of
    # one core in bf16 on a CPU with AMX. The figures: docs/recipe.md#colour-folders-and-cifar10.
    # `cifar10` keeps 0.95, as it was measured.
    "folder_photo": {
        "model": dict(arch="conv_photo"),
        "loss": dict(LARGE_WEIGHTS, con_threshold=0.8),
        "train": dict(PHOTO_RECIPE, labels=None, epochs=50),
    },
}


# What each folder preset adds to the paper's step, in words, for the line that names it; the
# figures in braces are filled from the preset itself (preset_summary), so they cannot drift.
SUMMARY_WORDS = {
    "folder": "conv_small, shifts, {labeled_batch} labeled + {unlabeled_batch} unlabeled a step,"
              " graph prior in epoch 1, consistency term, Adam, {epochs} epochs",
    "folder_photo": "conv_photo, standardized channels, crops and mirror images, consistency"
                    " term on colour-jittered views from q(c|I) {con_threshold}, Adam, {epochs}"
                    " epochs, Table 6's weights for colour images",
}


def preset_summary(key: str) -> str:
    """The one-line description of a folder preset, with its own figures."""
    cfg = Config()
    apply_overrides(cfg, PRESETS[key], source=f"preset {key}")
    labeled_batch, unlabeled_batch = cfg.train.batch_split()
    return SUMMARY_WORDS[key].format(labeled_batch=labeled_batch, unlabeled_batch=unlabeled_batch,
                                     con_threshold=cfg.loss.con_threshold, epochs=cfg.train.epochs)


def apply_overrides(cfg: Config, d: dict, source: str) -> None:
    """Set cfg's fields from a nested dict {section: {field: value}}; unknown keys are errors."""
    sections = {f.name for f in dataclasses.fields(cfg)}
    for section, values in (d or {}).items():
        if section not in sections:
            raise DRMMError(f"{source}: unknown section {section!r}; use {sorted(sections)}")
        target = getattr(cfg, section)
        known = {f.name for f in dataclasses.fields(target)}
        if not isinstance(values or {}, dict):
            raise DRMMError(f"{source}: section {section!r} must be a mapping of keys to values")
        hints = typing.get_type_hints(type(target))
        for key, value in (values or {}).items():
            if key not in known:
                renamed = RENAMED.get(f"{section}.{key}")
                hint = (f" (renamed {renamed})" if renamed else
                        " (removed: it measured no gain, docs/recipe.md; delete it)"
                        if f"{section}.{key}" in REMOVED else f"; known: {sorted(known)}")
                raise DRMMError(f"{source}: unknown key {section}.{key}{hint}")
            setattr(target, key, checked_value(value, hints[key], f"{section}.{key}", source))


def checked_value(value, hint, name: str, source: str):
    """value if it fits the field's annotation (bool, int, float, str, or X | None), else a
    DRMMError; an int or a numeric string (YAML reads `1e-3` as one) becomes a float."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    kinds = typing.get_args(hint) if union else (hint,)
    if any(k not in (bool, int, float, str, type(None)) for k in kinds):
        return value  # a type this check does not know: left to validate()
    if value is None and type(None) in kinds:
        return None
    if isinstance(value, bool):  # bool is an int in Python; never let True pass as 1
        if bool in kinds:
            return value
    elif isinstance(value, int) and int in kinds:
        return value
    elif float in kinds and isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            return number
    elif isinstance(value, str) and str in kinds:
        return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
    raise DRMMError(f"{source}: {name} = {value!r} is not a valid value; expected {names}"
                    + (" (finite)" if float in kinds else ""))


def preset(dataset: str, channels: int | None = None, quiet: bool = False) -> Config:
    """Defaults for a data set name, or for `npz:PATH` / `folder:DIR`. A folder's preset
    follows its images (`channels` forces 1 or 3): grayscale "folder", colour "folder_photo";
    one line on stderr says which, unless quiet."""
    key = dataset.split(":", 1)[0] if dataset.startswith(("npz:", "folder:")) else dataset
    if key not in PRESETS or key in ("npz", "folder", "folder_photo") and ":" not in dataset:
        names = sorted(k for k in PRESETS if k not in ("npz", "folder", "folder_photo"))
        raise DRMMError(f"unknown dataset {dataset!r}; choose one of {names}, npz:PATH or"
                        " folder:DIR")
    if key == "folder":  # the folder's images decide (drmm.data.folder.folder_preset)
        root = dataset[len("folder:"):]
        key = folder_preset(root, channels)
        if key is None:  # no image file: load_folder says what is wrong, with the fix
            key = "folder"
        elif not quiet:
            kind = ("colour images: the photo" if key == "folder_photo"
                    else "grayscale images: the grayscale")
            print(f"drmm: note: {root} holds {kind} recipe ({preset_summary(key)}); any flag"
                  " overrides a part of it (README, docs/recipe.md)", file=sys.stderr)
    cfg = Config()
    apply_overrides(cfg, PRESETS[key], source=f"preset {key}")
    cfg.train.dataset = dataset
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = require_file(path, "config file", "check the --config path")
    try:
        d = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # safe_load, one key once
    except yaml.MarkedYAMLError as e:  # knows where: say the line and column, and what
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(filter(None, [e.context, e.problem]))
        raise DRMMError(f"config file {path}{where}: not valid YAML ({what})") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DRMMError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from e
    if not isinstance(d, dict):
        raise DRMMError(f"config file {path} must hold a mapping of sections (model/loss/train)")
    return d


def validate(cfg: Config) -> None:
    """Reject bad values before any work starts."""
    t, lo, m = cfg.train, cfg.loss, cfg.model
    flat = cfg.flat()
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise DRMMError(f"{key.split('.')[1]} {flat[key]!r} unknown; use one of"
                            f" {[a for a in allowed if a is not None]}")
    if not (m.bn_eps > 0 and 0 < m.bn_momentum <= 1):
        raise DRMMError("model.bn_eps must be > 0 and model.bn_momentum in (0, 1]")
    if t.labels is not None and t.labels < 1:
        raise DRMMError(f"labels {t.labels}: need a positive number of labeled images")
    if t.unlabeled is not None and t.unlabeled < 1:
        raise DRMMError(f"unlabeled {t.unlabeled}: need a positive number of training images"
                        " (or none: the whole training set)")
    if t.image_size is not None and t.image_size < 1:
        raise DRMMError(f"image_size {t.image_size} must be a positive number of pixels")
    if t.seed < 0:
        raise DRMMError(f"seed {t.seed} must be 0 or more")
    if t.log_every < 1 or t.eval_batch_size < 1 or t.eval_every < 1 or t.checkpoint_every < 0:
        raise DRMMError("log_every, eval_batch_size and eval_every must be at least 1,"
                        " checkpoint_every at least 0 (0: checkpoint at epoch ends only)")
    if not (0 <= t.momentum < 1 and t.weight_decay >= 0):
        raise DRMMError("momentum must be in [0, 1) and weight_decay at least 0")
    for term in TERMS.values():  # every weight setting of the objective's table
        if isinstance(term.weight, str) and not (math.isfinite(term.setting(cfg))
                                                 and term.setting(cfg) >= 0):
            raise DRMMError(f"{term.weight} {term.setting(cfg)} must be a finite number, at"
                            " least 0; use 0 to switch its term off")
    if not 0 <= lo.con_threshold < 1:
        raise DRMMError(f"con_threshold {lo.con_threshold} must be in [0, 1) (0: every image)")
    try:
        torch.device(t.device)
    except RuntimeError as e:
        raise DRMMError(f"device {t.device!r} unknown; use cpu, cuda or cuda:N") from e
    if t.labeled_batch is None and (t.batch_size < 2 or t.batch_size % 2):
        raise DRMMError(f"batch_size {t.batch_size} must be even (half labeled, half unlabeled),"
                        " or set labeled_batch")
    if t.labeled_batch is not None and not 1 <= t.labeled_batch < t.batch_size:
        raise DRMMError(f"labeled_batch {t.labeled_batch} must be from 1 to batch_size - 1"
                        f" ({t.batch_size - 1}), so that each step has both kinds of image")
    if t.epochs < 1:
        raise DRMMError(f"epochs {t.epochs} must be at least 1")
    if not (math.isfinite(t.unlabeled_ramp) and t.unlabeled_ramp >= 0):
        raise DRMMError(f"unlabeled_ramp {t.unlabeled_ramp} must be a number of epochs, at least"
                        " 0 (0: every step has all its unlabeled images)")
    if not (t.lr > 0 and t.lr_final > 0):
        raise DRMMError("lr and lr_final must be positive")
