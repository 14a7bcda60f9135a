"""Reference-image encoding as in the official X-Dyna inference script (spec §1.4, §1.8, §5).

Two paths start from the same RGB reference picture:

* **VAE path** — centre crop to the output aspect, bilinear resize to W x H
  (:func:`prepare_reference_image`), then ``vae.encode(img / 127.5 - 1)``, a *posterior sample*
  drawn from the seeded generator, times the scaling factor -> frame 0 of the latent video
  (:func:`encode_reference`, shape (1, 4, 1, H/8, W/8)).
* **CLIP path** — the *original, uncropped* picture through ``CLIPImageProcessor`` defaults
  (:func:`clip_preprocess`), ``hidden_states[-2]`` of the CLIP vision tower
  (:func:`clip_image_hidden`); the unconditional features come from an all-zero pixel tensor
  (:func:`clip_uncond_hidden`). The IP-Adapter Resampler turns both into 16 image tokens
  (:func:`image_tokens`).

Images are uint8 RGB arrays (H, W, 3). Everything here is pure numpy / torch (+ OpenCV and Pillow
for the two resizes, to match the reference's resampling bit for bit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from .sd15 import VAE_SCALING_FACTOR

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIP_SIZE",
    "reference_crop_box",
    "prepare_reference_image",
    "image_to_vae_input",
    "encode_reference",
    "clip_preprocess",
    "clip_image_hidden",
    "clip_uncond_hidden",
    "image_tokens",
    "encode_image_tokens",
    "ReferenceEncoding",
    "encode_reference_all",
    "LatentMoments",
    "reference_latent_moments",
    "posterior_sample",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def _as_rgb_uint8(img, what: str = "image") -> np.ndarray:
    """Accept (H, W, 3) uint8 RGB (numpy or torch); (H, W) grey and (H, W, 4) RGBA are converted
    like PIL's ``convert("RGB")`` (grey replicated, alpha dropped)."""
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 RGB array (H, W, 3), got dtype {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"{what}: expected shape (H, W, 3), got {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{what}: empty image {img.shape}")
    return np.ascontiguousarray(img[:, :, :3])


# --------------------------------------------------------------------------------------------
# VAE path


def reference_crop_box(h: int, w: int, height: int, width: int) -> Tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the centre crop to the width/height aspect, with the
    reference's float expressions and truncations (too wide -> keep full height, else full width)."""
    if height < 1 or width < 1:
        raise ValueError(f"reference crop: target size must be positive, got {height}x{width}")
    aspect = width / height
    if w / h > aspect:
        cw = int(aspect * h)
        return 0, (w - cw) // 2, h, cw
    ch = int(w / aspect)
    return (h - ch) // 2, 0, ch, w


