"""drmm: semi-supervised learning with the Deep Rendering Mixture Model (Nguyen et al., 2016)."""

__version__ = "0.2.0"

from drmm.config import Config, preset  # noqa: E402
from drmm.losses import LossConfig, drmm_objective  # noqa: E402
from drmm.model import ARCHS, DRMM, ModelConfig  # noqa: E402
from drmm.predictor import Predictions, Predictor, load  # noqa: E402

__all__ = ["ARCHS", "DRMM", "Config", "LossConfig", "ModelConfig", "Predictions", "Predictor",
           "drmm_objective", "load", "preset"]
