"""drmm: semi-supervised learning with the Deep Rendering Mixture Model (Nguyen et al., 2016)."""

from drmm.config import Config, preset
from drmm.losses import LossConfig, drmm_objective
from drmm.model import ARCHS, DRMM, ModelConfig

__all__ = ["ARCHS", "DRMM", "Config", "LossConfig", "ModelConfig", "drmm_objective", "preset"]
__version__ = "0.1.0"
