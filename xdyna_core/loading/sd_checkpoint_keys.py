"""The single-file (LDM / "CompVis") SD1.5 checkpoint: ``model.diffusion_model.*``,
``first_stage_model.*`` and ``cond_stage_model.transformer.*`` split into diffusers / HF parts, and
joined back (tiny test files)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .clip_keys import LDM_CLIP_PREFIX, convert_ldm_clip_to_hf
from .unet_keys import LDM_UNET_PREFIX, convert_diffusers_unet_to_ldm, convert_ldm_unet_to_diffusers
from .vae_keys import LDM_VAE_PREFIX, convert_diffusers_vae_to_ldm, convert_ldm_vae_to_diffusers

def split_ldm_checkpoint(sd: Mapping, parts: Iterable[str] = ("unet", "vae", "clip_text")) -> dict[str, dict]:
    """Single-file SD checkpoint -> {"unet", "vae", "clip_text"} in diffusers/HF names (only the
    requested ``parts`` are converted), plus "other" (schedule buffers, EMA copies...) untouched.
    Raises ValueError if a requested part has keys without a known mapping."""
    prefixes = {"unet": LDM_UNET_PREFIX, "vae": LDM_VAE_PREFIX, "clip_text": LDM_CLIP_PREFIX}
    converters = {
        "unet": convert_ldm_unet_to_diffusers,
        "vae": convert_ldm_vae_to_diffusers,
        "clip_text": convert_ldm_clip_to_hf,
    }
    parts = tuple(parts)
    out: dict[str, dict] = {name: {} for name in parts}
    out["other"] = {}
    for k, v in sd.items():
        for name in parts:
            if k.startswith(prefixes[name]):
                out[name][k[len(prefixes[name]):]] = v
                break
        else:
            out["other"][k] = v
    for name in parts:
        if out[name]:
            out[name], unmapped = converters[name](out[name])
            if unmapped:
                raise ValueError(f"{len(unmapped)} {name} keys of the LDM checkpoint have no known mapping, e.g. {unmapped[:3]}")
    return out


def join_ldm_checkpoint(unet: Mapping | None = None, vae: Mapping | None = None, clip_text: Mapping | None = None) -> dict:
    """diffusers/HF parts -> one LDM single-file state dict (used to write tiny SD1.5 files)."""
    out = {}
    if unet is not None:
        u, unmapped = convert_diffusers_unet_to_ldm(unet)
        if unmapped:
            raise ValueError(f"UNet keys without an LDM name: {unmapped[:3]}")
        out.update({LDM_UNET_PREFIX + k: v for k, v in u.items()})
    if vae is not None:
        v_, unmapped = convert_diffusers_vae_to_ldm(vae)
        if unmapped:
            raise ValueError(f"VAE keys without an LDM name: {unmapped[:3]}")
        out.update({LDM_VAE_PREFIX + k: v for k, v in v_.items()})
    if clip_text is not None:
        out.update({LDM_CLIP_PREFIX + k: v for k, v in clip_text.items()})
    return out
