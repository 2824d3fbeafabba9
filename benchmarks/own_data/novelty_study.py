"""Novelty scores judged across trained models and out-of-distribution sets: the rendering
error, max-softmax, and their rank average.

    python -m benchmarks.own_data.novelty_study --data-dir ../shared/data \
        --run digits=runs/digits --run mnist_png=runs/mnist-png --in mnist_png=held-out/ \
        --run cifar_png=runs/photos --out results/novelty_study.json

For each run (NAME=RUN_DIR), the in-distribution images are its test set (or --in NAME=FOLDER, a
folder of images, for a run trained without one), at most --limit of them, evenly spaced. Each
out-of-distribution set has as many images, at the run's size and channels:

- noise: pixels uniform in 0..255 (seed 0);
- inverted: the in-distribution images, 255 - x;
- rot180: the in-distribution images upside down (some stay in distribution: 0, 1, 8);
- foreign: another data set, resized (Pillow bilinear): CIFAR-10 test photos (in grayscale,
  luminance, for a grayscale run), or MNIST test digits (as RGB) for a colour run;
- shuffled: the in-distribution images with their pixel positions shuffled (one permutation per
  image, seed 0): the same pixel values, no shape.

Scores, higher = less typical: `render` (the rendering error under the predicted class,
drmm/scores.py), `softmax` (1 - max q(c|I), Hendrycks & Gimpel 2017), and two combinations of
the two scores' ranks among the run's training images (their empirical distribution functions
on --calibration training images, evenly spaced): `rank`, their mean, and `max`, the larger
(atypical by either score); and `max99`, the larger of the two scores each over its training
99th percentile: `max` in the form `drmm predict` can give from what every run stores (both
scales, drmm.scores.NOVELTY_KEYS), > 1 where either score is past its 99th percentile. The
AUROC (sklearn.metrics.roc_auc_score; 0.5: chance) of each score for in-distribution vs each
set; a table per run, means, and JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

import drmm
from drmm import scores
from drmm.checkpoint import load_trained_model
from drmm.data import load_run_data, to_tensor_images
from drmm.data.folder import image_files
from drmm.data.mnist import load_mnist
from drmm.files import write_json

SCORES = ("render", "softmax", "rank", "max", "max99")
SETS = ("noise", "inverted", "rot180", "foreign", "shuffled")


def resized(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W[, 3]) images as (N, size, size[, channels]): luminance or RGB, bilinear."""
    mode = "L" if channels == 1 else "RGB"
    out = [np.asarray(Image.fromarray(im).convert(mode).resize(
        (size, size), Image.Resampling.BILINEAR)) for im in images]
    return np.stack(out)


def foreign(data_dir: Path, n: int, size: int, channels: int) -> np.ndarray:
    """n images of another data set at the run's size: CIFAR-10 for grayscale runs, MNIST for
    colour runs."""
    if channels == 1:
        with np.load(data_dir / "cifar10" / "cifar10.npz") as f:
            return resized(f["x_test"][:n], size, 1)
    return resized(load_mnist(data_dir)["x_test"][:n], size, 3)


def shuffled(images: np.ndarray) -> np.ndarray:
    """Each image's pixel positions permuted (its own permutation; channels stay together)."""
    rng = np.random.default_rng(0)
    n, h, w = images.shape[:3]
    flat = images.reshape(n, h * w, -1)  # (N, H*W, C)
    out = np.stack([im[rng.permutation(h * w)] for im in flat])  # (N, H*W, C)
    return out.reshape(images.shape)


def in_distribution(name: str, run: str, held_out: str | None, limit: int,
                    predictor) -> np.ndarray:
    """uint8 (N, H, W[, C]) in-distribution images: the run's test set, or a folder's."""
    if held_out:
        files = image_files(Path(held_out))
        files = [files[i] for i in scores.calibration_subset(len(files), limit).tolist()]
        return np.stack([predictor.read_file(f) for f in files])
    _, cfg, state = load_trained_model(run)
    data = load_run_data(cfg, state)
    if not data.has_test:
        raise SystemExit(f"novelty_study: {name} ({run}) has no test set; pass --in {name}=DIR")
    pixels = data.x_test.pixels[scores.calibration_subset(len(data.x_test), limit)]
    x = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    return x[..., 0] if x.shape[-1] == 1 else x  # (N, H, W[, C])


