"""The pose and S-Face ControlNets (spec §1.6): a diffusers ControlNetModel on SD1.5's encoder.

Both are per-image 2-D networks; the pose net takes a 3-channel skeleton image, the S-Face net a
6-channel [local patches | global face] image. They see text tokens only (no image tokens) and
return 12 down residuals plus one mid residual, already passed through their zero convs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention, SpatialTransformer
from .resnet import Downsample, ResnetBlock, TimestepEmbedding, broadcast_timesteps, timestep_sinusoid


@dataclass
class ControlNetConfig:
    conditioning_channels: int = 3
    in_channels: int = 4
    block_out_channels: Tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    num_attention_heads: int = 8
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    conditioning_embedding_out_channels: Tuple[int, ...] = (16, 32, 96, 256)

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.conditioning_embedding_out_channels = tuple(int(c) for c in self.conditioning_embedding_out_channels)

    @classmethod
    def from_diffusers_config(cls, cfg: dict) -> "ControlNetConfig":
        down = cfg.get("down_block_types")
        expected = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
        if down is not None and list(down) != expected:
            raise ValueError(f"X-Dyna ControlNets use the SD1.5 block layout {expected}, config has {down}")
        heads = cfg.get("attention_head_dim", 8)
        if isinstance(heads, (list, tuple)):
            heads = heads[0]
        return cls(
            conditioning_channels=cfg.get("conditioning_channels", 3),
            in_channels=cfg.get("in_channels", 4),
            block_out_channels=tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280))),
            layers_per_block=cfg.get("layers_per_block", 2),
            num_attention_heads=heads,
            cross_attention_dim=cfg.get("cross_attention_dim", 768),
            norm_num_groups=cfg.get("norm_num_groups", 32),
            norm_eps=cfg.get("norm_eps", 1e-5),
            conditioning_embedding_out_channels=tuple(cfg.get("conditioning_embedding_out_channels", (16, 32, 96, 256))),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["conditioning_embedding_out_channels"] = list(self.conditioning_embedding_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ControlNetConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class ConditioningEmbedding(nn.Module):
    """Control image (full resolution) → latent-resolution features: conv, 3 × [conv, conv/2], conv."""

    def __init__(self, in_ch: int, channels, out_ch: int, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.conv_in = operations.Conv2d(in_ch, channels[0], 3, padding=1, **kw)
        blocks = []
        for a, b in zip(channels[:-1], channels[1:]):
            blocks.append(operations.Conv2d(a, a, 3, padding=1, **kw))
            blocks.append(operations.Conv2d(a, b, 3, padding=1, stride=2, **kw))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = operations.Conv2d(channels[-1], out_ch, 3, padding=1, **kw)

    def forward(self, x):
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


def _transformer(ch, cfg: ControlNetConfig, ops, kw):
    return SpatialTransformer(ch, cfg.cross_attention_dim, cfg.num_attention_heads, cfg.norm_num_groups,
                              CrossAttention(ch, heads=cfg.num_attention_heads, operations=ops, **kw),
                              operations=ops, **kw)


class _DownBlock2D(nn.Module):
    def __init__(self, in_ch, out_ch, temb, cfg: ControlNetConfig, with_attention, add_downsample, ops, kw):
        super().__init__()
        chs = [in_ch] + [out_ch] * (cfg.layers_per_block - 1)
        self.resnets = nn.ModuleList([ResnetBlock(c, out_ch, temb, cfg.norm_num_groups, cfg.norm_eps, ops, **kw)
                                      for c in chs])
        self.attentions = (nn.ModuleList([_transformer(out_ch, cfg, ops, kw) for _ in chs])
                           if with_attention else None)
        self.downsamplers = nn.ModuleList([Downsample(out_ch, ops, **kw)]) if add_downsample else None

    def forward(self, x, temb, context):
        states = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class _MidBlock2D(nn.Module):
    def __init__(self, ch, temb, cfg: ControlNetConfig, ops, kw):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, temb, cfg.norm_num_groups, cfg.norm_eps, ops, **kw)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList([_transformer(ch, cfg, ops, kw)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class ControlNetModel(nn.Module):
    def __init__(self, config: Optional[ControlNetConfig] = None, operations=nn, device=None, dtype=None):
        super().__init__()
        cfg = self.config = config or ControlNetConfig()
        kw = dict(device=device, dtype=dtype)
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = operations.Conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw)
        self.time_embedding = TimestepEmbedding(ch[0], temb, operations, **kw)
        self.controlnet_cond_embedding = ConditioningEmbedding(
            cfg.conditioning_channels, cfg.conditioning_embedding_out_channels, ch[0], operations, **kw)

        zero_convs = [ch[0]]
        self.down_blocks = nn.ModuleList()
        prev = ch[0]
        for i, out in enumerate(ch):
            last = i == len(ch) - 1
            self.down_blocks.append(_DownBlock2D(prev, out, temb, cfg, not last, not last, operations, kw))
            zero_convs += [out] * cfg.layers_per_block + ([] if last else [out])
            prev = out
        self.controlnet_down_blocks = nn.ModuleList([operations.Conv2d(c, c, 1, **kw) for c in zero_convs])
        self.mid_block = _MidBlock2D(ch[-1], temb, cfg, operations, kw)
        self.controlnet_mid_block = operations.Conv2d(ch[-1], ch[-1], 1, **kw)
        self.compute_dtype = dtype

    def embed_condition(self, controlnet_cond: torch.Tensor) -> torch.Tensor:
        """The control image's features. They do not depend on the timestep or the latents, so a
        sampler may compute them once per frame and pass them back as `cond_embedding`."""
        dtype = self.compute_dtype or self.conv_in.weight.dtype
        return self.controlnet_cond_embedding(controlnet_cond.to(dtype))

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                controlnet_cond: Optional[torch.Tensor] = None, conditioning_scale: float = 1.0,
                cond_embedding: Optional[torch.Tensor] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        cfg = self.config
        if cond_embedding is not None:
            if cond_embedding.shape[0] != sample.shape[0] or cond_embedding.shape[-2:] != sample.shape[-2:]:
                raise ValueError(f"cond_embedding {tuple(cond_embedding.shape)} does not match the latents "
                                 f"{tuple(sample.shape)}")
            return self._run(sample, timestep, encoder_hidden_states, cond_embedding, conditioning_scale)
        if controlnet_cond is None:
            raise ValueError("ControlNet needs a control image (controlnet_cond) or its cond_embedding")
        if sample.ndim != 4 or controlnet_cond.ndim != 4 or controlnet_cond.shape[1] != cfg.conditioning_channels:
            raise ValueError(f"ControlNet expects sample (N, {cfg.in_channels}, h, w) and a control image "
                             f"(N, {cfg.conditioning_channels}, 8h, 8w); got {tuple(sample.shape)} and "
                             f"{tuple(controlnet_cond.shape)}")
        if controlnet_cond.shape[0] != sample.shape[0] or controlnet_cond.shape[-2:] != torch.Size(
                [sample.shape[-2] * 8, sample.shape[-1] * 8]):
            raise ValueError(f"control image {tuple(controlnet_cond.shape)} must match the latents "
                             f"{tuple(sample.shape)}: same count, 8× their height and width")
        return self._run(sample, timestep, encoder_hidden_states, self.embed_condition(controlnet_cond),
                         conditioning_scale)

    def _run(self, sample, timestep, encoder_hidden_states, cond_embedding, conditioning_scale):
        dtype = self.compute_dtype or self.conv_in.weight.dtype
        n = sample.shape[0]
        t = broadcast_timesteps(timestep, n, sample.device)
        temb = self.time_embedding(timestep_sinusoid(t, self.config.block_out_channels[0]).to(dtype))
        context = encoder_hidden_states.to(dtype)

        x = self.conv_in(sample.to(dtype)) + cond_embedding.to(dtype)
        states = [x]
        for block in self.down_blocks:
            x, s = block(x, temb, context)
            states += s
        x = self.mid_block(x, temb, context)

        downs = [conv(s) * conditioning_scale for conv, s in zip(self.controlnet_down_blocks, states)]
        mid = self.controlnet_mid_block(x) * conditioning_scale
        return downs, mid
