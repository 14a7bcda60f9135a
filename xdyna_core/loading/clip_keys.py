"""CLIP text and vision encoder key names. Files use the transformers 4.x names ("file layout"):
``text_model.*``; ``vision_model.*`` + ``visual_projection.weight``. The towers themselves (the
modules under those prefixes) have the same names in every transformers version. LDM single files,
SDXL-style files and OpenCLIP vision towers are mapped to that layout."""
from __future__ import annotations

from collections.abc import Mapping

#: Prefix of the text encoder in a single-file (LDM) SD1.5 checkpoint.
LDM_CLIP_PREFIX = "cond_stage_model.transformer."

CLIP_TEXT_TOWER = "text_model."
CLIP_VISION_TOWER = "vision_model."
CLIP_VISION_PROJECTION = "visual_projection.weight"
_CLIP_TEXT_PREFIXES = (
    LDM_CLIP_PREFIX,  # LDM / ComfyUI SD1.x single files
    "conditioner.embedders.0.transformer.",  # SDXL-style single files (CLIP-L part)
    "text_encoder.",
    "transformer.",
)
_CLIP_TEXT_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.")


def convert_ldm_clip_to_hf(sd: Mapping):
    """Keys after ``cond_stage_model.transformer.`` -> HF ``CLIPTextModel`` keys (``text_model.*``).
    Old transformers versions saved them without the ``text_model.`` level."""
    out = {}
    for k, v in sd.items():
        out[k if k.startswith(CLIP_TEXT_TOWER) else CLIP_TEXT_TOWER + k] = v
    return out, []


def convert_text_encoder_keys(sd: Mapping) -> dict:
    """The ``text_model.*`` part of a text-encoder or full SD checkpoint, in the file layout.

    Handles HF files (``text_model.*``), LDM single files (``cond_stage_model.transformer.*``,
    including very old ones without the ``text_model.`` level) and drops ``position_ids`` (a
    buffer transformers recomputes) and unused heads (``text_projection``, ``logit_scale``).
    """
    for p in _CLIP_TEXT_PREFIXES:
        if any(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
            break
    sd = {k: v for k, v in sd.items() if k.startswith((CLIP_TEXT_TOWER,) + _CLIP_TEXT_ROOTS)}
    out = {k: v for k, v in convert_ldm_clip_to_hf(sd)[0].items() if not k.endswith("position_ids")}
    if not out:
        raise ValueError("no CLIP text-encoder weights found (expected keys starting with "
                         "'text_model.' or 'cond_stage_model.transformer.')")
    return out


def _split_in_proj(out, prefix, w, b):
    biases = b.chunk(3, 0) if b is not None else (None,) * 3
    for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, 0), biases, strict=True):
        out[f"{prefix}.{name}.weight"] = wi
        if bi is not None:
            out[f"{prefix}.{name}.bias"] = bi


_OPENCLIP_LAYER_RENAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                           "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}


def convert_vision_encoder_keys(sd: Mapping) -> dict:
    """A CLIP vision state dict in the file layout (``vision_model.*`` + ``visual_projection.weight``).

    Accepts HF files (IP-Adapter's ``image_encoder/model.safetensors``, ComfyUI ``models/clip_vision``
    files such as ``CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors``), full HF CLIPModel files (text
    tower dropped) and OpenCLIP files (``visual.conv1``, ``visual.transformer.resblocks.i`` with
    fused ``attn.in_proj_*``, ``visual.proj`` (D, P) stored transposed).
    """
    hf = {k: v for k, v in sd.items() if k.startswith((CLIP_VISION_TOWER, CLIP_VISION_PROJECTION))}
    if hf:
        return {k: v for k, v in hf.items() if not k.endswith("position_ids")}

    p = "visual." if any(k.startswith("visual.") for k in sd) else ""
    if p + "conv1.weight" not in sd:
        raise ValueError("no CLIP vision weights found (expected HF 'vision_model.*' keys or OpenCLIP "
                         "'visual.conv1.weight' / 'visual.transformer.resblocks.*')")
    vm = CLIP_VISION_TOWER
    out = {
        vm + "embeddings.class_embedding": sd[p + "class_embedding"],
        vm + "embeddings.patch_embedding.weight": sd[p + "conv1.weight"],
        vm + "embeddings.position_embedding.weight": sd[p + "positional_embedding"],
    }
    for src, dst in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"{vm}{dst}.weight"] = sd[f"{p}{src}.weight"]
        out[f"{vm}{dst}.bias"] = sd[f"{p}{src}.bias"]
    if p + "proj" in sd:
        out[CLIP_VISION_PROJECTION] = sd[p + "proj"].t().contiguous()
    rb = p + "transformer.resblocks."
    layers = sorted({int(k[len(rb):].split(".")[0]) for k in sd if k.startswith(rb)})
    for i in layers:
        src, dst = f"{rb}{i}.", f"{vm}encoder.layers.{i}."
        if any(k.startswith(src + "ls_") for k in sd):
            raise ValueError("OpenCLIP vision towers with LayerScale (ls_1/ls_2) are not supported")
        _split_in_proj(out, dst + "self_attn", sd[src + "attn.in_proj_weight"], sd.get(src + "attn.in_proj_bias"))
        for a, b in _OPENCLIP_LAYER_RENAMES.items():
            for t in ("weight", "bias"):
                if f"{src}{a}.{t}" in sd:
                    out[f"{dst}{b}.{t}"] = sd[f"{src}{a}.{t}"]
    return out


def clip_tower_keys(sd: Mapping, tower: str) -> dict:
    """File layout -> the names inside one tower (``CLIP_TEXT_TOWER`` or ``CLIP_VISION_TOWER``);
    everything outside it (the vision projection) is left out."""
    return {k[len(tower):]: v for k, v in sd.items() if k.startswith(tower)}
