"""Ways to evaluate one trained run, compared on the same weights.

    python -m benchmarks.recipe.eval_variants runs/gp1_s0 --data-dir ../shared/data \
        --out results/recipe/eval_variants_s0.json

Training runs differ by their seed's luck; evaluations of one set of weights do not, so a
change in how a run is evaluated is measured paired, image by image: for each variant, its test
error and how many test images it fixes and breaks against the run's own evaluation (eval mode,
BatchNorm running statistics: the number the run recorded). Variants:

- bn_recomputed_N: BatchNorm statistics measured afresh (a cumulative average, as
  torch.optim.swa_utils.update_bn does) on the first N training images (labeled or not), in
  place of the running averages that lag the last steps' weights.
- tta_R: test-time augmentation, the softmax averaged over every translation of at most R
  pixels each way ((2R + 1)^2 of them), zero padded as training's `--augment translate` pads
  (drmm/data/augment.py).

Neither made drmm's evaluation (results/recipe.md, "Evaluation as trained"; MNIST N_L = 100,
seed 0): fresh statistics fixed 1 test image and broke 3; tta_1 fixed 11 and broke 15; tta_2
fixed 13 and broke 8, a difference within chance (exact McNemar p = 0.38) at 25 forward passes
an image.

Prints one line per variant and writes them as JSON.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import update_bn

from benchmarks.common import load_run, run_arguments
from drmm.checkpoint import resolve_checkpoint
from drmm.evaluate import predicted_classes
from drmm.files import write_json
from drmm.metrics import read_metrics


def recompute_bn(model, x_train: torch.Tensor, images: int = 5000, batch: int = 500) -> None:
    """The model's BatchNorm statistics measured afresh (a cumulative average) on the first
    `images` training images, in place (torch.optim.swa_utils.update_bn)."""
    update_bn((x_train[i:i + batch] for i in range(0, min(images, len(x_train)), batch)), model)


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (B, C, H, W) moved dy pixels down and dx right, the uncovered border zero."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]  # (B, C, H, W)


@torch.no_grad()
def tta_classes(model, x: torch.Tensor, radius: int, batch_size: int = 1000) -> torch.Tensor:
    """c-hat from the softmax averaged over every shift of at most `radius` pixels, (N,)."""
    model.eval()
    shifts = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    return torch.cat([sum(model(translate(b, dy, dx)).softmax(dim=1) for dy, dx in shifts
                          ).argmax(dim=1) for b in x.split(batch_size)])  # (N,)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_arguments(p)
    p.add_argument("--bn-images", type=int, nargs="+", default=[10000, 60000],
                   help="training images for each bn_recomputed variant")
    p.add_argument("--tta", type=int, nargs="+", default=[1, 2],
                   help="largest shift, pixels, of each tta variant")
    p.add_argument("--out", help="JSON to write")
    args = p.parse_args(argv)

    model, cfg, state, data = load_run(args.run, args.data_dir)  # eval mode
    x, y = data.x_test, data.y_test  # (N, C, H, W), (N,)
    base = predicted_classes(model, x)  # (N,) the run's own evaluation
    base_right = base == y

    def record(name: str, pred: torch.Tensor, seconds: float) -> dict:
        right = pred == y
        row = {"variant": name, "test_error": int((~right).sum()) / len(y),
               "fixed": int((right & ~base_right).sum()),  # wrong as trained, right now
               "broken": int((~right & base_right).sum()), "seconds": round(seconds, 1)}
        print(f"{name:>20}: test error {100 * row['test_error']:.2f} %  fixed {row['fixed']:3d}"
              f"  broken {row['broken']:3d}  ({row['seconds']} s)")
        return row

    rows = [record("as_trained", base, 0.0)]
    for n in args.bn_images:
        t = time.perf_counter()
        fresh = copy.deepcopy(model)
        recompute_bn(fresh, data.x_train, images=n)
        rows.append(record(f"bn_recomputed_{n}", predicted_classes(fresh, x),
                           time.perf_counter() - t))
    for r in args.tta:
        t = time.perf_counter()
        rows.append(record(f"tta_{r}", tta_classes(model, x, r), time.perf_counter() - t))
    metrics = resolve_checkpoint(args.run).parent / "metrics.json"  # what the run recorded
    recorded = (read_metrics(metrics)["test_error_percent"] / 100 if metrics.exists()
                else None)
    result = {"run": str(args.run), "recorded_test_error": recorded, "test_images": len(y),
              "variants": rows}
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
