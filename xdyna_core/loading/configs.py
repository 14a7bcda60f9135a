"""Model configs inferred from checkpoint shapes (the released files carry no config)."""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from . import keys as K
from .files import CheckpointError
from .unet_keys import MOTION_PE_SUFFIX
from ..models.controlnet import ControlNetConfig
from ..models.resampler import ResamplerConfig
from ..models.unet3d import UNet3DConfig
from ..models.vae import AutoencoderKLConfig


def _replace(cfg, **kw):
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in kw.items() if k in names and v is not None})


def infer_unet_config(sd: Mapping, base=None):
    base = base or UNet3DConfig()
    kw: dict[str, Any] = {}
    if "conv_in.weight" in sd:
        kw["in_channels"] = sd["conv_in.weight"].shape[1]
    if "conv_out.weight" in sd:
        kw["out_channels"] = sd["conv_out.weight"].shape[0]
    levels = K.max_index(sd.keys(), r"^down_blocks\.(\d+)\.") + 1
    chans = []
    for i in range(levels):
        w = sd.get(f"down_blocks.{i}.resnets.0.conv1.weight")
        if w is None:
            w = sd.get(f"down_blocks.{i}.motion_modules.0.temporal_transformer.norm.weight")
        if w is None:
            chans = []
            break
        chans.append(int(w.shape[0]))
    if chans:
        kw["block_out_channels"] = tuple(chans)
    layers = max(K.max_index(sd.keys(), r"^down_blocks\.0\.resnets\.(\d+)\."),
                 K.max_index(sd.keys(), r"^down_blocks\.0\.motion_modules\.(\d+)\.")) + 1
    if layers > 0:
        kw["layers_per_block"] = layers
    for k, v in sd.items():
        if k.endswith((".attn2.to_k.weight", ".attn2.to_k_ip.weight")):
            kw["cross_attention_dim"] = int(v.shape[1])
            break
    for k, v in sd.items():
        if k.endswith(MOTION_PE_SUFFIX):
            kw["motion_max_len"] = int(v.shape[1])
            break
    return _replace(base, **kw)


def infer_controlnet_config(sd: Mapping, base=None):
    base = base or ControlNetConfig()
    kw: dict[str, Any] = {}
    w = sd.get("controlnet_cond_embedding.conv_in.weight")
    if w is not None:
        kw["conditioning_channels"] = int(w.shape[1])
        emb = [int(w.shape[0])]
        i = 1
        while f"controlnet_cond_embedding.blocks.{i}.weight" in sd:
            emb.append(int(sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]))
            i += 2
        kw["conditioning_embedding_out_channels"] = tuple(emb)
    if "conv_in.weight" in sd:
        kw["in_channels"] = int(sd["conv_in.weight"].shape[1])
    levels = K.max_index(sd.keys(), r"^down_blocks\.(\d+)\.") + 1
    chans = [sd.get(f"down_blocks.{i}.resnets.0.conv1.weight") for i in range(levels)]
    if levels > 0 and all(c is not None for c in chans):
        kw["block_out_channels"] = tuple(int(c.shape[0]) for c in chans)
    layers = K.max_index(sd.keys(), r"^down_blocks\.0\.resnets\.(\d+)\.") + 1
    if layers > 0:
        kw["layers_per_block"] = layers
    for k, v in sd.items():
        if k.endswith(".attn2.to_k.weight"):
            kw["cross_attention_dim"] = int(v.shape[1])
            break
    return _replace(base, **kw)


def infer_resampler_config(sd: Mapping, base=None):
    """Dims from shapes; heads/dim_head are not visible in shapes: IP-Adapter-plus uses
    dim_head 64, so heads = inner width / 64 unless the base config says otherwise."""
    base = base or ResamplerConfig()
    try:
        latents = sd["latents"]
        kw = dict(
            dim=int(latents.shape[2]),
            num_queries=int(latents.shape[1]),
            embedding_dim=int(sd["proj_in.weight"].shape[1]),
            output_dim=int(sd["proj_out.weight"].shape[0]),
            depth=K.max_index(sd.keys(), r"^layers\.(\d+)\.") + 1,
            ff_mult=int(sd["layers.0.1.1.weight"].shape[0]) // int(latents.shape[2]),
        )
        inner = int(sd["layers.0.0.to_q.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"Resampler weights lack {e.args[0]!r}") from e
    if base.heads * base.dim_head != inner:
        if inner % 64:
            raise CheckpointError(
                f"Resampler attention width {inner} is not heads x 64; the number of heads cannot be "
                "inferred: pass a config (or use a file carrying 'xdyna_config' metadata)"
            )
        kw.update(heads=inner // 64, dim_head=64)
    return _replace(base, **kw)


def _resolve_config(cls, explicit, meta: dict | None, infer, sd, name: str):
    """Explicit config > config in the file's metadata > inferred from shapes on the defaults."""
    try:
        if explicit is not None:
            return explicit if not isinstance(explicit, Mapping) else cls.from_dict(dict(explicit))
        if meta is not None:
            return cls.from_dict(meta)
        return infer(sd)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{name}: cannot build the {cls.__name__}: {e}") from e


def _count(keys, pattern: str) -> int:
    """Number of numbered blocks ``pattern`` (one group) finds among ``keys``."""
    idx = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(idx) + 1 if idx else 0


def infer_vae_config(sd: Mapping, meta: dict | None = None):
    """AutoencoderKLConfig from the file's config metadata, else from a diffusers-layout VAE's shapes."""
    if meta:
        return AutoencoderKLConfig.from_dict(meta)
    levels = _count(sd, r"encoder\.down_blocks\.(\d+)\.")
    chans = tuple(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(levels))
    layers = _count(sd, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")
    return AutoencoderKLConfig(block_out_channels=chans, layers_per_block=layers,
                               latent_channels=sd["decoder.conv_in.weight"].shape[1])
