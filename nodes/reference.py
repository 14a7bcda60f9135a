"""XDynaReferenceEncode: the reference photo -> latent (frame 0 of every UNet call) + image tokens."""
from __future__ import annotations

import numpy as np
import torch

from comfy_api.latest import io

from ..xdyna_core.job import LATENT_MODES
from ..xdyna_core.pixels import to_uint8
from ..xdyna_core.preprocess.driving import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, SIZE_RULE, check_output_size
from ..xdyna_core.sd15 import VAE_SCALING_FACTOR

from . import comfy_bridge as bridge
from . import xdyna_types as T



def size_inputs(what: str) -> list:
    """The width/height widgets, with the one size rule in their tooltips and steps."""
    return [
        io.Int.Input("width", default=512, min=MIN_SIDE, max=MAX_SIDE, step=SIZE_MULTIPLE,
                     tooltip=f"Working width in pixels{what}: {SIZE_RULE}."),
        io.Int.Input("height", default=896, min=MIN_SIDE, max=MAX_SIDE, step=SIZE_MULTIPLE,
                     tooltip=f"Working height in pixels{what}: {SIZE_RULE}."),
    ]


def reference_size(reference) -> tuple:
    """(width, height) carried by an XDYNA_REFERENCE, checked by the one size rule."""
    if not isinstance(reference, dict) or "width" not in reference or "height" not in reference:
        raise ValueError("reference: expected the output of X-Dyna Reference Encode (XDYNA_REFERENCE)")
    return check_output_size(reference["width"], reference["height"])


def image_to_uint8(image: torch.Tensor, index: int = 0) -> np.ndarray:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE batch [B,H,W,3], got {getattr(image, 'shape', type(image))}")
    return to_uint8(image[index, ..., :3]).cpu().numpy()


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(arr.astype(np.float32) / 255.0)


class XDynaReferenceEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaReferenceEncode",
            display_name="X-Dyna Reference Encode",
            category="X-Dyna",
            description=("Encodes the reference photo as X-Dyna does: the photo centre-cropped to the output aspect "
                         "and resized goes through the VAE (its posterior; the sampler draws the official seeded "
                         "sample from it), the uncropped photo through CLIP vision (official CLIPImageProcessor "
                         "preprocessing) + the IP-Adapter Resampler for the image tokens (negative tokens from "
                         "all-zero pixel values)."),
            inputs=[
                io.Image.Input("reference", tooltip="photo of the person to animate (first image of the batch)"),
                io.Vae.Input("vae", tooltip="The SD1.5 VAE (e.g. from the SD1.5 checkpoint loader)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-H/14 (the IP-Adapter-plus SD1.5 image encoder)"),
                T.ImageProj.Input("image_proj", tooltip="The IP-Adapter-plus Resampler (X-Dyna IP-Adapter Loader)."),
                *size_inputs(" for the whole run (set here once; the driving video and poses follow it)"),
                io.Combo.Input("latent", options=list(LATENT_MODES), default="sample",
                               tooltip="sample = the official posterior sample (drawn by the sampler from its seed); "
                                       "mean = ComfyUI's VAE encode"),
            ],
            outputs=[
                T.Reference.Output("reference", tooltip="The encoded reference, carrying the working size: for X-Dyna "
                                                        "Sampler and X-Dyna Load Driving Video."),
                io.Image.Output("reference_image", tooltip="The reference photo as the VAE saw it (cropped to the "
                                                           "working aspect and resized)."),
            ],
        )

    @classmethod
    def execute(cls, reference, vae, clip_vision, image_proj, width, height, latent):
        return io.NodeOutput(*cls.encode(reference, vae, clip_vision, image_proj, width, height, latent))

    @classmethod
    def encode(cls, reference, vae, clip_vision, image_proj, width, height, latent):
        from ..xdyna_core.reference import encode_reference_all

        width, height = check_output_size(width, height)  # before anything is encoded
        if latent not in LATENT_MODES:
            raise ValueError(f"latent must be one of {', '.join(LATENT_MODES)}, got {latent!r}")
        bridge.load_on_device([image_proj.patcher])
        with torch.no_grad():
            enc = encode_reference_all(image_to_uint8(reference), height, width, bridge.vae_moments(vae),
                                       bridge.clip_vision_hidden(clip_vision), image_proj.patcher.model,
                                       scaling_factor=VAE_SCALING_FACTOR)
        ref = {"encoding": enc, "latent_mode": latent, "width": width, "height": height}
        return (ref, uint8_to_image(enc.image))


NODES = [XDynaReferenceEncode]
