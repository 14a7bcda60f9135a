"""SD VAE key names: LDM (``encoder.down.*``, ``first_stage_model.*``) <-> diffusers AutoencoderKL,
including the attention layers that LDM stores as 1x1 convolutions."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .keys import convert_by_pairs, max_index

#: Prefix of the VAE in a single-file (LDM) SD1.5 checkpoint.
LDM_VAE_PREFIX = "first_stage_model."

_VAE_RESNET_RENAMES = (
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("nin_shortcut", "conv_shortcut"),
)
_VAE_ATTN_RENAMES = (
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
)
# diffusers < 0.14 named the VAE attention query/key/value/proj_attn
_OLD_DIFFUSERS_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_module_pairs(num_levels: int = 4, layers_per_block: int = 2) -> list[tuple[str, str, str]]:
    L = layers_per_block
    pairs = [
        ("quant_conv", "quant_conv", "plain"),
        ("post_quant_conv", "post_quant_conv", "plain"),
    ]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in", f"{part}.conv_in", "plain"),
            (f"{part}.conv_out", f"{part}.conv_out", "plain"),
            (f"{part}.norm_out", f"{part}.conv_norm_out", "plain"),
            (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", "resnet"),
            (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", "resnet"),
            (f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", "attn"),
        ]
    for i in range(num_levels):
        for j in range(L):
            pairs.append((f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", "resnet"))
        if i < num_levels - 1:
            pairs.append((f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv", "plain"))
    # the decoder's LDM "up" list is stored deepest-last; diffusers' up_blocks deepest-first
    for i in range(num_levels):
        ldm = num_levels - 1 - i
        for j in range(L + 1):
            pairs.append((f"decoder.up.{ldm}.block.{j}", f"decoder.up_blocks.{i}.resnets.{j}", "resnet"))
        if i < num_levels - 1:
            pairs.append((f"decoder.up.{ldm}.upsample.conv", f"decoder.up_blocks.{i}.upsamplers.0.conv", "plain"))
    return pairs


def _vae_attn_reshape(kind, rest, value, reverse):
    # LDM uses 1x1 convs for q/k/v/proj_out, diffusers Linear layers
    if kind != "attn" or not rest.endswith("weight") or not hasattr(value, "dim"):
        return value
    if not reverse and value.dim() == 4:
        return value.reshape(value.shape[0], value.shape[1])
    if reverse and value.dim() == 2:
        return value.reshape(value.shape[0], value.shape[1], 1, 1)
    return value


def vae_layout_from_keys(keys: Iterable[str], ldm: bool) -> tuple[int, int]:
    keys = list(keys)
    if ldm:
        levels = max_index(keys, r"^encoder\.down\.(\d+)\.") + 1
        layers = max_index(keys, r"^encoder\.down\.0\.block\.(\d+)\.") + 1
    else:
        levels = max_index(keys, r"^encoder\.down_blocks\.(\d+)\.") + 1
        layers = max_index(keys, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.") + 1
    if levels <= 0 or layers <= 0:
        raise ValueError("not a VAE state dict (no encoder down blocks)")
    return levels, layers


def convert_ldm_vae_to_diffusers(sd: Mapping):
    levels, layers = vae_layout_from_keys(sd.keys(), ldm=True)
    inner = {"resnet": _VAE_RESNET_RENAMES, "attn": _VAE_ATTN_RENAMES}
    return convert_by_pairs(sd, vae_module_pairs(levels, layers), inner, reverse=False, reshape=_vae_attn_reshape)


def convert_diffusers_vae_to_ldm(sd: Mapping):
    sd = {_modernize_vae_key(k): v for k, v in sd.items()}
    levels, layers = vae_layout_from_keys(sd.keys(), ldm=False)
    inner = {"resnet": _VAE_RESNET_RENAMES, "attn": _VAE_ATTN_RENAMES}
    return convert_by_pairs(sd, vae_module_pairs(levels, layers), inner, reverse=True, reshape=_vae_attn_reshape)


def _modernize_vae_key(k: str) -> str:
    m = re.match(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)(\..*)$", k)
    return f"{m.group(1)}{_OLD_DIFFUSERS_VAE_ATTN[m.group(2)]}{m.group(3)}" if m else k


_LDM_PREFIXES = (LDM_VAE_PREFIX, "vae.")


def _strip_vae_prefix(sd: Mapping) -> Mapping:
    for p in _LDM_PREFIXES:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return dict(sd)


def is_ldm_vae_layout(sd: Mapping) -> bool:
    """True when the (prefix-stripped) keys use the original LDM names (``encoder.down.0.block.0``)."""
    keys = _strip_vae_prefix({k: None for k in sd}).keys()
    return any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for k in keys)


def convert_ldm_vae_keys(sd: Mapping) -> Mapping:
    """Map an LDM-layout VAE state dict to the diffusers layout used by :class:`AutoencoderKL`.

    Accepts a full single-file SD checkpoint (only ``first_stage_model.*`` keys are taken), a bare
    LDM VAE file, or a file already in the diffusers layout (returned with the prefix removed).
    Keys that belong to training only (``loss.*``, discriminator, EMA counters) are dropped. The
    attention projections stored as 1x1 convs (C, C, 1, 1) become linear weights (C, C).
    """
    sd = _strip_vae_prefix(sd)
    if not is_ldm_vae_layout(sd):
        return {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}

    training_only = ("loss.", "model_ema.", "discriminator.")
    out, unmapped = convert_ldm_vae_to_diffusers({k: v for k, v in sd.items() if not k.startswith(training_only)})
    if unmapped:
        raise ValueError(f"convert_ldm_vae_keys: {len(unmapped)} VAE keys have no known mapping, e.g. {unmapped[:3]}")
    return out
