"""The labeled / unlabeled split (section 5.1): class-balanced, pure, seeded, returns indices."""

from __future__ import annotations

import numpy as np

from drmm.errors import DRMMError


def labeled_split(labels: np.ndarray, n_labeled: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of n_labeled training images, n_labeled / num_classes of each class, sorted.

    The same (labels, n_labeled, seed) always gives the same indices. The unlabeled set is the
    whole training set, as in the authors' code (labels of the rest are never read).
    """
    labels = np.asarray(labels)
    if n_labeled <= 0:
        raise DRMMError(f"--labels {n_labeled}: need a positive number of labeled images")
    if n_labeled > len(labels):
        raise DRMMError(f"--labels {n_labeled}: more than the {len(labels)} training images")
    if n_labeled % num_classes:
        raise DRMMError(f"--labels {n_labeled} is not divisible by the {num_classes} classes;"
                        f" use a multiple of {num_classes} for a class-balanced split")
    per_class = n_labeled // num_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise DRMMError(f"--labels {n_labeled}: class {c} has only {len(pool)} images,"
                            f" fewer than the {per_class} per class asked for")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))