def prepare_reference_image(img, height: int, width: int) -> np.ndarray:
    """Centre-crop the RGB reference to the target aspect, bilinear-resize to (height, width).

    Returns uint8 (height, width, 3). Same numbers as the reference's ``imread_resize_crop``
    (after its BGR->RGB flip, which commutes with crop and resize).
    """
    import cv2

    img = _as_rgb_uint8(img, "prepare_reference_image")
    top, left, ch, cw = reference_crop_box(img.shape[0], img.shape[1], height, width)
    if ch < 1 or cw < 1:
        raise ValueError(f"prepare_reference_image: {img.shape[:2]} image is too small to crop to {height}x{width} aspect")
    crop = np.ascontiguousarray(img[top:top + ch, left:left + cw])
    return cv2.resize(crop, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def image_to_vae_input(img) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [-1, 1] (``x / 127.5 - 1``)."""
    img = _as_rgb_uint8(img, "image_to_vae_input")
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0


#: Callable ``(x (1, 3, H, W) float32 in [-1, 1]) -> (mean, logvar)`` of the VAE posterior,
#: unscaled latents. The CLI passes our VAE's ``encode``; the nodes pass ComfyUI's VAE encoder.
VaeMoments = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def posterior_sample(mean: torch.Tensor, logvar: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """The reference's ``latent_dist.sample(generator)``: mean + std * eps, eps drawn in float32 on the
    generator's device (a CPU generator gives the same latent on any device and VAE dtype)."""
    from .models.vae import AutoencoderKL

    return AutoencoderKL.sample_posterior(mean.float(), logvar.float(), generator)


@torch.no_grad()
def encode_reference(vae, image, generator: Optional[torch.Generator] = None, sample: bool = True) -> torch.Tensor:
    """Prepared reference (uint8 (H, W, 3) or a (1, 3, H, W) tensor in [-1, 1]) -> scaled latent
    (1, C, 1, H/8, W/8) = posterior sample (or mean with ``sample=False``) x scaling factor, with our VAE."""
    enc = reference_latent_moments(_vae_moments(vae), image)
    return enc.latent(generator, sample, vae.config.scaling_factor)


def _vae_moments(vae) -> VaeMoments:
    def moments(x):
        w = vae.post_quant_conv.weight
        return vae.encode(x.to(device=w.device, dtype=w.dtype))
    return moments


@dataclass
class LatentMoments:
    """The VAE posterior of the prepared reference (unscaled, float32). Drawing the latent is left to
    the sampler so that one generator makes every random draw of a run in the official order."""

    mean: torch.Tensor  # (1, C, h, w)
    logvar: torch.Tensor  # (1, C, h, w)

    def latent(self, generator: Optional[torch.Generator], sample: bool = True,
               scaling_factor: float = VAE_SCALING_FACTOR) -> torch.Tensor:
        """(1, C, 1, h, w) scaled latent: a posterior sample (the first draw of ``generator``) or the mean."""
        z = posterior_sample(self.mean, self.logvar, generator) if sample else self.mean
        z = z * scaling_factor
        if not torch.isfinite(z).all():
            raise ValueError("reference latent: the VAE produced non-finite values (check the VAE weights / dtype)")
        return z.unsqueeze(2)


@torch.no_grad()
def reference_latent_moments(vae_moments: VaeMoments, image) -> LatentMoments:
    """Posterior (mean, logvar) of a prepared reference (uint8 (H, W, 3) or (1, 3, H, W) in [-1, 1])."""
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        x = image
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"reference latent: expected a (1, 3, H, W) tensor in [-1, 1], got {tuple(x.shape)}")
    else:
        x = image_to_vae_input(image)
    mean, logvar = vae_moments(x)
    return LatentMoments(mean.detach().float().cpu(), logvar.detach().float().cpu())


# --------------------------------------------------------------------------------------------
# CLIP path


def clip_preprocess(img, size: int = CLIP_SIZE) -> torch.Tensor:
    """``CLIPImageProcessor()`` defaults on the original picture -> float32 (1, 3, size, size).

    Shortest side to ``size`` (long side ``int(size * long / short)``) with PIL bicubic, centre
    crop ``size`` x ``size`` (offset ``(excess) // 2``), x/255, CLIP mean/std normalisation.
    """
    from PIL import Image

    img = _as_rgb_uint8(img, "clip_preprocess")
    h, w = img.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_h, new_w = (new_long, size) if w <= h else (size, new_long)
    if new_long < size:  # only possible through rounding of a degenerate image
        raise ValueError(f"clip_preprocess: image {h}x{w} too small to crop to {size}x{size}")
    resized = np.asarray(Image.fromarray(img).resize((new_w, new_h), resample=Image.BICUBIC, reducing_gap=None))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top:top + size, left:left + size]
    # rescale in float64 then float32 normalisation, as the HF processor does
    x = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _model_device_dtype(model) -> Tuple[torch.device, torch.dtype]:
    try:
        p = next(model.parameters())
        return p.device, p.dtype
    except (AttributeError, StopIteration):
        return torch.device("cpu"), torch.float32


