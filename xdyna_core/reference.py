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


@torch.no_grad()
def encode_reference(vae, image, generator: Optional[torch.Generator] = None, sample: bool = True) -> torch.Tensor:
    """Prepared reference (uint8 (H, W, 3) or a (1, 3, H, W) tensor in [-1, 1]) -> scaled latent
    (1, C, 1, H/8, W/8) = posterior sample x ``vae.config.scaling_factor``.

    ``sample=True`` draws eps from ``generator`` as the reference does (pass the same generator to
    the sampler afterwards: the reference draws the blur mask from it next); ``sample=False``
    uses the posterior mean (what ComfyUI's VAEEncode returns).
    """
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        x = image
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"encode_reference: expected a (1, 3, H, W) tensor in [-1, 1], got {tuple(x.shape)}")
    else:
        x = image_to_vae_input(image)
    w = vae.post_quant_conv.weight
    mean, logvar = vae.encode(x.to(device=w.device, dtype=w.dtype))
    z = vae.sample_posterior(mean, logvar, generator) if sample else mean
    z = z * vae.config.scaling_factor
    if not torch.isfinite(z).all():
        raise ValueError("encode_reference: the VAE produced non-finite latents (check the VAE weights / dtype)")
    return z.unsqueeze(2)


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

    ``clip_vision`` is our :class:`~xdyna_core.models.clip.CLIPVisionModelWithProjection` (the last
    layer is then skipped) or anything called as ``model(pixel_values, output_hidden_states=True)``
    returning an object with ``hidden_states`` (e.g. transformers' model).
    """
    from .models.clip import CLIPVisionModelWithProjection

    if pixel_values.ndim != 4:
        raise ValueError(f"clip_image_hidden: expected pixel_values (B, 3, H, W), got {tuple(pixel_values.shape)}")
    device, dtype = _model_device_dtype(clip_vision)
    px = pixel_values.to(device=device, dtype=dtype)
    if isinstance(clip_vision, CLIPVisionModelWithProjection):
        n = clip_vision.config.num_hidden_layers
        # hidden_states[-2] of the full model is the output of layer n-1: no need to run layer n
        return clip_vision(px, num_layers=n - 1).hidden_states[-1]
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


def encode_image_tokens(clip_vision, resampler, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) image tokens for a preprocessed reference (1, 3, 224, 224)."""
    cond = image_tokens(resampler, clip_image_hidden(clip_vision, pixel_values))
    uncond = image_tokens(resampler, clip_uncond_hidden(clip_vision, pixel_values))
    return cond, uncond


@dataclass
class ReferenceEncoding:
    image: np.ndarray  # prepared reference, uint8 (H, W, 3)
    latent: torch.Tensor  # (1, 4, 1, H/8, W/8), scaled
    image_tokens_cond: torch.Tensor  # (1, 16, D)
    image_tokens_uncond: torch.Tensor  # (1, 16, D)


def encode_reference_all(img, height: int, width: int, vae, clip_vision, resampler,
                         generator: Optional[torch.Generator] = None) -> ReferenceEncoding:
    """Everything the sampler needs from the reference picture, in the reference's order
    (CLIP first, then the VAE sample, which is the first draw from ``generator``)."""
    img = _as_rgb_uint8(img, "encode_reference_all")
    cond, uncond = encode_image_tokens(clip_vision, resampler, clip_preprocess(img))
    prepared = prepare_reference_image(img, height, width)
    latent = encode_reference(vae, prepared, generator)
    return ReferenceEncoding(prepared, latent, cond, uncond)
