"""Would the graph prior help on photos if its graph were built on a learned representation?

The graph prior (drmm/graph_prior.py) spreads the labels over a nearest-neighbour graph of the
raw training images. On a colour folder of own_data.py (CIFAR-10 written out as PNG) pixel
neighbours rarely share a class. This script measures, on the folder's unlabeled images
(true classes read back from the CIFAR-10 index in each file's name), the error of

  - label spreading over the graph of the preprocessed pixels (what --graph-prior uses),
  - label spreading over the graph of a finished run's learned features (the mean-pooled top
    feature map, the classifier's input, L2-normalised as in Iscen et al. 2019),
  - the run's own predictions,

and, where the feature graph and the run disagree, which of them is right. A supervised-only
run's features are what a two-stage recipe could build the graph on before the DRMM trains:

    python -m benchmarks.own_data.photo_graph runs/own-photos-2/supervised-only \\
        runs/own-photos-2/ep40 --data-dir ../shared/data \\
        --out runs/photo_graph_draw2.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import load_cifar, load_run
from drmm.files import write_json
from drmm.graph_prior import propagate_labels

BATCH = 500  # images a forward pass
COVERAGES = (0.25, 0.5, 0.75)  # fractions of the unlabeled images, most certain first


@torch.no_grad()
def features_and_classes(model, x) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(N, C_L) L2-normalised classifier inputs, (N,) predicted classes and (N,) their q(c|I),
    in eval mode."""
    pooled = []
    hook = model.classifier.register_forward_hook(lambda m, inp, out: pooled.append(inp[0]))
    logits = torch.cat([model(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])  # (N, K)
    hook.remove()
    feats = torch.nn.functional.normalize(torch.cat(pooled), dim=1)  # (N, C_L)
    q, guess = logits.softmax(dim=1).max(dim=1)  # (N,), (N,)
    return feats, guess.numpy(), q.numpy()


def error_at_coverage(wrong: np.ndarray, certainty: np.ndarray) -> dict[str, float]:
    """Error among the most certain fraction f of the images, for each f in COVERAGES: how
    good a thresholded pseudo-label would be, the graph's and the run's compared alike."""
    order = np.argsort(-certainty, kind="stable")  # (N,) most certain first
    return {f"{f:.2f}": float(wrong[order[:round(f * len(order))]].mean()) for f in COVERAGES}


def true_classes(paths: list[str], y_source: np.ndarray) -> np.ndarray:
    """(N,) classes of a built folder's images: each file is named by its CIFAR-10 index."""
    return np.array([y_source[int(Path(p).stem)] for p in paths])


def spread(x, labeled, y, k, unl) -> dict:
    """Label spreading from the labeled images; its error on the unlabeled images."""
    t0 = time.perf_counter()
    pseudo, certainty = propagate_labels(x, labeled, y[labeled], k)  # (N,), (N,)
    pseudo, certainty = pseudo.numpy(), certainty.numpy()
    wrong = pseudo[unl] != y[unl]  # (N_U,)
    return {"pseudo": pseudo, "seconds": round(time.perf_counter() - t0, 1),
            "error": float(wrong.mean()),
            "error_at_coverage": error_at_coverage(wrong, certainty[unl]),
            "certainty_weighted_error": float((certainty[unl] * wrong).sum()
                                              / certainty[unl].sum())}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="finished runs on the same own_data.py CIFAR folder")
    p.add_argument("--data-dir", default=None, help="where CIFAR-10 is (for the true classes)")
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    y_source = load_cifar(args.data_dir)["y_train"].astype(np.int64)  # (50000,)
    result, pixels = {"runs": []}, None
    for run in args.runs:
        model, cfg, state, data = load_run(run)  # eval mode
        labeled = np.asarray(state["labeled_indices"])  # (N_L,) the labels the run was given
        y = true_classes(data.paths_train, y_source)  # (N,)
        if not np.array_equal(y[labeled], data.y_train.numpy()[labeled]):
            raise SystemExit(f"{run}: the labeled files' classes are not CIFAR-10's at the index"
                             " in their names; pass a run on a benchmarks/own_data/own_data.py"
                             " folder built from this --data-dir")
        unl = np.ones(len(y), dtype=bool)  # (N,) the images whose label the run never saw
        unl[labeled] = False
        k = cfg.model.num_classes
        if result.get("folder", cfg.train.dataset) != cfg.train.dataset:
            raise SystemExit(f"{run} trained on {cfg.train.dataset}, not {result['folder']};"
                             " pass runs on one folder (they share its pixel graph)")
        if pixels is None:  # the same folder for every run: one pixel graph
            pixels = spread(data.x_train, labeled, y, k, unl)
            result |= {"folder": cfg.train.dataset, "labeled": len(labeled),
                       "unlabeled": int(unl.sum()),
                       "pixel_graph": {k_: v for k_, v in pixels.items() if k_ != "pseudo"}}
            print(f"{cfg.train.dataset}: {len(labeled)} labeled, {int(unl.sum())} unlabeled")
            print(f"pixel graph: {100 * pixels['error']:.1f} % of the unlabeled images wrong"
                  f" ({100 * pixels['certainty_weighted_error']:.1f} % weighted by certainty)")
        feats, guess, q = features_and_classes(model, data.x_train)
        graph = spread(feats, labeled, y, k, unl)
        differ = unl & (graph["pseudo"] != guess)  # (N,)
        row = {"run": str(run), "run_error": float((guess[unl] != y[unl]).mean()),
               "run_error_at_coverage": error_at_coverage(guess[unl] != y[unl], q[unl]),
               "feature_graph": {k_: v for k_, v in graph.items() if k_ != "pseudo"},
               "disagree": int(differ.sum()),
               "graph_right": int((differ & (graph["pseudo"] == y)).sum()),
               "run_right": int((differ & (guess == y)).sum())}
        result["runs"].append(row)
        print(f"{run}: the run {100 * row['run_error']:.1f} % wrong; the graph on its features"
              f" {100 * graph['error']:.1f} % ({100 * graph['certainty_weighted_error']:.1f} %"
              f" weighted); they disagree on {row['disagree']}: graph right on"
              f" {row['graph_right']}, run on {row['run_right']}")
        for f, err in row["run_error_at_coverage"].items():
            feat, pix = graph["error_at_coverage"][f], pixels["error_at_coverage"][f]
            print(f"  the most certain {float(f):.0%}: run {100 * err:.1f} % wrong, feature"
                  f" graph {100 * feat:.1f} %, pixel graph {100 * pix:.1f} %")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
