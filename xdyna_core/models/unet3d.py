"""The X-Dyna denoiser: an SD1.5 UNet inflated to video (spec §1.1–§1.5).

Every spatial self-attention is the Dynamics-Adapter's mixed attention, every cross-attention is
the IP-Adapter attention over 77 text + 16 image tokens, and an AnimateDiff motion module follows
each resnet(/attention) unit of all four down and up blocks (20 modules, none in the mid block).
Frame 0 of every call is the clean reference latent.

Layout inside the network is (B·F, C, h, w); see resnet.py for why the resnet GroupNorms still see
all frames. State-dict keys equal the released checkpoint's (spec/checkpoint_keys/xdyna_unet.json).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SpatialTransformer
from .dynamics_adapter import MixedSelfAttention
from .motion_module import MotionModule
from .resnet import (Downsample, ResnetBlock, TimestepEmbedding, Upsample, broadcast_timesteps,
                     timestep_sinusoid, video_norm)

_SD_DOWN = ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"]
_SD_UP = ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"]


@dataclass
class UNet3DConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: Tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    num_attention_heads: int = 8  # SD1.5's "attention_head_dim" is really the head count
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    motion_num_heads: int = 8
    motion_max_len: int = 24
    num_text_tokens: int = 77
    num_image_tokens: int = 16

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if len(self.block_out_channels) != 4:
            raise ValueError(f"UNet3DConfig: expected 4 block_out_channels (SD1.5 layout), got {self.block_out_channels}")

    @classmethod
    def from_diffusers_config(cls, sd_config: dict, unet_additional_kwargs: Optional[dict] = None) -> "UNet3DConfig":
        """Build from an SD1.5 `unet/config.json` plus X-Dyna's `unet_additional_kwargs`."""
        down = sd_config.get("down_block_types")
        if down is not None and [d.replace("2D", "3D") for d in down] != _SD_DOWN:
            raise ValueError(f"X-Dyna needs the SD1.5 block layout {_SD_DOWN}, config has {down}")
        heads = sd_config.get("attention_head_dim", 8)
        if isinstance(heads, (list, tuple)):
            if len(set(heads)) != 1:
                raise ValueError(f"per-block head counts {heads} are not supported (SD1.5 uses one value)")
            heads = heads[0]
        mm = (unet_additional_kwargs or {}).get("motion_module_kwargs", {})
        return cls(
            in_channels=sd_config.get("in_channels", 4),
            out_channels=sd_config.get("out_channels", 4),
            block_out_channels=tuple(sd_config.get("block_out_channels", (320, 640, 1280, 1280))),
            layers_per_block=sd_config.get("layers_per_block", 2),
            num_attention_heads=heads,
            cross_attention_dim=sd_config.get("cross_attention_dim", 768),
            norm_num_groups=sd_config.get("norm_num_groups", 32),
            norm_eps=sd_config.get("norm_eps", 1e-5),
            motion_num_heads=mm.get("num_attention_heads", 8),
            motion_max_len=mm.get("temporal_position_encoding_max_len", 24),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNet3DConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _fold(t: torch.Tensor) -> torch.Tensor:
    """(B, C, F, h, w) -> (B·F, C, h, w)."""
    b, c, f, h, w = t.shape
    return t.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def _unfold(t: torch.Tensor, batch: int) -> torch.Tensor:
    bf, c, h, w = t.shape
    return t.view(batch, bf // batch, c, h, w).permute(0, 2, 1, 3, 4)


class _Block3D(nn.Module):
    """Shared construction of the units [resnet → (spatial transformer) → motion module]."""

    def _build_units(self, in_chs: Sequence[int], out_ch: int, temb: int, cfg: UNet3DConfig,
                     with_attention: bool, ops, device, dtype):
        kw = dict(operations=ops, device=device, dtype=dtype)
        self.resnets = nn.ModuleList([
            ResnetBlock(c, out_ch, temb, cfg.norm_num_groups, cfg.norm_eps, **kw) for c in in_chs
        ])
        if with_attention:
            self.attentions = nn.ModuleList([
                SpatialTransformer(out_ch, cfg.cross_attention_dim, cfg.num_attention_heads, cfg.norm_num_groups,
                                   MixedSelfAttention(out_ch, cfg.num_attention_heads, **kw),
                                   num_image_tokens=cfg.num_image_tokens, **kw)
                for _ in in_chs
            ])
        else:
            self.attentions = None
        self.motion_modules = nn.ModuleList([
            MotionModule(out_ch, cfg.motion_num_heads, cfg.motion_max_len, **kw) for _ in in_chs
        ])

    def _unit(self, i, x, temb, context, batch, frames):
        x = self.resnets[i](x, temb, frames)
        if self.attentions is not None:
            x = self.attentions[i](x, context, frames)
        return self.motion_modules[i](x, batch)


class DownBlock3D(_Block3D):
    def __init__(self, in_ch, out_ch, temb, cfg, with_attention, add_downsample, ops=nn, device=None, dtype=None):
        super().__init__()
        self._build_units([in_ch] + [out_ch] * (cfg.layers_per_block - 1), out_ch, temb, cfg,
                          with_attention, ops, device, dtype)
        self.downsamplers = (nn.ModuleList([Downsample(out_ch, ops, device, dtype)])
                             if add_downsample else None)

    def forward(self, x, temb, context, batch, frames):
        skips = []
        for i in range(len(self.resnets)):
            x = self._unit(i, x, temb, context, batch, frames)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock3D(_Block3D):
    def __init__(self, prev_ch, out_ch, skip_chs, temb, cfg, with_attention, add_upsample, ops=nn,
                 device=None, dtype=None):
        super().__init__()
        in_chs = [(prev_ch if j == 0 else out_ch) + skip_chs[j] for j in range(len(skip_chs))]
        self._build_units(in_chs, out_ch, temb, cfg, with_attention, ops, device, dtype)
        self.upsamplers = nn.ModuleList([Upsample(out_ch, ops, device, dtype)]) if add_upsample else None

    def forward(self, x, skips: List[torch.Tensor], temb, context, batch, frames, upsample_size=None):
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._unit(i, x, temb, context, batch, frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock3D(nn.Module):
    def __init__(self, ch, temb, cfg: UNet3DConfig, ops=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(operations=ops, device=device, dtype=dtype)
        self.resnets = nn.ModuleList([
            ResnetBlock(ch, ch, temb, cfg.norm_num_groups, cfg.norm_eps, **kw) for _ in range(2)
        ])
        self.attentions = nn.ModuleList([
            SpatialTransformer(ch, cfg.cross_attention_dim, cfg.num_attention_heads, cfg.norm_num_groups,
                               MixedSelfAttention(ch, cfg.num_attention_heads, **kw),
                               num_image_tokens=cfg.num_image_tokens, **kw)
        ])

    def forward(self, x, temb, context, batch, frames):
        x = self.resnets[0](x, temb, frames)
        x = self.attentions[0](x, context, frames)
        return self.resnets[1](x, temb, frames)


class UNet3DConditionModel(nn.Module):
    def __init__(self, config: Optional[UNet3DConfig] = None, operations=nn, device=None, dtype=None):
        super().__init__()
        cfg = self.config = config or UNet3DConfig()
        kw = dict(device=device, dtype=dtype)
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = operations.Conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw)
        self.time_embedding = TimestepEmbedding(ch[0], temb, operations, **kw)

        self.down_blocks = nn.ModuleList()
        skip_chs = [ch[0]]
        prev = ch[0]
        for i, out in enumerate(ch):
            last = i == len(ch) - 1
            self.down_blocks.append(DownBlock3D(prev, out, temb, cfg, with_attention=not last,
                                                add_downsample=not last, ops=operations, **kw))
            skip_chs += [out] * cfg.layers_per_block + ([] if last else [out])
            prev = out

        self.mid_block = MidBlock3D(ch[-1], temb, cfg, operations, **kw)

        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        prev = rev[0]
        n = cfg.layers_per_block + 1
        for i, out in enumerate(rev):
            last = i == len(rev) - 1
            block_skips = [skip_chs.pop() for _ in range(n)]
            self.up_blocks.append(UpBlock3D(prev, out, block_skips, temb, cfg, with_attention=i > 0,
                                            add_upsample=not last, ops=operations, **kw))
            prev = out

        self.conv_norm_out = operations.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps, affine=True, **kw)
        self.conv_out = operations.Conv2d(ch[0], cfg.out_channels, 3, padding=1, **kw)
        # Compute dtype; None = the dtype of the weights. ComfyUI sets it when storage != compute.
        self.compute_dtype = dtype

    @property
    def num_skips(self) -> int:
        return 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in self.down_blocks)

    def _check_inputs(self, sample, context, down_res, mid_res):
        cfg = self.config
        if sample.ndim != 5 or sample.shape[1] != cfg.in_channels:
            raise ValueError(f"UNet3D sample must be (B, {cfg.in_channels}, F, h, w) with frame 0 the "
                             f"reference latent; got {tuple(sample.shape)}")
        if sample.shape[2] - 1 > cfg.motion_max_len:
            raise ValueError(f"UNet3D call with {sample.shape[2] - 1} generated frames exceeds the motion "
                             f"module limit of {cfg.motion_max_len}; use context windows")
        n_txt = context.shape[1] - cfg.num_image_tokens if context.ndim == 3 else -1
        if (context.ndim != 3 or context.shape[0] != sample.shape[0] or n_txt <= 0 or n_txt % cfg.num_text_tokens
                or context.shape[2] != cfg.cross_attention_dim):
            raise ValueError(f"encoder_hidden_states must be (B={sample.shape[0]}, k·{cfg.num_text_tokens} text + "
                             f"{cfg.num_image_tokens} image tokens, {cfg.cross_attention_dim}); got {tuple(context.shape)}")
        if (down_res is None) != (mid_res is None):
            raise ValueError("give both ControlNet down and mid residuals, or neither")
        if down_res is not None and len(down_res) != self.num_skips:
            raise ValueError(f"expected {self.num_skips} ControlNet down residuals, got {len(down_res)}")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                down_block_additional_residuals: Optional[Sequence[torch.Tensor]] = None,
                mid_block_additional_residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check_inputs(sample, encoder_hidden_states, down_block_additional_residuals,
                           mid_block_additional_residual)
        dtype = self.compute_dtype or self.conv_in.weight.dtype
        b, _, frames, h, w = sample.shape
        ctx = encoder_hidden_states.to(dtype)
        t = broadcast_timesteps(timestep, b, sample.device)
        temb = self.time_embedding(timestep_sinusoid(t, self.config.block_out_channels[0]).to(dtype))

        x = self.conv_in(_fold(sample.to(dtype)))
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, ctx, b, frames)
            skips += block_skips

        if down_block_additional_residuals is not None:
            new_skips = []
            for s, r in zip(skips, down_block_additional_residuals):
                r = _fold(r.to(dtype))
                if r.shape != s.shape:
                    raise ValueError(f"ControlNet residual of shape {tuple(r.shape)} does not match the "
                                     f"skip state {tuple(s.shape)} (both with frames folded into batch)")
                new_skips.append(s + r)
            skips = new_skips

        x = self.mid_block(x, temb, ctx, b, frames)
        if mid_block_additional_residual is not None:
            x = x + _fold(mid_block_additional_residual.to(dtype))

        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[-2:] if skips else None
            x = block(x, block_skips, temb, ctx, b, frames, upsample_size=size)

        x = F.silu(video_norm(self.conv_norm_out, x, frames))
        x = self.conv_out(x)
        return _unfold(x, b).to(sample.dtype)
