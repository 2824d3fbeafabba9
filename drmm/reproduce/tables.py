"""The paper's result tables and the schedules that reproduce them (sections 5.1-5.3).

- table1: MNIST (section 5.1, Table 1): ConvSmall, N_L in {50, 100, 1000}; rows DRMM (no KL, no
  NN penalty), +NN, +KL, +KL+NN. Table 2 (the reduction in test error that each penalty brings)
  is derived from Table 1 and written beside it.
- table3: SVHN (section 5.2, Table 3): ConvLarge, N_L in {500, 1000, 2000}; rows +KL, +KL+NN.
- table4: CIFAR-10 (section 5.3, Table 4): ConvLarge, N_L in {4000, 8000}; rows +KL, +KL+NN.

A schedule names a complete set of training settings per table (every key of
drmm.config.SCHEDULE_KEYS: optimiser, rates, decay shape, momentum, epochs, batch, N_U,
augmentation), so a planned run inherits none of them from the data set's preset. "paper" is
Appendix A's; "cpu-hour" (table1 only) is the MNIST preset's recipe. The runs of PAPER_STEP's
schedules take the paper's step (drmm.step.paper_step): no term beyond Eq. 5-8, whatever the
preset adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drmm.config import CPU_HOUR_MNIST, LARGE_WEIGHTS, MNIST_WEIGHTS, PAPER_SCHEDULE


@dataclass(frozen=True)
class Table:
    title: str  # what the table shows
    preset: str  # drmm.config preset: the data set and its preprocessing
    arch: str  # the paper's network (Table 6), whatever the preset trains
    weights: dict  # Table 6's alpha_H / RC / KL / NN for the data set
    labels: tuple[int, ...]  # the paper's columns, N_L
    rows: dict[str, dict]  # row name -> loss overrides (alpha_kl / alpha_nn = 0 switch a term off)
    paper: dict[str, dict[int, float]]  # row -> N_L -> the paper's test error (%)
    model: str  # the paper's name for the network
    derived: dict[str, dict[int, float]] = field(default_factory=dict)  # Table 2's reductions


TABLES: dict[str, Table] = {
    "table1": Table(
        title="Table 1: semi-supervised test error on MNIST (N_U = 60,000)",
        preset="mnist",
        arch="conv_small",
        weights=MNIST_WEIGHTS,
        labels=(50, 100, 1000),
        rows={"DRMM": dict(alpha_kl=0.0, alpha_nn=0.0), "+NN": dict(alpha_kl=0.0),
              "+KL": dict(alpha_nn=0.0), "+KL+NN": {}},
        paper={"DRMM": {50: 21.73, 100: 13.41, 1000: 2.35},
               "+NN": {50: 22.10, 100: 12.28, 1000: 2.26},
               "+KL": {50: 2.46, 100: 1.36, 1000: 0.71},
               "+KL+NN": {50: 0.91, 100: 0.57, 1000: 0.6}},
        model="DRMM 5-layer (ConvSmall)",
        # Table 2: test error of DRMM minus that of the row, as printed in the paper.
        derived={"+NN": {50: -0.37, 100: 1.13, 1000: 0.09},
                 "+KL": {50: 19.27, 100: 12.05, 1000: 1.64},
                 "+KL+NN": {50: 20.82, 100: 12.84, 1000: 1.75}},
    ),
    "table3": Table(
        title="Table 3: semi-supervised test error on SVHN (N_U = 73,257)",
        preset="svhn",
        arch="conv_large",
        weights=LARGE_WEIGHTS,
        labels=(500, 1000, 2000),
        rows={"+KL": dict(alpha_nn=0.0), "+KL+NN": {}},
        paper={"+KL": {500: 11.11, 1000: 9.75, 2000: 8.44},
               "+KL+NN": {500: 9.85, 1000: 6.78, 2000: 6.50}},
        model="DRMM 9-layer (ConvLarge)",
    ),
    "table4": Table(
        title="Table 4: semi-supervised test error on CIFAR-10 (N_U = 50,000)",
        preset="cifar10",
        arch="conv_large",
        weights=LARGE_WEIGHTS,
        labels=(4000, 8000),
        rows={"+KL": dict(alpha_nn=0.0), "+KL+NN": {}},
        paper={"+KL": {4000: 23.24, 8000: 20.95}, "+KL+NN": {4000: 21.50, 8000: 17.16}},
        model="DRMM 9-layer (ConvLarge)",
    ),
}
ROW_NOTES = {"DRMM": "no KL, no NN penalty", "+NN": "NN penalty only", "+KL": "KL penalty only",
             "+KL+NN": "KL and NN penalties"}

# ConvLarge on 2 CPU cores runs at ~43 images/s: one epoch over 25,000 unlabeled images is 500
# steps, ~21 minutes a run (results/table4-fast.md). The rate ends at 1e-3, not 1e-4: over so
# few steps a decay to 1e-4 would spend half the run below 5e-3.
CONV_LARGE_FAST = dict(PAPER_SCHEDULE, epochs=1, lr_final=1e-3, unlabeled=25000)
SCHEDULES: dict[str, dict[str, dict]] = {
    "paper": {name: dict(PAPER_SCHEDULE) for name in TABLES},
    "fast": {
        # ConvSmall on 2 CPU cores: 3 epochs = 3,600 steps, 7-20 minutes a run (a run's speed
        # is in its table). The paper's optimiser, rates and exponential decay, in 3 epochs.
        "table1": dict(PAPER_SCHEDULE, epochs=3),
        "table3": CONV_LARGE_FAST,
        "table4": CONV_LARGE_FAST,
    },
    # MNIST in under an hour a run on 2 CPU cores (Adam, cosine, 20 epochs of 20 labeled + 80
    # unlabeled images a step, +-2 px shifts, graph prior, consistency term: drmm/config.py).
    # ConvLarge has no such recipe: an epoch alone takes hours there.
    "cpu-hour": {"table1": dict(CPU_HOUR_MNIST)},
}
# The schedules whose runs have the paper's objective alone; cpu-hour sets its own terms.
PAPER_STEP = ("paper", "fast")


def row_slug(row: str) -> str:
    """'+KL+NN' -> 'kl-nn', 'DRMM' -> 'drmm': the row's part of its run folder's name."""
    return row.lstrip("+").lower().replace("+", "-")


def run_name(row: str, n_labeled: int, seed: int) -> str:
    return f"{row_slug(row)}-nl{n_labeled}-seed{seed}"
