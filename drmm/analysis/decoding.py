"""Linear decoding of the nuisance latents from each layer (section 5.4, Figure 4).

For a trained model and rendered test images with known latents (drmm/synthetic):
1. take each layer's features (`source`): layer 0 is the model's input image, layer l = 1..L
   conv layer l, and a last layer, the class scores, where the paper says the DRMM finally
   drops the nuisances. What a conv layer gives:
   - "bottom_up" (the paper's analysis): its output (after BatchNorm, ReLU and its max-pool);
   - "top_down": the template z(l) the top-down pass renders there from c-hat (layer 0: the
     rendered image I-hat), where a DRMM must keep what it needs to reconstruct;
   - "switches": its latent switches themselves, a and the one-hot t, as 0/1 maps;
2. reduce them to their first 10 principal components (n_components 0: keep every feature);
3. quantise each latent into 10 bins at its quantiles (equal-frequency bins, so chance is 90 %);
4. train a linear classifier (scikit-learn multinomial logistic regression on the standardised
   components) to predict the bin, and report its classification error.

What is fit where (the paper does not say): the test images (at most `max_images` of them, a
seeded random subset) are split in two halves. The PCA, the bin edges and the classifier are fit
on the first half; the error is measured on the second, held-out half. Chance is the held-out
error of always answering the first half's most frequent bin (about 0.9).

The model runs in eval mode (BatchNorm running averages), as at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drmm.errors import DRMMError
from drmm.model import DRMM

SOURCES = ("bottom_up", "top_down", "switches")


@dataclass
class DecodingConfig:
    source: str = "bottom_up"  # the features decoded: bottom_up | top_down | switches (above)
    n_components: int = 10  # principal components kept per layer (the paper: 10); 0: no PCA
    n_bins: int = 10  # quantile bins per latent (the paper: 10)
    max_images: int = 4000  # test images used, half to fit and half held out; 0 = all
    seed: int = 0  # the image subset, the fit / held-out split and the randomized PCA
    batch_size: int = 500  # images per forward pass
    max_iter: int = 2000  # logistic regression iterations
    blas_threads: int = 1  # BLAS threads for PCA and classifiers: the products are small, and
    # extra threads mostly spin (4x the CPU time in our tests on a busy 2-core machine)


def layer_names(model: DRMM) -> list[str]:
    """Names of the decoded layers, index 0 = the input image."""
    return ["image", *(f"conv{i + 1}" for i in range(len(model.layers))), "class scores"]


@torch.no_grad()
def activations(model: DRMM, x: torch.Tensor, layer: int, batch_size: int = 500,
                source: str = "bottom_up") -> np.ndarray:
    """Flattened features of `layer` (see layer_names) for images x, (N, D) float32; source:
    see the module docstring (the image and the class scores are the same for every source)."""
    if source not in SOURCES:
        raise DRMMError(f"unknown decoding source {source!r}; use one of {SOURCES}")
    n_conv = len(model.layers)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        h = x[i:i + batch_size]  # (b, C, H, W)
        if source == "top_down" and layer <= n_conv:
            td = model.top_down(model.bottom_up(h))
            # templates run top layer first: z(l), the input of layer l's down pass
            h = td.image if layer == 0 else td.templates[n_conv - layer]  # (b, C_l, H', W')
        elif source == "switches" and 0 < layer <= n_conv:
            s = model.bottom_up(h).switches[layer - 1]
            maps = [s.a] if s.t is None else [s.a, s.t_onehot()]  # (b, C_l, H_l, W_l) bool
            h = torch.cat([m.flatten(1) for m in maps], dim=1).float()  # (b, D)
        else:  # bottom_up, the image, the class scores
            for conv_layer in model.layers[:layer]:
                h, _ = conv_layer.up(h)  # (b, C_l, H_l, W_l)
            if layer == n_conv + 1:
                h = model.classifier(h.mean(dim=(2, 3)))  # (b, K) class scores
        out.append(h.flatten(1).float().cpu().numpy())  # (b, D)
    model.train(was_training)
    return np.concatenate(out)


def quantise(z_fit: np.ndarray, z: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index 0..n_bins-1 of z at the quantiles of z_fit (equal-frequency bins)."""
    edges = np.quantile(z_fit, np.linspace(0, 1, n_bins + 1)[1:-1])  # (n_bins - 1,)
    return np.searchsorted(edges, z, side="right")


def split_indices(n: int, cfg: DecodingConfig) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of n images, halved into (fit, held-out) indices."""
    order = np.random.default_rng(cfg.seed).permutation(n)
    if cfg.max_images:
        order = order[:cfg.max_images]
    half = len(order) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def linear_probe(max_iter: int):
    """The decoder (step 4 above): multinomial logistic regression on standardised features,
    an unfitted scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))


def decode_errors(features_fit: np.ndarray, features_held: np.ndarray, z_fit: np.ndarray,
                  z_held: np.ndarray, cfg: DecodingConfig) -> list[tuple[float, float]]:
    """(error, chance) per latent column, from the reduced features of both halves."""
    results = []
    for k in range(z_fit.shape[1]):
        bins_fit = quantise(z_fit[:, k], z_fit[:, k], cfg.n_bins)  # (n_fit,)
        bins_held = quantise(z_fit[:, k], z_held[:, k], cfg.n_bins)  # (n_held,)
        clf = linear_probe(cfg.max_iter).fit(features_fit, bins_fit)
        error = float(np.mean(clf.predict(features_held) != bins_held))
        majority = np.bincount(bins_fit, minlength=cfg.n_bins).argmax()
        results.append((error, float(np.mean(bins_held != majority))))
    return results


def decode_model(model: DRMM, x: torch.Tensor, z: np.ndarray, z_names, name: str,
                 cfg: DecodingConfig | None = None, progress=None) -> list[dict]:
    """Decoding error of every (layer, latent) for one model; rows for the CSV.

    x: (N, C, H, W) test images as the model takes them; z: (N, n_latents) their latents.
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    cfg = cfg or DecodingConfig()
    with threadpool_limits(limits=cfg.blas_threads):
        return _decode_model(model, x, z, z_names, name, cfg, progress)


def _decode_model(model, x, z, z_names, name, cfg, progress):
    from sklearn.decomposition import PCA

    fit, held = split_indices(len(x), cfg)
    if min(len(fit), len(held)) < 2 * cfg.n_bins:
        raise DRMMError(f"{len(fit) + len(held)} test images are too few to decode"
                        f" {cfg.n_bins} bins; use at least {4 * cfg.n_bins}")
    rows = []
    for layer, layer_name in enumerate(layer_names(model)):
        features_fit = activations(model, x[fit], layer, cfg.batch_size, cfg.source)  # (n, D)
        pca = None
        if cfg.n_components:  # reduced before the held-out half is computed: one (n, D) at a time
            n_comp = min(cfg.n_components, *features_fit.shape)
            pca = PCA(n_components=n_comp, svd_solver="randomized", random_state=cfg.seed)
            features_fit = pca.fit_transform(features_fit)  # (n_fit, n_comp)
        features_held = activations(model, x[held], layer, cfg.batch_size, cfg.source)
        if pca is not None:
            features_held = pca.transform(features_held)  # (n_held, n_comp)
        for latent, (error, chance) in zip(
                z_names, decode_errors(features_fit, features_held, z[fit], z[held], cfg),
                strict=True):
            rows.append(dict(model=name, layer=layer, latent=str(latent), error=error,
                             chance=chance, layer_name=layer_name))
        if progress is not None:
            progress(f"{name}: {layer_name} done")
    return rows
