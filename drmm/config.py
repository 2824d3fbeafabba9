"""Run configuration: model, objective and training protocol, with per-dataset presets.

Precedence: the dataset's preset < a YAML file (--config) < explicit command-line flags.
The training protocol follows Appendix A: batch 100 = 50 labeled + 50 unlabeled images, the
labeled set replicated to the unlabeled set's size, SGD with an exponentially decayed learning
rate (0.2 -> 1e-4 over the run), BatchNorm running averages at test time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from drmm.data.preprocess import PREPROCESS
from drmm.errors import DRMMError
from drmm.losses import KL_MODES, LossConfig
from drmm.model import ModelConfig


@dataclass
class TrainConfig:
    dataset: str = "digits"  # digits | mnist | svhn | cifar10 | npz:PATH
    data_dir: str | None = None  # local copies / download target; None = ~/.cache/drmm
    preprocess: str = "none"  # none ([0, 1]) | standardize | zca; see drmm/data/preprocess.py
    labels: int = 50  # N_L, labeled training images (class-balanced)
    epochs: int = 30  # an epoch = one pass over the unlabeled set (= training set)
    batch_size: int = 100  # images per step: half labeled, half unlabeled
    optimizer: str = "sgd"  # sgd (the paper) | adam
    lr: float = 0.2  # initial learning rate
    lr_final: float = 1e-4  # learning rate at the last step (exponential decay in between)
    momentum: float = 0.0  # SGD momentum (the paper: plain SGD)
    weight_decay: float = 0.0  # L2 penalty (the paper: none)
    seed: int = 0  # seeds the split, the initialisation and the data order
    device: str = "cpu"  # cpu | cuda | cuda:N
    supervised_only: bool = False  # DCN baseline: labeled half only, no top-down pass
    bn_mode: str = "separate"  # separate: each half gets its own BN batch statistics
    eval_batch_size: int = 1000  # images per forward pass at test time
    log_every: int = 20  # steps between progress-bar / NaN checks (each costs a host sync)
    tensorboard: bool = True  # write TensorBoard event files under RUN_DIR/tb


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        cfg = cls()
        apply_overrides(cfg, d, source="checkpoint config")
        return cfg


# Table 6 weights (a_H, a_RC, a_KL, a_NN): MNIST 1/0.2/1/1; SVHN and CIFAR-10 1/0.5/0.2/0.5.
MNIST_WEIGHTS = dict(alpha_h=1.0, alpha_rc=0.2, alpha_kl=1.0, alpha_nn=1.0)
LARGE_WEIGHTS = dict(alpha_h=1.0, alpha_rc=0.5, alpha_kl=0.2, alpha_nn=0.5)

PRESETS: dict[str, dict] = {
    # The README's first command: ~1 minute on 2 CPU cores.
    "digits": {
        "model": dict(arch="conv_small", in_channels=1, image_size=16, num_classes=10),
        "loss": MNIST_WEIGHTS,
        "train": dict(dataset="digits", labels=50, epochs=40, lr=0.2, lr_final=1e-3),
    },
    # MNIST-100 in about an hour on 2 CPU cores; configs/mnist_paper.yaml is the paper's 500 epochs.
    "mnist": {
        "model": dict(arch="conv_small", in_channels=1, image_size=28, num_classes=10),
        "loss": MNIST_WEIGHTS,
        "train": dict(dataset="mnist", labels=100, epochs=15, lr=0.2, lr_final=1e-4),
    },
    # ConvLarge (Table 6) at ~30 images/s on 2 CPU cores: an SVHN epoch (2 x 73,257 images) takes
    # about 1.5 hours there, minutes on one GPU; the paper's 500 epochs: `drmm reproduce table3`.
    "svhn": {
        "model": dict(arch="conv_large", in_channels=3, image_size=32, num_classes=10),
        "loss": LARGE_WEIGHTS,
        "train": dict(dataset="svhn", labels=1000, epochs=10, lr=0.2, lr_final=1e-4,
                      preprocess="standardize"),
    },
    # CIFAR-10 with ConvLarge: about an hour per epoch on 2 CPU cores; the paper: table4.
    "cifar10": {
        "model": dict(arch="conv_large", in_channels=3, image_size=32, num_classes=10),
        "loss": LARGE_WEIGHTS,
        "train": dict(dataset="cifar10", labels=4000, epochs=10, lr=0.2, lr_final=1e-4,
                      preprocess="standardize"),
    },
    # Any prepared-arrays file (`--dataset npz:PATH`); channels and size are read off the data.
    "npz": {
        "model": dict(arch="conv_small"),
        "loss": MNIST_WEIGHTS,
        "train": dict(labels=100, epochs=20, lr=0.2, lr_final=1e-4),
    },
}


def apply_overrides(cfg: Config, d: dict, source: str) -> None:
    """Set cfg's fields from a nested dict {section: {field: value}}; unknown keys are errors."""
    sections = {f.name for f in dataclasses.fields(cfg)}
    for section, values in (d or {}).items():
        if section not in sections:
            raise DRMMError(f"{source}: unknown section {section!r}; use {sorted(sections)}")
        target = getattr(cfg, section)
        known = {f.name for f in dataclasses.fields(target)}
        for key, value in (values or {}).items():
            if key not in known:
                raise DRMMError(f"{source}: unknown key {section}.{key}; known: {sorted(known)}")
            setattr(target, key, value)


def preset(dataset: str) -> Config:
    """Defaults for a data set name, or for `npz:PATH`."""
    key = "npz" if dataset.startswith("npz:") else dataset
    if key not in PRESETS or key == "npz" and dataset == "npz":
        names = sorted(k for k in PRESETS if k != "npz")
        raise DRMMError(f"unknown dataset {dataset!r}; choose one of {names} or npz:PATH")
    cfg = Config()
    apply_overrides(cfg, PRESETS[key], source=f"preset {key}")
    cfg.train.dataset = dataset
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DRMMError(f"config file {path} does not exist; check the --config path")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DRMMError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from e
    if not isinstance(d, dict):
        raise DRMMError(f"config file {path} must hold a mapping of sections (model/loss/train)")
    return d


def validate(cfg: Config) -> None:
    """Reject bad values before any work starts."""
    t, lo = cfg.train, cfg.loss
    if t.batch_size < 2 or t.batch_size % 2:
        raise DRMMError(f"batch_size {t.batch_size} must be even (half labeled, half unlabeled)")
    if t.epochs < 1:
        raise DRMMError(f"epochs {t.epochs} must be at least 1")
    if t.optimizer not in ("sgd", "adam"):
        raise DRMMError(f"optimizer {t.optimizer!r} unknown; use sgd or adam")
    if not (t.lr > 0 and t.lr_final > 0):
        raise DRMMError("lr and lr_final must be positive")
    if t.bn_mode not in ("separate", "joint"):
        raise DRMMError(f"bn_mode {t.bn_mode!r} unknown; use separate or joint")
    if lo.kl_mode not in KL_MODES:
        raise DRMMError(f"kl_mode {lo.kl_mode!r} unknown; use one of {KL_MODES}")
    if lo.unsup_on not in ("unlabeled", "all"):
        raise DRMMError(f"unsup_on {lo.unsup_on!r} unknown; use unlabeled or all")
    if t.preprocess not in PREPROCESS:
        raise DRMMError(f"preprocess {t.preprocess!r} unknown; use one of {list(PREPROCESS)}")
