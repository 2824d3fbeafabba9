"""How good are the graph prior's pseudo-labels, and what do they say about a run's largest mix-up?

Label spreading over the training images' nearest-neighbour graph (drmm/graph_prior.py), from
the labeled images of a finished run; then, on the training images, the pseudo-labels' error
(plain and weighted by certainty), their classes on the run's largest training mix-up (the
images of class T it calls P), and, where the run and the graph disagree, which of them is
right, by the graph's certainty: would keeping the graph's pull on for the whole run help?
results/recipe.md, "MNIST: the graph prior" and "... for one epoch" (its record:
results/recipe/graph_labels.jsonl, a line per run):

    python -m benchmarks.recipe.graph_labels runs/mnist_preset_s1 --data-dir ../shared/data \\
        --out runs/graph_labels_s1.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import load_run, run_arguments
from drmm.evaluate import count_confusion, predicted_classes, worst_confusion
from drmm.files import write_json
from drmm.graph_prior import graph_pseudo_labels

CERTAINTIES = (0.0, 0.5, 0.7, 0.8, 0.9)  # lower bounds of the disagreement table's rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_arguments(p)
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    model, cfg, state, data = load_run(args.run, args.data_dir)  # eval mode
    labeled = np.asarray(state["labeled_indices"])  # (N_L,)
    y = data.y_train.numpy()  # (N,)
    k = cfg.model.num_classes
    t0 = time.perf_counter()
    pseudo, certainty = graph_pseudo_labels(data.x_train, labeled, y[labeled], k)  # (N,), (N,)
    seconds = time.perf_counter() - t0
    pseudo, certainty = pseudo.numpy(), certainty.numpy()
    wrong = pseudo != y  # (N,)
    guess = predicted_classes(model, data.x_train)  # (N,) the run's classes
    true, pred, n = worst_confusion(count_confusion(data.y_train, guess, k))
    guess = guess.numpy()
    cell = (y == true) & (guess == pred)  # (N,) the run's largest training mix-up
    differ = pseudo != guess  # (N,) the graph and the run disagree
    disagree = [{"certainty_at_least": c, "images": int(kept.sum()),
                 "disagree": int((kept & differ).sum()),
                 "graph_right": int((kept & differ & ~wrong).sum()),
                 "run_right": int((kept & differ & (guess == y)).sum())}
                for c, kept in ((c, certainty >= c) for c in CERTAINTIES)]
    result = {
        "run": str(args.run), "labels": len(labeled), "images": len(y),
        "seconds": round(seconds, 1),
        "pseudo_label_error": float(wrong.mean()),
        "certainty_weighted_error": float((certainty * wrong).sum() / certainty.sum()),
        "mix_up": {"true": int(true), "predicted": int(pred), "images": int(n),
                   "pseudo_labels": np.bincount(pseudo[cell], minlength=k).tolist(),
                   "mean_certainty": float(certainty[cell].mean()) if n else None},
        "run_error": float((guess != y).mean()),
        "disagreements": disagree,
    }
    print(f"pseudo-labels of {len(y)} training images: {100 * result['pseudo_label_error']:.1f} %"
          f" wrong ({100 * result['certainty_weighted_error']:.1f} % weighted by certainty),"
          f" {seconds:.0f} s")
    print(f"the run calls {n} training {true}s {pred}; the graph calls them"
          f" {result['mix_up']['pseudo_labels']} (counts by class)")
    print(f"the run calls {100 * result['run_error']:.2f} % of the training images wrong; where"
          " it and the graph disagree:")
    for row in disagree:
        print(f"  certainty >= {row['certainty_at_least']}: {row['disagree']} of {row['images']}"
              f" images, the graph right on {row['graph_right']}, the run on {row['run_right']}")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
