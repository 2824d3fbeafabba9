"""A trained DRMM as a predictor for new images: `drmm.load(RUN_DIR).predict(images)`.

Prediction is the bottom-up E-step alone (section 4.1): q(c|I) = softmax of the class scores,
with BatchNorm's running statistics (Appendix A). The predictor keeps the model in eval mode on
every call and predicts under torch.inference_mode, so no call can move a BatchNorm statistic
and one image at a time gives what one batch gives. It applies the run's own preprocessing
(statistics stored in the checkpoint) to raw images, and turns upright (EXIF) and resizes image
files and PIL images as the run did its folder (--image-size, --resize).

    predictor = drmm.load("runs/mine")                 # a run folder or a checkpoint file
    classes, probs = predictor.predict(images)        # uint8 (N, H, W[, C]), PIL images, tensors
    [predictor.class_names[c] for c in classes]
    predictor.predict(images).novelty                 # (N,): > 1 = less typical than 99 % of
                                                      # the training images

Novelty (drmm/scores.py): the image's rendering error under its predicted class (or, for a run
that never learned to render, 1 - max p; `predictor.novelty_score` says which) divided by its
99th percentile over the run's training images, stored in the checkpoint at the end of
training. For a checkpoint from before that, the predictor computes the percentile from the
run's training data when first asked for novelty, if they load; else novelty is None
(`predictor.novelty_note` says why).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from drmm import scores
from drmm.checkpoint import load_trained_model
from drmm.data import Preprocessor, load_run_data, to_tensor_images
from drmm.data.folder import decode, pixels, size_of
from drmm.errors import DRMMError, require_device
from drmm.model import DRMM


class _Predicted(NamedTuple):
    classes: torch.Tensor  # (N,) int64 predicted class indices into class_names
    probabilities: torch.Tensor  # (N, K) float32 q(c|I), rows sum to 1


class Predictions(_Predicted):
    """(classes, probabilities), as a pair (`classes, probs = predictor.predict(x)`), and the
    attributes novelty and novelty_score, outside the pair so that unpacking stays as it was."""

    novelty: torch.Tensor | None  # (N,) float32 score / its training 99th percentile, or None
    novelty_score: str | None  # which score: "render" or "softmax" (drmm/scores.py), or None

    def __new__(cls, classes: torch.Tensor, probabilities: torch.Tensor,
                novelty: torch.Tensor | None = None, novelty_score: str | None = None):
        self = super().__new__(cls, classes, probabilities)
        self.novelty, self.novelty_score = novelty, novelty_score
        return self


class Predictor:
    """A model in eval mode with its class names and preprocessing; `model` is the nn.Module."""

    def __init__(self, model: DRMM, class_names: list[str], preprocessor: Preprocessor,
                 resize: int | None = None, device: str | torch.device = "cpu",
                 resize_mode: str = "crop", novelty=None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.preprocessor = preprocessor
        self.resize = resize  # square size image files are resized to (the run's --image-size)
        self.resize_mode = resize_mode  # how: crop | squash (the run's --resize)
        c, s = model.config.in_channels, model.config.image_size
        self.image_shape = (c, s, s)  # (C, H, W) the model takes
        # novelty: (score, scale, note), or a function of the predictor that returns it when
        # first needed (an older checkpoint: calibrated on its training data), or None: none.
        self._novelty = novelty if novelty is not None else (None, None, "not calibrated")

    def novelty_calibration(self) -> tuple[str | None, float | None, str | None]:
        """(score, scale, note): the novelty score ("render" | "softmax", or None: no
        novelty), its 99th percentile on the run's training images, and why there is none."""
        if callable(self._novelty):
            self._novelty = self._novelty(self)
        score, scale, note = self._novelty
        if (score is None) != (scale is None) or score not in (None, *scores.NOVELTY_SCORES):
            raise ValueError(f"bad novelty calibration {self._novelty!r}: give a score of"
                             f" {scores.NOVELTY_SCORES} with its scale, or neither")
        return score, scale, note

    @property
    def novelty_score(self) -> str | None:
        return self.novelty_calibration()[0]

    @property
    def novelty_scale(self) -> float | None:
        return self.novelty_calibration()[1]

    @property
    def novelty_note(self) -> str | None:
        return self.novelty_calibration()[2]

    @torch.inference_mode()
    def predict(self, images, batch_size: int = 256, novelty: bool = True) -> Predictions:
        """Class indices and probabilities of images: a uint8 array or tensor (N, H, W) or
        (N, H, W, C); a PIL image or a list of them; a float tensor (N, C, H, W) in [0, 1].
        With novelty (and a calibrated run) also .novelty (N,): the novelty score over its
        training 99th percentile (the render score costs a top-down pass)."""
        x = self.to_tensor(images)  # (N, C, H, W) in [0, 1]
        self.model.eval()  # whatever the caller did to .model: running statistics, untouched
        score = self.novelty_score if novelty else None
        probs, raw = [], []
        for i in range(0, len(x), batch_size):
            batch = self.preprocessor(x[i:i + batch_size].to(self.device))  # (b, C, H, W)
            logits, err = scores.score_batch(self.model, batch, render=score == "render")
            probs.append(logits.softmax(dim=1).cpu())  # (b, K)
            if score is not None:
                raw.append(scores.raw_novelty(score, logits, err).cpu())  # (b,)
        p = torch.cat(probs) if probs else torch.zeros(0, len(self.class_names))  # (N, K)
        nov = None
        if score is not None:
            nov = (torch.cat(raw) if raw else torch.zeros(0, dtype=torch.float64))  # (N,)
            nov = (nov / self.novelty_scale).float()  # (N,)
        return Predictions(classes=p.argmax(dim=1), probabilities=p, novelty=nov,
                           novelty_score=score)

    def to_tensor(self, images) -> torch.Tensor:
        """Any accepted input as float32 (N, C, H, W) in [0, 1], checked against the model."""
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)) and images and all(
                isinstance(im, Image.Image) for im in images):
            arrays = [self.pil_pixels(im) for im in images]  # (H, W[, C]) each
            odd = next((i for i, a in enumerate(arrays) if a.shape != arrays[0].shape), None)
            if odd is not None:
                raise DRMMError(f"images differ in size (image 0 is {size_of(arrays[0].shape)},"
                                f" image {odd} is {size_of(arrays[odd].shape)}); give images of"
                                " one size, the model's")
            images = np.stack(arrays)
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            x = images.detach().cpu().float()
            if x.dim() != 4:
                raise DRMMError(f"float images must be (N, C, H, W); got shape {tuple(x.shape)}")
            if len(x) and (x.min() < 0 or x.max() > 1):
                raise DRMMError("float images must hold raw pixels in [0, 1] (uint8 / 255); the"
                                " run's preprocessing is applied by predict itself")
        else:
            array = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
            if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
                raise DRMMError("images must be a uint8 array (N, H, W) or (N, H, W, C), PIL"
                                f" images, or a float tensor (N, C, H, W); got {describe(images)}")
            if array.ndim not in (3, 4):
                raise DRMMError(f"uint8 images must be (N, H, W) or (N, H, W, C); got shape"
                                f" {array.shape} (a single image: add a first axis)")
            x = to_tensor_images(array)
        if tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise DRMMError(f"images are {tuple(x.shape[1:])} (C, H, W) but the model takes"
                            f" {self.image_shape}: give {h}x{w} images with {c} channel(s)"
                            f" ({'grayscale' if c == 1 else 'RGB'})")
        return x

    def pil_pixels(self, img: Image.Image) -> np.ndarray:
        """uint8 pixels of a PIL image in the model's mode, upright, resized as the run resized."""
        return pixels(img, self.image_shape[0], self.resize, self.resize_mode)

    def read_file(self, path: Path) -> np.ndarray:
        """uint8 pixels of an image file, decoded and resized as the run's training folder."""
        return decode(path, self.image_shape[0], self.resize, self.resize_mode)