@torch.no_grad()
def clip_image_hidden(clip_vision, pixel_values: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer CLIP features ``hidden_states[-2]`` (B, 1+P, D) — the Resampler input.

    ``clip_vision`` is the standalone path's :class:`~xdyna_core.models.clip.PenultimateCLIPVision`
    (built without the last layer) or anything called as ``model(pixel_values, output_hidden_states=True)``
    returning an object with ``hidden_states`` (e.g. transformers' model).
    """
    from .models.clip import PenultimateCLIPVision

    if pixel_values.ndim != 4:
        raise ValueError(f"clip_image_hidden: expected pixel_values (B, 3, H, W), got {tuple(pixel_values.shape)}")
    device, dtype = _model_device_dtype(clip_vision)
    px = pixel_values.to(device=device, dtype=dtype)
    if isinstance(clip_vision, PenultimateCLIPVision):
        return clip_vision(px)
    return clip_vision(px, output_hidden_states=True).hidden_states[-2]


def clip_uncond_hidden(clip_vision, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Unconditional CLIP features: the encoder on all-zero pixel values (not a black image)."""
    if like is None:
        size = getattr(getattr(clip_vision, "config", None), "image_size", CLIP_SIZE)
        like = torch.zeros(1, 3, size, size)
    return clip_image_hidden(clip_vision, torch.zeros_like(like))


@torch.no_grad()
def image_tokens(resampler: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """CLIP features (B, 1+P, D_clip) -> image tokens (B, num_queries, D) via the IP-Adapter Resampler."""
    device, dtype = _model_device_dtype(resampler)
    return resampler(hidden.to(device=device, dtype=dtype))


ClipHidden = Callable[[torch.Tensor], torch.Tensor]


def encode_image_tokens(clip_hidden, resampler, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) image tokens for a preprocessed reference (1, 3, 224, 224). ``clip_hidden`` is
    a CLIP vision model (ours or transformers') or a callable pixel_values -> penultimate hidden states;
    the unconditional tokens come from all-zero pixel values."""
    if not callable(clip_hidden) or isinstance(clip_hidden, torch.nn.Module):
        model = clip_hidden
        clip_hidden = lambda px: clip_image_hidden(model, px)  # noqa: E731
    cond = image_tokens(resampler, clip_hidden(pixel_values))
    uncond = image_tokens(resampler, clip_hidden(torch.zeros_like(pixel_values)))
    return cond, uncond


@dataclass
class ReferenceEncoding:
    """Everything the sampler needs from the reference picture."""

    image: np.ndarray  # prepared reference, uint8 (H, W, 3)
    moments: LatentMoments  # VAE posterior of ``image``
    image_tokens_cond: torch.Tensor  # (1, 16, D)
    image_tokens_uncond: torch.Tensor  # (1, 16, D)
    scaling_factor: float = VAE_SCALING_FACTOR

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the output video."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def latent(self, generator: Optional[torch.Generator], sample: bool = True) -> torch.Tensor:
        return self.moments.latent(generator, sample, self.scaling_factor)


def encode_reference_all(img, height: int, width: int, vae_moments, clip_hidden, resampler,
                         scaling_factor: float = VAE_SCALING_FACTOR) -> ReferenceEncoding:
    """The one reference encoding of both front ends: CLIP image tokens of the uncropped picture
    (official ``CLIPImageProcessor`` preprocessing, :func:`clip_preprocess`) and the VAE posterior of
    the picture centre-cropped and resized to ``width`` x ``height``.

    ``vae_moments``: our VAE or a :data:`VaeMoments` callable; ``clip_hidden``: a CLIP vision model or
    a :data:`ClipHidden` callable (pixel values -> penultimate hidden states). No random draw here.
    """
    img = _as_rgb_uint8(img, "reference image")
    if not callable(vae_moments) or isinstance(vae_moments, torch.nn.Module):
        scaling_factor = vae_moments.config.scaling_factor
        vae_moments = _vae_moments(vae_moments)
    cond, uncond = encode_image_tokens(clip_hidden, resampler, clip_preprocess(img))
    prepared = prepare_reference_image(img, height, width)
    return ReferenceEncoding(prepared, reference_latent_moments(vae_moments, prepared), cond, uncond, scaling_factor)
