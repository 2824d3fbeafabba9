"""Per-image scores of a trained DRMM, shared by `drmm suggest` (which images to label next) and
the novelty column of `drmm predict`, and the diversity selection suggest uses.

What only a generative model has: the rendering error of an image under its predicted class,

    err(I) = mean over the C*H*W pixels of (I - I_hat)^2,   I_hat = top_down(bottom_up(I)),

I_hat rendered from c-hat with the switches the image itself chose (section 4.1's E-step). It is
L_RC of Eq. 6 for one image, divided by C*H*W as drmm/losses.py does, computed in eval mode
(BatchNorm's running statistics) on the run's preprocessed images. High: no class template
explains the image, whatever its switches; a classifier alone has no such number.

The class scores, from q(c|I) = softmax of the class scores (all in float64):
- margin: top-1 minus top-2 probability; low = uncertain ("margin sampling", Scheffer, Decomain
  & Wrobel 2001; Settles 2009, "Active Learning Literature Survey", section 3.1).
- entropy: H(q) = -sum_c q_c log q_c; high = uncertain (Settles 2009, section 3.1).
- max-softmax: max_c q_c; 1 - max p is the out-of-distribution baseline of Hendrycks & Gimpel
  (2017), "A Baseline for Detecting Misclassified and Out-of-Distribution Examples". It is
  computed here as exp(logsumexp(other scores) - logsumexp(all scores)): not 0 where a float32
  softmax rounds max p to 1, so confident images still rank among themselves.

Diversity, for a batch of images to label rather than n near-copies of one confusion:
per_class_quota, a round robin over the predicted classes, each class's best-scored image
first, so every class gets n / K picks (more where another class runs out).

Novelty (`drmm predict`, drmm/predictor.py): a raw score divided by its NOVELTY_QUANTILE (99th
percentile) over the run's training images, so > 1 reads "less typical than 99 % of the training
set". The percentiles are computed at the end of training (novelty_calibration, called by
drmm.train.end_epoch for the last epoch) and stored in its checkpoint: NOVELTY_KEYS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from drmm.model import DRMM

# The novelty score of `drmm predict` and drmm.load(...).predict: "render" (the rendering error)
# or "softmax" (1 - max p, Hendrycks & Gimpel). benchmarks/own_data/novelty_auroc.py measures which
# one tells other data from the training distribution better; switch it here, in one place. Both
# scales are stored with every run, so switching needs no retraining. A run that never learned
# to render (--supervised-only, or alpha_RC = 0) always uses "softmax".
NOVELTY_SCORE = "render"
NOVELTY_SCORES = ("render", "softmax")
NOVELTY_QUANTILE = 0.99  # novelty = score / this quantile of the training images' scores
CALIBRATION_IMAGES = 10_000  # at most this many training images (evenly spaced) calibrate it
# Checkpoint keys: the score the run's predictor uses, its scale, and every score's scale.
NOVELTY_KEYS = ("novelty_score", "novelty_scale", "novelty_scales")


# ----------------------------------------------------------------------------------------------
# Scores of a batch, and of a whole set of images


@dataclass
class ImageScores:
    """What one pass over a set of images gives."""

    logits: torch.Tensor  # (N, K) float32 class scores, on the CPU
    render_error: torch.Tensor | None  # (N,) float32 err(I) under c-hat, or None: not asked


def render_error(model: DRMM, x: torch.Tensor, bu=None) -> torch.Tensor:
    """err(I) of a batch x (B, C, H, W) of preprocessed images: mean over the pixels of
    (I - I_hat)^2, I_hat rendered top-down from c-hat. No grad; the caller sets eval mode.
    bu: the batch's bottom-up pass, if already done."""
    with torch.no_grad():
        bu = model.bottom_up(x) if bu is None else bu
        rendered = model.top_down(bu).image  # (B, C, H, W) I-hat
        return (x.float() - rendered.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)