def describe(obj) -> str:
    shape = getattr(obj, "shape", None)
    dtype = getattr(obj, "dtype", None)
    return f"{type(obj).__name__}" + (f" of dtype {dtype}, shape {tuple(shape)}" if shape else "")


def load(path: str | Path, device: str = "cpu", novelty: bool = True) -> Predictor:
    """The predictor of a drmm run folder or checkpoint file, in eval mode on `device`.
    novelty: its novelty score's scale, from the checkpoint (an older checkpoint: computed from
    the run's training data when first needed, if they load); False: no novelty."""
    require_device(device)
    model, cfg, state = load_trained_model(path)
    k = cfg.model.num_classes
    names = [str(n) for n in state.get("class_names", [])] or [str(c) for c in range(k)]
    if len(names) != k:
        raise DRMMError(f"{path}: {len(names)} class names for a {k}-class model; the checkpoint"
                        " is damaged")
    if "preprocess" in state:
        pre = Preprocessor.from_state_dict(state["preprocess"])
    elif cfg.train.preprocess in ("none", "gcn"):  # older runs: these need no statistics
        pre = Preprocessor(cfg.train.preprocess)
    else:
        raise DRMMError(f"{path} predates stored preprocessing statistics ({cfg.train.preprocess}"
                        "); predict with a run trained by this version, or use drmm eval, which"
                        " refits them on the run's data set")
    novelty = stored_novelty(cfg, state) if novelty else (None, None, "not asked for")
    if novelty is None:  # an older checkpoint: calibrated on its training data when first used
        kept = {k: state[k] for k in ("preprocess",) if k in state}  # not the whole state
        novelty = lambda predictor: calibrate_now(path, predictor, cfg, kept)  # noqa: E731
    return Predictor(model, names, pre, resize=cfg.train.image_size, device=device,
                     resize_mode=cfg.train.resize, novelty=novelty)


def stored_novelty(cfg, state: dict) -> tuple[str, float, None] | None:
    """(score, scale, None) of the run's novelty score (scores.run_novelty_score) as its
    checkpoint stores it, or None: a checkpoint from before novelty scales were stored."""
    score = scores.run_novelty_score(cfg)
    stored = state.get("novelty_scales") or {}
    if score in stored:
        return score, float(stored[score]), None
    if state.get("novelty_score") == score and "novelty_scale" in state:
        return score, float(state["novelty_scale"]), None
    return None


def calibrate_now(path, predictor: Predictor, cfg, state: dict
                  ) -> tuple[str | None, float | None, str | None]:
    """(score, scale, None) computed from the run's training data (loaded as the run did), or
    (None, None, why) where that cannot be loaded."""
    score = scores.run_novelty_score(cfg)
    try:
        data = load_run_data(cfg, state, data_dir=cfg.train.data_dir, verify=cfg.train.verify)
        predictor.model.check_input(data.x_train[:1])
    except (DRMMError, ValueError) as e:
        return None, None, (f"{path} predates stored novelty scales and its training data"
                            f" ({cfg.train.dataset}) cannot be loaded ({e})")
    entries = scores.novelty_calibration(predictor.model, cfg, data.x_train,
                                         cfg.train.eval_batch_size)  # batches go to the model
    return score, entries["novelty_scales"][score], None
