"""Pseudo-labels from a nearest-neighbour graph of the training images (not in the paper).

Label spreading (Zhou et al., 2004) over a k-nearest-neighbour graph of the raw training images
gives every unlabeled image a class distribution; its top class, weighted by its certainty
1 - H/log K, is a pseudo-label, as in Iscen et al. (2019), "Label propagation for deep
semi-supervised learning". The training loop adds their cross-entropy (drmm.losses.graph_prior)
for the first `train.graph_prior` epochs only, at a weight that falls linearly from 1 to 0.

Why: entropy minimisation (the KL term) settles a cluster that no labeled image shows in
whichever class the first epoch's network leans to, and nothing moves it afterwards. On MNIST
with seed 1's 100 labels, the crossbar 7s went to 3 in the first epoch of every recipe tried;
the graph, built from pixels alone, joins them to the other 7s (label spreading calls 643 of the
796 training crossbar 7s 7, and 0 of them 3), and one epoch of its pseudo-labels keeps them there
(results/recipe.md, "MNIST: the graph prior"). The pseudo-labels themselves are poor (about 15 %
wrong on MNIST-100, where the DRMM ends below 1 %), which is why they fade out after the first
epoch.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.semi_supervised import LabelSpreading

NEIGHBOURS = 10  # k of the k-nearest-neighbour graph (Iscen et al.: 50 on CNN features)
SPREAD = 0.99  # label spreading's alpha: how far labels travel (0.99: far, as Iscen et al.)
ITERATIONS = 200  # label-spreading iterations (not converged to tol 1e-3 by then on MNIST)


def propagate_labels(x: torch.Tensor, labeled: np.ndarray, y_labeled: np.ndarray,
                     num_classes: int, threads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(pseudo-labels (N,) int64, certainties (N,) float32 in [0, 1]) of every image in x.

    x: (N, C, H, W) the training images (uint8 Images or float32); labeled: (N_L,) indices
    into x; y_labeled: (N_L,) their classes. The labeled images are spread over too (on MNIST
    seed 1 all 100 keep their own class, at certainty 0.56 or more). An image the graph does not
    reach gets certainty 0, so it adds nothing to the loss.
    """
    targets = np.full(len(x), -1, dtype=np.int64)  # -1: unlabeled, for scikit-learn
    targets[labeled] = y_labeled
    pixels = x[:].detach().cpu().reshape(len(x), -1).numpy()  # (N, C*H*W) float32, preprocessed
    k = neighbours(len(x))
    spreading = LabelSpreading(kernel="knn", n_neighbors=k, alpha=SPREAD,
                               max_iter=ITERATIONS, n_jobs=threads)
    with warnings.catch_warnings():  # 200 iterations do not reach tol 1e-3 on MNIST; we use them
        warnings.simplefilter("ignore", ConvergenceWarning)
        spreading.fit(pixels, targets)
    dist = np.zeros((len(x), num_classes))  # (N, K); columns of classes with no labeled image: 0
    dist[:, spreading.classes_] = np.nan_to_num(spreading.label_distributions_)
    total = dist.sum(axis=1, keepdims=True)  # (N, 1), 0 where the graph did not reach
    dist = np.where(total > 0, dist / np.maximum(total, 1e-12), 1.0 / num_classes)  # (N, K)
    entropy = -(dist * np.log(np.clip(dist, 1e-12, 1.0))).sum(axis=1)  # (N,)
    certainty = 1.0 - entropy / math.log(num_classes)  # (N,) 1: one class, 0: uniform
    pseudo = dist.argmax(axis=1)  # (N,)
    return torch.from_numpy(pseudo).long(), torch.from_numpy(certainty).float()


def neighbours(n: int) -> int:
    """k of the graph of n images: NEIGHBOURS, or every other image where there are fewer."""
    return max(1, min(NEIGHBOURS, n - 1))


def graph_pseudo_labels(x: torch.Tensor, labeled: np.ndarray, y_labeled: np.ndarray,
                        num_classes: int, log=None) -> tuple[torch.Tensor, torch.Tensor]:
    """propagate_labels with the process's thread count, on x's device, timed for the log."""
    t0 = time.perf_counter()
    pseudo, certainty = propagate_labels(x, labeled, y_labeled, num_classes,
                                         threads=torch.get_num_threads())
    if log is not None:
        log(f"graph prior: pseudo-labels of {len(x)} images by label spreading over a"
            f" {neighbours(len(x))}-nearest-neighbour graph ({time.perf_counter() - t0:.0f} s)")
    return pseudo.to(x.device), certainty.to(x.device)