def score_batch(model: DRMM, x: torch.Tensor, render: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (B, K), err(I) (B,) or None) of a batch of preprocessed images, one bottom-up
    pass for both. No grad; the caller sets eval mode."""
    with torch.no_grad():
        bu = model.bottom_up(x)
        err = render_error(model, x, bu) if render else None  # (B,)
        return bu.logits.float(), err  # (B, K)


def score_images(model: DRMM, x: torch.Tensor, batch_size: int = 1000, render: bool = True,
                 device: str | torch.device | None = None) -> ImageScores:
    """Class scores and rendering errors of preprocessed images x (N, C, H, W), in batches, in
    eval mode (running BatchNorm statistics; the model's mode is restored after), without
    gradients. device: where to compute (default: the model's); results come back on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, errors = [], []
    try:
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size].to(device)  # (b, C, H, W)
            lg, err = score_batch(model, batch, render)
            logits.append(lg.cpu())  # (b, K)
            if err is not None:
                errors.append(err.cpu())  # (b,)
    finally:
        model.train(was_training)
    k = model.config.num_classes
    return ImageScores(
        logits=torch.cat(logits) if logits else torch.zeros(0, k),  # (N, K)
        render_error=(torch.cat(errors) if errors else torch.zeros(0)) if render else None)


# ----------------------------------------------------------------------------------------------
# Class scores, from the logits (N, K)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return logits.double().softmax(dim=1)  # (N, K) float64


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability, (N,) float64 in [0, 1]: low = uncertain."""
    top2 = probabilities(logits).topk(2, dim=1).values  # (N, 2)
    return top2[:, 0] - top2[:, 1]  # (N,)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(q(c|I)) in nats, (N,) float64 in [0, log K]: high = uncertain."""
    logp = logits.double().log_softmax(dim=1)  # (N, K)
    return -(logp.exp() * logp).sum(dim=1)  # (N,)


def softmax_novelty(logits: torch.Tensor) -> torch.Tensor:
    """1 - max_c q(c|I) (Hendrycks & Gimpel), (N,) float64, > 0 even where max p rounds to 1."""
    z = logits.double()  # (N, K)
    top = z.argmax(dim=1, keepdim=True)  # (N, 1)
    others = z.scatter(1, top, float("-inf"))  # (N, K) the top score masked out
    return (others.logsumexp(dim=1) - z.logsumexp(dim=1)).exp()  # (N,)


def raw_novelty(score: str, logits: torch.Tensor, render_err: torch.Tensor | None
                ) -> torch.Tensor:
    """The raw novelty score `score` of NOVELTY_SCORES, (N,) float64: higher = less typical."""
    if score == "render":
        if render_err is None:
            raise ValueError("the render novelty score needs the rendering errors")
        return render_err.double()  # (N,)
    if score == "softmax":
        return softmax_novelty(logits)  # (N,)
    raise ValueError(f"unknown novelty score {score!r}; use one of {NOVELTY_SCORES}")


def rank_average(*scores) -> np.ndarray:
    """The mean of each score's rank scaled to [0, 1] (0: the lowest of its score, 1: the
    highest; ties share their average rank), (N,) float64. Ranks, not values: scores on other
    scales (a probability margin, a squared error) count alike, and no outlier dominates."""
    ranks = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)  # (N,)
        r = rankdata(s, method="average") - 1  # (N,) 0..N-1
        ranks.append(r / max(len(s) - 1, 1))
    return np.mean(ranks, axis=0)  # (N,)


# ----------------------------------------------------------------------------------------------
# Diversity


def per_class_quota(scores, classes, n: int) -> np.ndarray:
    """n positions into scores (higher = more worth taking), spread over the classes: a round
    robin in which each class, in each round, gives its best image not yet taken; within a
    round the classes go in the order of those images' scores. Each class thus gets n / K
    images (give or take one), and a class with too few images leaves its share to the others.
    Returns the positions in the order taken (a prefix of it is as diverse as it can be)."""
    scores, classes = np.asarray(scores, dtype=np.float64), np.asarray(classes)
    if not 0 <= n <= len(scores):
        raise ValueError(f"cannot take {n} of {len(scores)} images")
    queues = []
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)  # (M_c,)
        order = np.lexsort((members, -scores[members]))  # best first; ties: lower position
        queues.append(list(members[order]))
    taken: list[int] = []
    while len(taken) < n:
        heads = [q.pop(0) for q in queues if q]  # each class's best not yet taken
        heads.sort(key=lambda i: (-scores[i], i))
        taken += heads[:n - len(taken)]
        queues = [q for q in queues if q]
    return np.array(taken, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Novelty calibration


def renders(cfg) -> str | None:
    """Why a run's rendering error means nothing (its top-down pass was never trained to
    reconstruct), or None if it does."""
    if cfg.train.supervised_only:
        return "is a --supervised-only run (a DCN): its top-down pass was never trained"
    if cfg.loss.alpha_rc == 0:
        return "was trained without L_RC (--no-rc): its renderings were never fitted to images"
    return None


def run_novelty_score(cfg) -> str:
    """The novelty score a run's predictor uses: NOVELTY_SCORE, or "softmax" for a run that
    never learned to render."""
    return NOVELTY_SCORE if renders(cfg) is None else "softmax"


def calibration_subset(n: int, limit: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """Indices of at most `limit` of n images, evenly spaced (no random state is touched)."""
    if n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long()  # (limit,)


def novelty_calibration(model: DRMM, cfg, x_train: torch.Tensor, batch_size: int = 1000
                        ) -> dict:
    """The checkpoint entries of NOVELTY_KEYS: each score's NOVELTY_QUANTILE over the training
    images x_train (preprocessed, on any device; at most CALIBRATION_IMAGES of them), and the
    score the run's predictor uses with its scale. In eval mode; the model's mode is kept."""
    x = x_train[calibration_subset(len(x_train)).to(x_train.device)]  # (n, C, H, W)
    can_render = renders(cfg) is None
    s = score_images(model, x, batch_size, render=can_render)
    scales = {name: quantile_scale(raw_novelty(name, s.logits, s.render_error))
              for name in NOVELTY_SCORES if name != "render" or can_render}
    score = run_novelty_score(cfg)
    return {"novelty_score": score, "novelty_scale": scales[score], "novelty_scales": scales}


def quantile_scale(values: torch.Tensor) -> float:
    """NOVELTY_QUANTILE of values, kept above 0 so that it can divide."""
    q = float(np.quantile(values.double().cpu().numpy(), NOVELTY_QUANTILE))
    return q if np.isfinite(q) and q > 0 else float(np.finfo(np.float64).tiny)
