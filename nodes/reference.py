"""XDynaReferenceEncode: the reference photo -> latent (frame 0 of every UNet call) + image tokens."""
from __future__ import annotations

import numpy as np
import torch

from . import comfy_bridge as bridge

SD_SCALE = 0.18215


def image_to_uint8(image: torch.Tensor, index: int = 0) -> np.ndarray:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE batch [B,H,W,3], got {getattr(image, 'shape', type(image))}")
    return (image[index, ..., :3].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(arr.astype(np.float32) / 255.0)


class XDynaReferenceEncode:
    DESCRIPTION = ("Encodes the reference photo as X-Dyna does: centre-crop to the output aspect and resize for "
                   "the VAE latent (a seeded posterior sample, as the official code), and the uncropped photo "
                   "through CLIP vision + the IP-Adapter Resampler for the image tokens (negative tokens from "
                   "all-zero pixel values).")
    CATEGORY = "X-Dyna"
    RETURN_TYPES = ("XDYNA_REFERENCE", "IMAGE")
    RETURN_NAMES = ("reference", "reference_image")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "reference": ("IMAGE", {"tooltip": "photo of the person to animate (first image of the batch)"}),
            "vae": ("VAE",),
            "clip_vision": ("CLIP_VISION", {"tooltip": "CLIP ViT-H/14 (the IP-Adapter-plus SD1.5 image encoder)"}),
            "image_proj": ("XDYNA_IMAGE_PROJ",),
            "width": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8}),
            "height": ("INT", {"default": 896, "min": 64, "max": 2048, "step": 8}),
            "latent": (["sample", "mean"], {"default": "sample", "tooltip": "sample = the official seeded posterior sample; mean = ComfyUI's VAE encode"}),
            "seed": ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
        }}

    def encode(self, reference, vae, clip_vision, image_proj, width, height, latent, seed):
        from xdyna_core.reference import prepare_reference_image

        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8 (SD latents), got {width}x{height}")
        img = image_to_uint8(reference)
        prepared = uint8_to_image(prepare_reference_image(img, height, width))
        gen = torch.Generator("cpu").manual_seed(int(seed)) if latent == "sample" else None
        z = bridge.vae_encode(vae, prepared, gen).float() * SD_SCALE
        hidden = bridge.clip_vision_hidden(clip_vision, reference[:1])
        hidden_u = bridge.clip_vision_zero_hidden(clip_vision)
        bridge.load_on_device([image_proj.patcher])
        resampler = image_proj.patcher.model
        dev = next(resampler.parameters()).device
        with torch.no_grad():
            tok_c = resampler(hidden.to(dev, torch.float32)).cpu()
            tok_u = resampler(hidden_u.to(dev, torch.float32)).cpu()
        ref = {"latent": z.cpu()[:, :, None], "image_tokens_cond": tok_c, "image_tokens_uncond": tok_u,
               "width": width, "height": height}
        return (ref, prepared)


NODE_CLASS_MAPPINGS = {"XDynaReferenceEncode": XDynaReferenceEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"XDynaReferenceEncode": "X-Dyna Reference Encode"}
