"""Input preprocessing: fitted on the training images only, applied to train and test alike.

The paper does not say how it preprocessed its inputs (Appendix A is silent, and the authors'
surviving code has no preprocessing), so these are the conventions users of the data sets expect:

- "none": pixels in [0, 1] (MNIST, and the bundled digits; the authors' code keeps MNIST so).
- "standardize" (the svhn and cifar10 presets): per-channel standardisation, (x - mean_c) / std_c
  with the mean and standard deviation of each channel over the *training* images, as the
  authors' follow-up NRM code does for SVHN and CIFAR-10. Test images never enter the statistics.
- "gcn": global contrast normalisation of each image alone (subtract its own mean, scale its L2
  norm to 55), the first half of the "zca" recipe. For data whose images differ mainly in their
  background level (our rendered set, section 5.4): the top-down pass has no bias, so it can
  render a per-image offset only through the switches; after "gcn" there is none to render.
- "zca": the Ladder Network's CIFAR-10 recipe (Rasmus et al. 2015), whose ConvLarge network the
  DRMM copies: global contrast normalisation of each image (subtract its own mean, scale its
  L2 norm to 55), then ZCA whitening, x -> (x - mu) P with P = V diag((e + 0.1)^-1/2) V^T from the
  eigendecomposition V diag(e) V^T of the training images' pixel covariance (filter bias 0.1).
  The covariance is D x D for D = C*H*W pixels (3072 for CIFAR-10): fitting it on 50,000 images
  takes about a minute on two CPU cores, and images above MAX_ZCA_DIM pixels are refused.

Everything here is torch only (no SciPy), so the training path runs with torch and NumPy alone.
"""

from __future__ import annotations

import torch

from drmm.errors import DRMMError

PREPROCESS = ("none", "standardize", "gcn", "zca")
GCN_SCALE = 55.0  # target L2 norm of each image after contrast normalisation (Ladder, pylearn2)
ZCA_BIAS = 0.1  # added to the covariance's eigenvalues: keeps near-zero directions from exploding
MAX_ZCA_DIM = 8192  # the D x D covariance (float64) must fit comfortably in memory
CHUNK = 4096  # images per matrix product, to bound temporary memory


def apply_preprocess(x_train: torch.Tensor, x_test: torch.Tensor, mode: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """x_train (N, C, H, W), x_test (M, C, H, W) float32 in [0, 1] -> the preprocessed pair.

    The tensors may be modified in place (load_dataset passes fresh copies).
    """
    if mode == "none":
        return x_train, x_test
    if mode == "standardize":
        mean, std = channel_stats(x_train)
        return standardize(x_train, mean, std), standardize(x_test, mean, std)
    if mode == "gcn":
        return contrast_normalize(x_train), contrast_normalize(x_test)
    if mode == "zca":
        x_train, x_test = contrast_normalize(x_train), contrast_normalize(x_test)
        mean, p = fit_zca(x_train)
        return whiten(x_train, mean, p), whiten(x_test, mean, p)
    raise DRMMError(f"preprocess {mode!r} unknown; use one of {list(PREPROCESS)}")


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over images and pixels, accumulated in float64."""
    n = x.numel() // x.shape[1]  # values per channel, N*H*W
    means, stds = [], []
    for c in range(x.shape[1]):  # one channel at a time: no copy of the whole set
        mean = x[:, c].sum(dtype=torch.float64) / n  # ()
        means.append(mean)
        stds.append(((x[:, c] - mean.float()) ** 2).sum(dtype=torch.float64).div(n).sqrt())
    mean, std = torch.stack(means), torch.stack(stds)  # (C,), (C,)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays 0, not NaN
    return mean.float(), std.float()


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return x.sub_(mean[:, None, None]).div_(std[:, None, None])  # (N, C, H, W)


def contrast_normalize(x: torch.Tensor, scale: float = GCN_SCALE) -> torch.Tensor:
    """Each image minus its own mean, rescaled to L2 norm `scale` (a blank image stays 0)."""
    flat = x.reshape(len(x), -1)  # (N, D)
    flat.sub_(flat.mean(dim=1, keepdim=True))
    norms = flat.norm(dim=1, keepdim=True) / scale  # (N, 1)
    flat.div_(torch.where(norms > 1e-8, norms, torch.ones_like(norms)))
    return flat.reshape(x.shape)  # (N, C, H, W)


def fit_zca(x: torch.Tensor, bias: float = ZCA_BIAS) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and whitening matrix P (D, D) of the training images x (N, C, H, W)."""
    flat = x.reshape(len(x), -1)  # (N, D)
    d = flat.shape[1]
    if d > MAX_ZCA_DIM:
        raise DRMMError(f"zca on {tuple(x.shape[1:])} images needs a {d}x{d} covariance, more"
                        f" than the {MAX_ZCA_DIM} pixels allowed; use --preprocess standardize")
    mean = flat.sum(dim=0, dtype=torch.float64) / len(flat)  # (D,)
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, len(flat), CHUNK):
        centred = flat[i:i + CHUNK] - mean.float()  # (n, D) float32: fast products
        cov += (centred.T @ centred).double()  # (D, D) summed in float64
    cov /= len(flat)  # the biased covariance, as the Ladder code
    eigvals, eigvecs = torch.linalg.eigh(cov)  # (D,), (D, D)
    p = (eigvecs * (eigvals.clamp_min(0) + bias).rsqrt()) @ eigvecs.T  # (D, D)
    return mean.float(), p.float()


def whiten(x: torch.Tensor, mean: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(len(x), -1)  # (N, D)
    for i in range(0, len(flat), CHUNK):
        flat[i:i + CHUNK] = (flat[i:i + CHUNK] - mean) @ p  # P is symmetric: (x - mu) P
    return flat.reshape(x.shape)  # (N, C, H, W)
