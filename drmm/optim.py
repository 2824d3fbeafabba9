"""The M-step's optimiser and its learning-rate schedule (Appendix A: SGD, the rate decayed
exponentially per step from lr to lr_final; Adam and a half-cosine decay as options).

Training (drmm/train.py) builds both here; a resumed run whose length or rates changed plans its
schedule anew here too (drmm/checkpoint.py).
"""

from __future__ import annotations

import torch

from drmm.config import Config
from drmm.model import DRMM


def make_optimizer(model: DRMM, cfg: Config, total_steps: int):
    """The M-step's optimiser and its learning-rate schedule over `total_steps` steps."""
    t = cfg.train
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                              weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return opt, make_scheduler(opt, t.decay, t.lr_final, total_steps)


def make_scheduler(opt, decay: str, lr_final: float, steps: int):
    """The learning rate from the optimiser's current rate down to lr_final at the last of
    `steps` steps: exponentially (the paper) or along a half cosine."""
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]  # where the schedule starts from
    lr = opt.param_groups[0]["lr"]
    if decay == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps - 1, 1), eta_min=lr_final)
    gamma = (lr_final / lr) ** (1.0 / max(steps - 1, 1))  # lr -> lr_final per step
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
