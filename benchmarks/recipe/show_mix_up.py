"""Pictures of a trained run's largest mix-up: a class mode that no labeled image shows.

    python -m benchmarks.recipe.show_mix_up runs/mnist_preset_s1 --data-dir ../shared/data \
        --out results/recipe/mix_up_seed1.png

Rows: the run's labeled images of the true class, those of the predicted class, test images
of the true class given the wrong label, and test images of the true class classified right.
The mix-up is the largest off-diagonal cell of the test confusion matrix unless --true and
--predicted name one (class indices). Prints the cell and writes the PNG (results/recipe.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import load_run, run_arguments
from drmm.evaluate import count_confusion, predicted_classes, save_image_grid, worst_confusion


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_arguments(p)
    p.add_argument("--true", type=int, default=None, help="true class (default: worst mix-up)")
    p.add_argument("--predicted", type=int, default=None, help="predicted class")
    p.add_argument("--n", type=int, default=10, help="images per row")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    if (args.true is None) != (args.predicted is None):
        p.error("give --true and --predicted together (one cell), or neither (the worst mix-up)")

    model, cfg, state, data = load_run(args.run, args.data_dir)  # eval mode
    guess = predicted_classes(model, data.x_test)  # (N,)
    counts = count_confusion(data.y_test, guess, cfg.model.num_classes)  # (K, K)
    true, pred, n = worst_confusion(counts)
    if args.true is not None and args.predicted is not None:
        true, pred = args.true, args.predicted
        n = int(counts[true, pred])
    labeled = torch.from_numpy(np.asarray(state["labeled_indices"]))  # (N_L,)
    names = data.class_names
    rows = [data.x_train[labeled[data.y_train[labeled] == true]][:args.n],
            data.x_train[labeled[data.y_train[labeled] == pred]][:args.n],
            data.x_test[(data.y_test == true) & (guess == pred)][:args.n],
            data.x_test[(data.y_test == true) & (guess == true)][:args.n]]
    titles = [f"labeled {names[true]}", f"labeled {names[pred]}",
              f"test {names[true]} called {names[pred]} ({n} of"
              f" {int(counts[true].sum())})", f"test {names[true]} called {names[true]}"]
    keep = [(r, t) for r, t in zip(rows, titles, strict=True) if len(r)]
    save_image_grid([r for r, _ in keep], args.out, [t for _, t in keep])
    result = {"true": names[true], "predicted": names[pred], "images": n,
              "of": int(counts[true].sum()), "out": args.out}
    print(f"{n} of {result['of']} test {names[true]} called {names[pred]}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