def raw_scores(predictor, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """render and softmax scores of uint8 images under the predictor's run."""
    x = predictor.preprocessor(to_tensor_images(images))  # (N, C, H, W) as the run saw them
    s = scores.score_images(predictor.model, x, batch_size, render=True,
                            device=predictor.device)
    return {"render": s.render_error.double().numpy(),
            "softmax": scores.softmax_novelty(s.logits).numpy()}


def training_reference(run: str, predictor, n: int, batch_size: int) -> dict[str, np.ndarray]:
    """Each score, sorted, over n training images of the run (evenly spaced): the reference
    the rank score ranks against."""
    _, cfg, state = load_trained_model(run)
    data = load_run_data(cfg, state)
    x = data.x_train[scores.calibration_subset(len(data.x_train), n)]  # (n, C, H, W)
    s = scores.score_images(predictor.model, x, batch_size, render=True,
                            device=predictor.device)
    return {"render": np.sort(s.render_error.double().numpy()),
            "softmax": np.sort(scores.softmax_novelty(s.logits).numpy())}


def with_rank(raw: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """raw plus `rank`: the mean of each score's empirical distribution function value among
    the training images (0: below all of them, 1: above all), `max`, the larger, and `max99`,
    the larger of the two scores over their training 99th percentiles."""
    cdf = [np.searchsorted(reference[k], raw[k], side="right") / len(reference[k])
           for k in ("render", "softmax")]
    over = [raw[k] / np.quantile(reference[k], scores.NOVELTY_QUANTILE)
            for k in ("render", "softmax")]
    return {**raw, "rank": np.mean(cdf, axis=0), "max": np.max(cdf, axis=0),
            "max99": np.max(over, axis=0)}


def auroc(in_dist: np.ndarray, ood: np.ndarray) -> float:
    labels = np.r_[np.zeros(len(in_dist)), np.ones(len(ood))]
    return float(roc_auc_score(labels, np.r_[in_dist, ood]))


def study_run(name: str, run: str, a, held_out: str | None) -> dict:
    """One run: its sets, scores and AUROCs."""
    predictor = drmm.load(run, novelty=False)
    c, h, _ = predictor.image_shape
    inside = in_distribution(name, run, held_out, a.limit, predictor)
    n = len(inside)
    sets = {"noise": np.random.default_rng(0).integers(0, 256, inside.shape, dtype=np.uint8),
            "inverted": 255 - inside,
            "rot180": np.ascontiguousarray(inside[:, ::-1, ::-1]),
            "foreign": foreign(Path(a.data_dir), n, h, c),
            "shuffled": shuffled(inside)}
    reference = training_reference(run, predictor, a.calibration, a.batch_size)
    raw = {k: with_rank(raw_scores(predictor, v, a.batch_size), reference)
           for k, v in {"in": inside, **sets}.items()}
    table = {s: {score: auroc(raw["in"][score], raw[s][score]) for score in SCORES}
             for s in SETS}
    mean = {score: float(np.mean([table[s][score] for s in SETS])) for score in SCORES}
    return {"run": run, "in_distribution": held_out or "the run's test set", "images": n,
            "image_shape": [c, h, h], "auroc": table, "mean": mean}


def print_table(results: dict) -> None:
    print("| run | OOD set | " + " | ".join(SCORES) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in SCORES) + " |")
    for name, r in results.items():
        for s in [*SETS, "mean"]:
            row = r["auroc"][s] if s != "mean" else r["mean"]
            best = max(SCORES, key=row.get)
            cells = [f"**{row[k]:.3f}**" if k == best else f"{row[k]:.3f}" for k in SCORES]
            print(f"| {name} | {s} | " + " | ".join(cells) + " |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    p.add_argument("--in", dest="held_out", action="append", default=[],
                   metavar="NAME=FOLDER", help="in-distribution images of a run without test set")
    p.add_argument("--data-dir", required=True, help="holds mnist/ and cifar10/cifar10.npz")
    p.add_argument("--limit", type=int, default=1000, help="in-distribution images per run")
    p.add_argument("--calibration", type=int, default=2000,
                   help="training images the rank score ranks against")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--out", help="the JSON file to write")
    a = p.parse_args(argv)
    started = time.perf_counter()
    held = dict(x.split("=", 1) for x in a.held_out)
    runs = dict(x.split("=", 1) for x in a.run)
    results = {name: study_run(name, run, a, held.get(name)) for name, run in runs.items()}
    overall = {s: float(np.mean([r["mean"][s] for r in results.values()])) for s in SCORES}
    print_table(results)
    print("overall mean AUROC: " + ", ".join(f"{s} {v:.3f}" for s, v in overall.items()))
    report = {"runs": results, "overall_mean": overall, "seconds": time.perf_counter() - started}
    if a.out:
        write_json(a.out, report)
    return report


if __name__ == "__main__":
    main()
