"""X-Dyna networks in pure PyTorch (layers from an injectable `operations` namespace)."""
from .controlnet import ControlNetConfig, ControlNetModel
from .resampler import Resampler, ResamplerConfig
from .unet3d import UNet3DConditionModel, UNet3DConfig

__all__ = ["UNet3DConfig", "UNet3DConditionModel", "ControlNetConfig", "ControlNetModel",
           "Resampler", "ResamplerConfig"]
