"""Novelty: does the DRMM's rendering error tell other data from MNIST better than max-softmax?

    python -m benchmarks.own_data.novelty_auroc --checkpoint runs/mnist100 \
        --data-dir ../shared/data --out results/novelty_auroc.json

For a run trained on MNIST (28x28 grayscale), each image gets two scores, higher = less like
the training data: the rendering error under its predicted class (drmm/scores.py: the mean
over pixels of (I - I_hat)^2, in eval mode) and 1 - max softmax (Hendrycks & Gimpel 2017,
"A Baseline for Detecting Misclassified and Out-of-Distribution Examples"). In-distribution:
the MNIST test set. Out of distribution, each as many images as that:

- cifar10_gray: CIFAR-10 test images in grayscale (Pillow's luminance, L = 0.299 R + 0.587 G +
  0.114 B) resized to 28x28 (Pillow bilinear), from DIR/cifar10/cifar10.npz;
- mnist_inverted: the MNIST test digits inverted (255 - x);
- uniform_noise: pixels uniform in 0..255 (seed 0);
- mnist_rot180: the MNIST test digits upside down (rotated 180 degrees; 0, 1 and 8 stay digits,
  so this set cannot reach an AUROC of 1).

Each image goes through the run's own preprocessing (the drmm.load predictor's). The AUROC
(sklearn.metrics.roc_auc_score; 0.5 = chance, 1 = every OOD image scores above every MNIST one)
of each score for MNIST-test vs each set is printed as a table and written as JSON, with the
winner per set: the measurement drmm.scores.NOVELTY_SCORE is to be set by. --limit N keeps the
first N images of each set (a smoke run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import drmm
from benchmarks.common import load_cifar
from drmm import scores
from drmm.checkpoint import load_trained_model
from drmm.data import to_tensor_images
from drmm.data.mnist import load_mnist
from drmm.files import write_json

SCORES = ("render", "softmax")
OOD_SETS = ("cifar10_gray", "mnist_inverted", "uniform_noise", "mnist_rot180")


def cifar10_gray(data_dir: Path, n: int) -> np.ndarray:
    """The first n CIFAR-10 test images as uint8 (n, 28, 28): luminance, bilinear resize."""
    rgb = load_cifar(data_dir)["x_test"][:n]  # (n, 32, 32, 3) uint8
    return np.stack([np.asarray(Image.fromarray(im).convert("L").resize(
        (28, 28), Image.Resampling.BILINEAR)) for im in rgb])  # (n, 28, 28)


def image_sets(data_dir: Path, limit: int | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """uint8 (N, 28, 28) images: "mnist_test" and every set of OOD_SETS; MNIST's test labels."""
    arrays = load_mnist(data_dir)
    mnist, labels = arrays["x_test"][:limit], arrays["y_test"][:limit]  # (N, 28, 28), (N,)
    n = len(mnist)
    return {
        "mnist_test": mnist,
        "cifar10_gray": cifar10_gray(data_dir, n),
        "mnist_inverted": 255 - mnist,
        "uniform_noise": np.random.default_rng(0).integers(0, 256, size=mnist.shape,
                                                           dtype=np.uint8),
        "mnist_rot180": np.ascontiguousarray(mnist[:, ::-1, ::-1]),
    }, labels


def raw_scores(predictor, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Both scores (higher = less typical) of uint8 images under the predictor's run."""
    x = predictor.preprocessor(to_tensor_images(images))  # (N, 1, 28, 28) as the run saw them
    s = scores.score_images(predictor.model, x, batch_size, render=True,
                            device=predictor.device)
    return {"render": s.render_error.double().numpy(),
            "softmax": scores.softmax_novelty(s.logits).numpy(),
            "predicted": s.logits.argmax(dim=1).numpy()}


def auroc(in_dist: np.ndarray, ood: np.ndarray) -> float:
    labels = np.r_[np.zeros(len(in_dist)), np.ones(len(ood))]
    return float(roc_auc_score(labels, np.r_[in_dist, ood]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a drmm run trained on MNIST")
    p.add_argument("--data-dir", required=True, help="holds mnist/ and cifar10/cifar10.npz")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--limit", type=int, help="the first N images of each set (a smoke run)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    started = time.perf_counter()
    predictor = drmm.load(a.checkpoint, a.device, novelty=False)
    if predictor.image_shape != (1, 28, 28):
        sys.exit(f"novelty_auroc: {a.checkpoint} takes {predictor.image_shape} images, not"
                 " MNIST's (1, 28, 28); pass a run trained on MNIST")
    _, cfg, state = load_trained_model(a.checkpoint)
    sets, labels = image_sets(Path(a.data_dir), a.limit)
    raw = {name: raw_scores(predictor, images, a.batch_size) for name, images in sets.items()}
    result = {
        "checkpoint": str(a.checkpoint),
        "dataset": cfg.train.dataset,
        "supervised_only": cfg.train.supervised_only,
        "renders": scores.renders(cfg) is None,
        "images_per_set": len(sets["mnist_test"]),
        "mnist_test_error": float((raw["mnist_test"]["predicted"] != labels).mean()),
        "novelty_scales": state.get("novelty_scales"),
        "auroc": {}, "winner": {},
        "median_score": {name: {s: float(np.median(r[s])) for s in SCORES}
                         for name, r in raw.items()},
    }
    for name in OOD_SETS:
        result["auroc"][name] = {s: auroc(raw["mnist_test"][s], raw[name][s]) for s in SCORES}
        result["winner"][name] = max(SCORES, key=lambda s: result["auroc"][name][s])
    result["mean_auroc"] = {s: float(np.mean([result["auroc"][n][s] for n in OOD_SETS]))
                            for s in SCORES}
    result["seconds"] = time.perf_counter() - started
    print(f"AUROC, MNIST test ({result['images_per_set']} images) vs each set; run"
          f" {a.checkpoint} (test error {100 * result['mnist_test_error']:.2f} %)")
    print("| OOD set | rendering error | 1 - max softmax | better |")
    print("| --- | ---: | ---: | --- |")
    for name in OOD_SETS:
        r = result["auroc"][name]
        print(f"| {name} | {r['render']:.4f} | {r['softmax']:.4f} | {result['winner'][name]} |")
    m = result["mean_auroc"]
    print(f"| mean | {m['render']:.4f} | {m['softmax']:.4f} |"
          f" {max(SCORES, key=m.get)} |")
    write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
