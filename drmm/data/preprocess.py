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

from dataclasses import asdict, dataclass

import torch

from drmm.errors import DRMMError

PREPROCESS = ("none", "standardize", "gcn", "zca")
GCN_SCALE = 55.0  # target L2 norm of each image after contrast normalisation (Ladder, pylearn2)
ZCA_BIAS = 0.1  # added to the covariance's eigenvalues: keeps near-zero directions from exploding
MAX_ZCA_DIM = 8192  # the D x D covariance (float64) must fit comfortably in memory
CHUNK = 4096  # images per matrix product, to bound temporary memory


@dataclass
class Preprocessor:
    """A transform fitted on training images, kept with the run so that any new image (test set,
    `drmm predict`, `drmm.load(...).predict`) is transformed exactly as the training images were.

    Images in and out are float32 (N, C, H, W); in: pixels in [0, 1].
    """

    mode: str = "none"  # one of PREPROCESS
    mean: torch.Tensor | None = None  # standardize: (C,) channel means; zca: (D,) pixel means
    std: torch.Tensor | None = None  # standardize: (C,) channel standard deviations
    whitening: torch.Tensor | None = None  # zca: (D, D) the matrix P

    @classmethod
    def fit(cls, mode: str, x_train: torch.Tensor) -> Preprocessor:
        """Fit on the training images x_train (N, C, H, W): float32 in [0, 1], or uint8 pixels
        (read as pixels / 255). Not modified."""
        if mode not in PREPROCESS:
            raise DRMMError(f"preprocess {mode!r} unknown; use one of {list(PREPROCESS)}")
        if mode == "standardize":
            return cls(mode, *channel_stats(x_train))
        if mode == "zca":
            mean, p = fit_zca(contrast_normalize(as_unit(x_train, copy=True)))
            return cls(mode, mean=mean, whitening=p)
        return cls(mode)  # none and gcn have no statistics: each image is its own

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The transformed images; x (N, C, H, W) in [0, 1] may be modified in place."""
        if self.mode == "standardize":
            return standardize(x, self.mean.to(x.device), self.std.to(x.device))
        if self.mode == "gcn":
            return contrast_normalize(x)
        if self.mode == "zca":
            return whiten(contrast_normalize(x), self.mean.to(x.device),
                          self.whitening.to(x.device))
        return x

    def state_dict(self) -> dict:
        """Tensors and a string: what a weights-only checkpoint may hold."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_state_dict(cls, d: dict) -> Preprocessor:
        pre = cls(**d)
        needs = {"standardize": ("mean", "std"), "zca": ("mean", "whitening")}.get(pre.mode, ())
        if pre.mode not in PREPROCESS or any(getattr(pre, k) is None for k in needs):
            raise DRMMError(f"stored preprocessing {sorted(d)} (mode {pre.mode!r}) is incomplete;"
                            " the checkpoint is damaged or not from this version")
        return pre


def apply_preprocess(x_train: torch.Tensor, x_test: torch.Tensor | None, mode: str
                     ) -> tuple[torch.Tensor, torch.Tensor | None, Preprocessor]:
    """Fit `mode` on x_train (N, C, H, W) and apply it to x_train and x_test (M, C, H, W) or
    None; the tensors may be modified in place (load_dataset passes fresh copies)."""
    pre = Preprocessor.fit(mode, x_train)
    return pre(x_train), None if x_test is None else pre(x_test), pre


def as_unit(x: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """Float32 images in [0, 1]: uint8 pixels / 255, or x itself (a clone if `copy`)."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.clone() if copy else x


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over images and pixels, accumulated in float64.

    x: (N, C, H, W) float32 in [0, 1] or uint8 pixels, read CHUNK images at a time so that uint8
    pixels are never made float32 whole."""
    n = x.numel() // x.shape[1]  # values per channel, N*H*W
    means, stds = [], []
    for c in range(x.shape[1]):  # one channel at a time
        chunks = x[:, c].split(CHUNK)  # (<= CHUNK, H, W) each
        mean = sum(as_unit(b).sum(dtype=torch.float64) for b in chunks) / n  # ()
        means.append(mean)
        squares = sum(((as_unit(b) - mean.float()) ** 2).sum(dtype=torch.float64) for b in chunks)
        stds.append(squares.div(n).sqrt())
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
