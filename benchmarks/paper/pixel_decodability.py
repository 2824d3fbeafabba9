"""Is each latent of the rendered set visible in its pixels at all? (section 5.4)

`drmm analyze` found slant and the light direction at chance in every layer of the DRMM and of
the DCN, the input image included. Before that reads as "the networks dropped them", this asks
the pixels themselves, with decoders of rising strength, to predict each latent's 10
equal-frequency bins (bin edges at the training images' quantiles; chance 90 %):

- linear_pca10: the analysis' own decoder on the image layer: the first 10 principal
  components, standardised, multinomial logistic regression; fit on --fit training images;
- linear_pixels: the same without the PCA, on every pixel;
- cnn: ConvSmall trained supervised on the bins of every training image (drmm's own
  --supervised-only training, all images labeled), --epochs epochs of Adam 1e-3 -> 1e-5.

Errors on the test images, which none of the decoders saw. If a latent stays near chance even
for the CNN, no layer of any network can be expected to keep it: it is (nearly) invisible in a
32x32 image. Prints a table and writes JSON.

    python -m benchmarks.paper.pixel_decodability --data runs/synthetic/synthetic.npz \
        --out results/pixel_decodability.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from drmm.analysis.decoding import DecodingConfig, linear_probe, quantise
from drmm.config import preset
from drmm.data import Dataset, load_arrays, to_tensor_images
from drmm.errors import DRMMError
from drmm.files import write_json
from drmm.train import train

DECODERS = ("linear_pca10", "linear_pixels", "cnn")


def linear_errors(x_fit, bins_fit, x_test, bins_test, components: int) -> float:
    """Held-out error of the analysis' decoder on the pixels (or on their first PCs)."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    clf = linear_probe(DecodingConfig().max_iter)
    if components:
        clf = make_pipeline(PCA(n_components=components, random_state=0), clf)
    clf.fit(x_fit, bins_fit)
    return float(np.mean(clf.predict(x_test) != bins_test))


def cnn_error(x_train, bins_train, x_test, bins_test, epochs: int, arch: str) -> float:
    """Test error of ConvSmall trained supervised on every training image's bin."""
    cfg = preset("npz:bins")
    cfg.model.arch = arch
    t = cfg.train
    t.labels, t.supervised_only, t.tensorboard, t.epochs = None, True, False, epochs
    t.optimizer, t.lr, t.lr_final, t.decay = "adam", 1e-3, 1e-5, "cosine"
    data = Dataset("latent bins", x_train, torch.from_numpy(bins_train), x_test,
                   torch.from_numpy(bins_test), num_classes=int(bins_train.max()) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        return train(cfg, Path(tmp) / "run", data=data,
                     progress=False)["test_error_percent"] / 100


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="FILE.npz from `drmm render`")
    p.add_argument("--latents", nargs="+", help="latent names (default: every one)")
    p.add_argument("--decoders", nargs="+", choices=DECODERS, default=list(DECODERS))
    p.add_argument("--bins", type=int, default=10, help="equal-frequency bins (the paper: 10)")
    p.add_argument("--fit", type=int, default=10000, help="training images the linear fits use")
    p.add_argument("--epochs", type=int, default=2, help="CNN epochs over the training images")
    p.add_argument("--arch", default="conv_small", help="the CNN decoder's network")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", help="JSON file to write")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    arrays = load_arrays(f"npz:{a.data}")
    if "z_train" not in arrays or "z_test" not in arrays:
        raise DRMMError(f"{a.data} has no z_train / z_test latents; make it with `drmm render`")
    names = [str(s) for s in arrays["z_names"]]
    unknown = sorted(set(a.latents or []) - set(names))
    if unknown:
        raise DRMMError(f"unknown latents {unknown}; {a.data} has {names}")
    x_train = to_tensor_images(arrays["x_train"])  # (N, C, H, W) in [0, 1]
    x_test = to_tensor_images(arrays["x_test"])  # (M, C, H, W)
    flat_fit = x_train[:a.fit].flatten(1).numpy()  # (n_fit, C*H*W)
    flat_test = x_test.flatten(1).numpy()  # (M, C*H*W)
    result = {"data": a.data, "bins": a.bins, "fit_images": len(flat_fit),
              "train_images": len(x_train), "test_images": len(x_test), "cnn_epochs": a.epochs,
              "cnn_arch": a.arch, "torch": torch.__version__, "latents": {}}
    for latent in a.latents or names:
        k = names.index(latent)
        z_train, z_test = arrays["z_train"][:, k], arrays["z_test"][:, k]
        bins_train = quantise(z_train, z_train, a.bins)  # (N,)
        bins_test = quantise(z_train, z_test, a.bins)  # (M,)
        majority = np.bincount(bins_train, minlength=a.bins).argmax()
        row = {"chance": float(np.mean(bins_test != majority))}
        for decoder in a.decoders:
            t0 = time.perf_counter()
            if decoder == "cnn":
                row[decoder] = cnn_error(x_train, bins_train, x_test, bins_test, a.epochs, a.arch)
            else:
                components = 10 if decoder == "linear_pca10" else 0
                row[decoder] = linear_errors(flat_fit, bins_train[:a.fit], flat_test, bins_test,
                                             components)
            row[f"{decoder}_seconds"] = time.perf_counter() - t0
        result["latents"][latent] = row
        print(f"{latent}: " + ", ".join(f"{d} {100 * row[d]:.1f} %" for d in a.decoders)
              + f" (chance {100 * row['chance']:.1f} %)", flush=True)
    if a.out:
        write_json(a.out, result)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
