"""X-Dyna / SD1.5 UNet key names: the X-Dyna key groups of the manifest
(``spec/checkpoint_keys/xdyna_unet.json``: SD1.5 base, AnimateDiff-v1 motion modules,
Dynamics-Adapter ``attn1.to_q_ff/to_out_ff``, IP-Adapter ``attn2.to_k_ip/to_v_ip``), the UNet block
structure, and LDM (``input_blocks.*``) <-> diffusers names."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .keys import convert_by_pairs, max_index

#: Prefix of the UNet in a single-file (LDM) SD1.5 checkpoint.
LDM_UNET_PREFIX = "model.diffusion_model."
#: Key suffix of a motion module's positional encoding, shape (1, max_len, C): the frames it takes at most.
MOTION_PE_SUFFIX = ".pos_encoder.pe"

# ---------------------------------------------------------------------------------------------
# X-Dyna UNet key groups (as in the manifest)
# ---------------------------------------------------------------------------------------------
UNET_GROUPS = ("sd15_unet", "motion_module", "dynamics_adapter", "ip_adapter")


def unet_key_group(key: str) -> str:
    """Which part of the X-Dyna UNet a key belongs to (manifest ``group``)."""
    if ".motion_modules." in key:
        return "motion_module"
    if ".attn1.to_q_ff." in key or ".attn1.to_out_ff." in key:
        return "dynamics_adapter"
    if ".attn2.to_k_ip." in key or ".attn2.to_v_ip." in key:
        return "ip_adapter"
    return "sd15_unet"


def split_unet_groups(keys: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {g: [] for g in UNET_GROUPS}
    for k in keys:
        groups[unet_key_group(k)].append(k)
    return groups


# ---------------------------------------------------------------------------------------------
# UNet structure (shared by the LDM converter and the IP-Adapter numbering)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetLayout:
    """The block structure of an SD-style UNet, enough to translate key names.

    ``down_attn[i]`` / ``up_attn[i]``: whether level i has spatial transformers (diffusers order:
    up_blocks.0 is the deepest level). SD1.5: 4 levels, 2 layers, attention in down 0-2 / up 1-3.
    """

    num_levels: int = 4
    layers_per_block: int = 2
    down_attn: tuple = (True, True, True, False)
    up_attn: tuple = (False, True, True, True)
    mid_attn: bool = True

    @classmethod
    def sd15(cls) -> UNetLayout:
        return cls()

    @classmethod
    def from_diffusers_keys(cls, keys: Iterable[str]) -> UNetLayout:
        keys = list(keys)
        levels = max_index(keys, r"^down_blocks\.(\d+)\.") + 1
        if levels <= 0:
            raise ValueError("no 'down_blocks.*' keys: not a diffusers UNet state dict")
        layers = max_index(keys, r"^down_blocks\.0\.resnets\.(\d+)\.") + 1
        down = tuple(any(k.startswith(f"down_blocks.{i}.attentions.") for k in keys) for i in range(levels))
        up = tuple(any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys) for i in range(levels))
        mid = any(k.startswith("mid_block.attentions.") for k in keys)
        if not any(down) and not any(up) and not mid:
            # Adapter-only files have motion modules but may lack the attention blocks; use the
            # shape-free SD1.5 structure then (the caller checks against a real model anyway).
            down, up, mid = cls.down_attn, cls.up_attn, True
        return cls(levels, layers, down, up, mid)

    @classmethod
    def from_ldm_keys(cls, keys: Iterable[str]) -> UNetLayout:
        """Structure of an LDM UNet (keys without ``model.diffusion_model.``)."""
        keys = list(keys)
        n_in = max_index(keys, r"^input_blocks\.(\d+)\.") + 1
        if n_in <= 1:
            raise ValueError("no 'input_blocks.*' keys: not an LDM UNet state dict")
        ds = sorted({int(m.group(1)) for k in keys if (m := re.match(r"^input_blocks\.(\d+)\.0\.op\.", k))})
        # input blocks: [conv_in] + per level L units (+1 downsampler except the last level),
        # i.e. n_in = levels * (L + 1); the first downsampler sits at index L + 1.
        layers = ds[0] - 1 if ds else n_in - 1
        levels = n_in // (layers + 1)
        if levels * (layers + 1) != n_in:
            raise ValueError(f"LDM UNet with {n_in} input blocks does not fit a regular level structure")
        down = tuple(
            any(k.startswith(f"input_blocks.{1 + i * (layers + 1) + j}.1.") for j in range(layers) for k in keys)
            for i in range(levels)
        )
        up = tuple(
            any(
                k.startswith(f"output_blocks.{i * (layers + 1) + j}.1.")
                and not re.match(rf"^output_blocks\.{i * (layers + 1) + j}\.1\.conv\.", k)
                for j in range(layers + 1)
                for k in keys
            )
            for i in range(levels)
        )
        mid = any(k.startswith("middle_block.1.") for k in keys)
        return cls(levels, layers, down, up, mid)

    # -- module pairs ------------------------------------------------------------------------
    def module_pairs(self) -> list[tuple[str, str, str]]:
        """``(ldm_prefix, diffusers_prefix, kind)`` for every module, kind in resnet/attn/plain."""
        L = self.layers_per_block
        pairs = [
            ("time_embed.0", "time_embedding.linear_1", "plain"),
            ("time_embed.2", "time_embedding.linear_2", "plain"),
            ("input_blocks.0.0", "conv_in", "plain"),
            ("out.0", "conv_norm_out", "plain"),
            ("out.2", "conv_out", "plain"),
        ]
        for i in range(self.num_levels):
            for j in range(L):
                n = 1 + i * (L + 1) + j
                pairs.append((f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}", "resnet"))
                if self.down_attn[i]:
                    pairs.append((f"input_blocks.{n}.1", f"down_blocks.{i}.attentions.{j}", "plain"))
            if i < self.num_levels - 1:
                n = (i + 1) * (L + 1)
                pairs.append((f"input_blocks.{n}.0.op", f"down_blocks.{i}.downsamplers.0.conv", "plain"))
        pairs.append(("middle_block.0", "mid_block.resnets.0", "resnet"))
        if self.mid_attn:
            pairs.append(("middle_block.1", "mid_block.attentions.0", "plain"))
            pairs.append(("middle_block.2", "mid_block.resnets.1", "resnet"))
        else:
            pairs.append(("middle_block.1", "mid_block.resnets.1", "resnet"))
        for i in range(self.num_levels):
            for j in range(L + 1):
                n = i * (L + 1) + j
                pairs.append((f"output_blocks.{n}.0", f"up_blocks.{i}.resnets.{j}", "resnet"))
                if self.up_attn[i]:
                    pairs.append((f"output_blocks.{n}.1", f"up_blocks.{i}.attentions.{j}", "plain"))
            if i < self.num_levels - 1:
                n = i * (L + 1) + L
                slot = 2 if self.up_attn[i] else 1
                pairs.append((f"output_blocks.{n}.{slot}.conv", f"up_blocks.{i}.upsamplers.0.conv", "plain"))
        return pairs

    # -- IP-Adapter numbering -----------------------------------------------------------------
    def cross_attention_modules(self) -> list[str]:
        """UNet attn2 modules in diffusers' attention-processor order: down, up, then mid."""
        mods = []
        for i in range(self.num_levels):
            if self.down_attn[i]:
                mods += [f"down_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2" for j in range(self.layers_per_block)]
        for i in range(self.num_levels):
            if self.up_attn[i]:
                mods += [f"up_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2" for j in range(self.layers_per_block + 1)]
        if self.mid_attn:
            mods.append("mid_block.attentions.0.transformer_blocks.0.attn2")
        return mods

    def ip_adapter_index_map(self) -> dict[int, str]:
        """IP-Adapter file index -> UNet attn2 module. Processors alternate attn1 (even, plain
        processor without weights) and attn2 (odd, carries ``to_k_ip``/``to_v_ip``)."""
        return {2 * n + 1: m for n, m in enumerate(self.cross_attention_modules())}


