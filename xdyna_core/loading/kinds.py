"""What kind of model a (prefix-stripped, flat) state dict holds, from its key names alone, and
how to describe it in an error message: the content test behind :mod:`.recognise`."""
from __future__ import annotations

from collections.abc import Mapping

from .ip_adapter_keys import IP_ADAPTER, IP_IMAGE_PROJ
from .unet_keys import LDM_UNET_PREFIX

KIND_DESCRIPTIONS = {
    "xdyna_unet": "an X-Dyna UNet (SD1.5 base + motion modules + Dynamics-Adapter + IP attention)",
    "xdyna_unet_adapters": "an X-Dyna UNet lacking SD1.5 base or motion-module weights (its Dynamics-Adapter "
                           "present; the rest is filled from other files)",
    "animatediff_ipplus": "I2V-Adapter's AnimateDiff + IP-plus UNet (animatediff_v15_v1_ipplus.pth: motion "
                          "modules + IP attention, no Dynamics-Adapter)",
    "motion_module": "an AnimateDiff motion-module file (no Dynamics-Adapter)",
    "animatediff_unet": "an AnimateDiff video UNet (SD UNet + motion modules, no X-Dyna Dynamics-Adapter)",
    "sd_unet": "a diffusers SD UNet (UNet2DConditionModel, no X-Dyna parts)",
    "sd_checkpoint": "a single-file Stable Diffusion checkpoint (LDM layout: model.diffusion_model.*)",
    "sd_unet_ldm": "a bare Stable Diffusion UNet in LDM layout (input_blocks.*)",
    "controlnet": "a diffusers ControlNet",
    "controlnet_ldm": "a ControlNet in LDM layout (control_model / input_hint_block)",
    "ip_adapter": "an IP-Adapter-plus file (image_proj Resampler + ip_adapter projections)",
    "ip_adapter_plain": "a plain IP-Adapter file (linear image_proj, not the plus/Resampler variant)",
    "resampler": "an IP-Adapter-plus Resampler (image_proj only)",
    "vae": "a VAE (diffusers AutoencoderKL layout)",
    "vae_ldm": "a VAE (LDM layout)",
    "clip_text": "a CLIP text encoder (HF layout)",
    "clip_vision": "a CLIP vision encoder (HF layout)",
    "clip_vision_openclip": "a CLIP vision encoder (open_clip layout)",
    "empty": "an empty file (no tensors)",
    "unknown": "an unrecognised model",
}


def describe(kind: str) -> str:
    return KIND_DESCRIPTIONS.get(kind, kind)


def _has(keys, *needles) -> bool:
    return all(any(n in k for k in keys) for n in needles)


def identify(sd: Mapping) -> str:
    """Kind of model a (prefix-stripped, flat) state dict holds; see ``KIND_DESCRIPTIONS``."""
    keys = list(sd.keys())
    if not keys:
        return "empty"
    ks = set(keys)
    starts = lambda p: any(k.startswith(p) for k in keys)
    if starts(IP_IMAGE_PROJ + ".") and starts(IP_ADAPTER + "."):
        return "ip_adapter" if f"{IP_IMAGE_PROJ}.latents" in ks else "ip_adapter_plain"
    if starts(LDM_UNET_PREFIX):
        return "sd_checkpoint"
    if starts("control_model.") or starts("input_hint_block."):
        return "controlnet_ldm"
    if "controlnet_cond_embedding.conv_in.weight" in ks or starts("controlnet_down_blocks."):
        return "controlnet"
    has_mm = _has(keys, ".motion_modules.")
    has_ff = _has(keys, ".attn1.to_q_ff.")
    if has_mm and not has_ff and _has(keys, ".attn2.to_k_ip."):
        return "animatediff_ipplus"
    if has_mm or has_ff:
        if "conv_in.weight" in ks and starts("down_blocks.0.resnets.") and has_mm and has_ff:
            return "xdyna_unet"
        if has_ff:
            return "xdyna_unet_adapters"
        return "animatediff_unet" if "conv_in.weight" in ks else "motion_module"
    if "conv_in.weight" in ks and starts("down_blocks.") and starts("mid_block."):
        return "sd_unet"
    if starts("input_blocks.") and starts("time_embed."):
        return "sd_unet_ldm"
    if "latents" in ks and starts("layers.0.0.to_q") and "proj_in.weight" in ks:
        return "resampler"
    if starts("encoder.down_blocks.") and starts("decoder."):
        return "vae"
    if starts("encoder.down.") and starts("decoder.up."):
        return "vae_ldm"
    if starts("text_model.encoder.layers.") or starts("transformer.text_model."):
        return "clip_text"
    if starts("vision_model.encoder.layers."):
        return "clip_vision"
    if starts("visual.transformer.resblocks."):
        return "clip_vision_openclip"
    return "unknown"


# Advice on where a recognised-but-wrong file belongs (used in error messages).
KIND_HINTS = {
    "sd_checkpoint": "it serves as the SD1.5 base model and belongs in models/checkpoints",
    "sd_unet": "it can serve as the SD1.5 base model",
    "sd_unet_ldm": "it can serve as the SD1.5 base model",
    "controlnet": "it belongs to the pose/face ControlNet input",
    "ip_adapter": "it belongs in models/ipadapter (IP-Adapter input)",
    "resampler": "it belongs to the IP-Adapter input",
    "vae": "VAEs come from the SD1.5 checkpoint or models/vae",
    "vae_ldm": "VAEs come from the SD1.5 checkpoint or models/vae",
    "clip_vision": "it belongs in models/clip_vision",
    "clip_vision_openclip": "it belongs in models/clip_vision",
    "clip_text": "the text encoder comes from the SD1.5 checkpoint",
    "motion_module": "X-Dyna needs its own UNet checkpoint, not a bare AnimateDiff module",
    "animatediff_ipplus": "it fills the motion modules and IP attention of an X-Dyna UNet file that lacks them "
                          "and belongs in models/xdyna or models/animatediff_models",
    "animatediff_unet": "X-Dyna needs its own UNet checkpoint, whose attention layers carry to_q_ff/to_out_ff",
}
