"""The run's TensorBoard writer (RUN_DIR/tb): every number of the epoch's record as a scalar
(drmm/records.py), and as pictures the confusion matrix of the test set and test images above
their renderings (the top-down pass of section 4.1).

The matrix is the epoch's own evaluation, drawn (matplotlib: about 0.1 s for ten classes), and the
renderings one top-down pass of a few images: on a data set as small as digits, whose epochs take
a second or two, drawing them every epoch would slow training by a tenth. So they are drawn after
an epoch only while the time spent on them stays within FIGURE_SHARE of the run's training time,
and always after the last epoch: every epoch on MNIST or CIFAR-10, every few on digits.
"""

from __future__ import annotations

import time

from torch.utils.tensorboard import SummaryWriter

from drmm import figures
from drmm.evaluate import reconstruct

FIGURE_SHARE = 0.02  # the share of training time the pictures may take
RENDERED = 8  # images shown above their renderings
RENDERED_WIDTH = 600  # pixels the renderings picture is scaled up to, at most


class Board(SummaryWriter):
    """A SummaryWriter that also draws the run's pictures, within its time share."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.figure_seconds = 0.0  # time spent drawing pictures in this process

    def epoch_figures(self, record: dict, counts, model, shown, class_names: list[str],
                      last: bool) -> bool:
        """Draw the epoch's pictures if the time share allows (or it is the last epoch);
        returns whether they were drawn. counts: the (K, K) confusion counts of the epoch's
        evaluation (None: none this epoch, no matrix); shown: the images (test images where
        there are any) whose first RENDERED are drawn above their renderings."""
        if not last and self.figure_seconds > FIGURE_SHARE * record["wall_seconds"]:
            return False
        started = time.perf_counter()
        step = record["epoch"]
        if counts is not None:
            fig = figures.confusion_figure(counts.numpy(), class_names, f"epoch {step}")
            self.add_image("figures/confusion_matrix", figures.figure_rgb(fig), step,
                           dataformats="HWC")
        x = shown[:RENDERED]  # (n, C, H, W)
        grid = figures.image_grid([figures.stretched(x), figures.stretched(reconstruct(model, x))])
        zoom = max(1, RENDERED_WIDTH // grid.shape[1])  # whole pixels: crisp
        grid = grid.repeat(zoom, axis=0).repeat(zoom, axis=1)  # (zoom H', zoom W', 3)
        self.add_image("figures/renderings", grid, step, dataformats="HWC")
        self.flush()
        self.figure_seconds += time.perf_counter() - started
        return True