# Resnet internals: LDM ResBlock -> diffusers ResnetBlock2D
_UNET_RESNET_RENAMES = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
)


def convert_ldm_unet_to_diffusers(sd: Mapping, layout: UNetLayout | None = None):
    """LDM UNet state dict (``input_blocks...``; without ``model.diffusion_model.``) -> diffusers
    names. Returns ``(state_dict, unmapped_keys)``; tensors are not copied."""
    layout = layout or UNetLayout.from_ldm_keys(sd.keys())
    return convert_by_pairs(sd, layout.module_pairs(), {"resnet": _UNET_RESNET_RENAMES}, reverse=False)


def convert_diffusers_unet_to_ldm(sd: Mapping, layout: UNetLayout | None = None):
    """Inverse of :func:`convert_ldm_unet_to_diffusers` (SD-base keys only; X-Dyna extras such as
    motion modules have no LDM name and come back as unmapped)."""
    base = {k: v for k, v in sd.items() if unet_key_group(k) == "sd15_unet"}
    extra = [k for k in sd if unet_key_group(k) != "sd15_unet"]
    layout = layout or UNetLayout.from_diffusers_keys(base.keys())
    out, unmapped = convert_by_pairs(base, layout.module_pairs(), {"resnet": _UNET_RESNET_RENAMES}, reverse=True)
    return out, unmapped + extra
