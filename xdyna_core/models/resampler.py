"""IP-Adapter-plus image projection (the "Resampler", spec §1.7).

16 learned queries cross-attend (Perceiver style: keys/values over [image tokens ; queries]) to the
CLIP vision penultimate hidden states of the reference image, giving the 16 image tokens of the
UNet's IP cross-attention. Key names follow `ip-adapter-plus_sd15.bin['image_proj']`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .attention import attention


@dataclass
class ResamplerConfig:
    dim: int = 768
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16
    embedding_dim: int = 1280
    output_dim: int = 768
    ff_mult: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ResamplerConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class PerceiverAttention(nn.Module):
    def __init__(self, dim, dim_head, heads, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = operations.LayerNorm(dim, **kw)
        self.norm2 = operations.LayerNorm(dim, **kw)
        self.to_q = operations.Linear(dim, inner, bias=False, **kw)
        self.to_kv = operations.Linear(dim, inner * 2, bias=False, **kw)
        self.to_out = operations.Linear(inner, dim, bias=False, **kw)

    def forward(self, x, latents):
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        # The reference scales q and k by dim_head^-1/4 each: the same logits as 1/sqrt(dim_head).
        return self.to_out(attention(q, k, v, self.heads))


class _FeedForward(nn.Sequential):
    """LayerNorm → Linear → exact GELU → Linear, keys `0`, `1`, `3` as in the released file."""

    def __init__(self, dim, mult, operations=nn, device=None, dtype=None):
        kw = dict(device=device, dtype=dtype)
        super().__init__(
            operations.LayerNorm(dim, **kw),
            operations.Linear(dim, dim * mult, bias=False, **kw),
            nn.GELU(),
            operations.Linear(dim * mult, dim, bias=False, **kw),
        )


class Resampler(nn.Module):
    def __init__(self, config: ResamplerConfig = None, operations=nn, device=None, dtype=None):
        super().__init__()
        cfg = self.config = config or ResamplerConfig()
        kw = dict(device=device, dtype=dtype)
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim, **kw) / cfg.dim ** 0.5)
        self.proj_in = operations.Linear(cfg.embedding_dim, cfg.dim, **kw)
        self.proj_out = operations.Linear(cfg.dim, cfg.output_dim, **kw)
        self.norm_out = operations.LayerNorm(cfg.output_dim, **kw)
        self.layers = nn.ModuleList([
            nn.ModuleList([PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads, operations, **kw),
                           _FeedForward(cfg.dim, cfg.ff_mult, operations, **kw)])
            for _ in range(cfg.depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.embedding_dim:
            raise ValueError(f"Resampler expects CLIP vision hidden states (B, tokens, {cfg.embedding_dim}); "
                             f"got {tuple(x.shape)}")
        dtype = self.proj_in.weight.dtype
        x = self.proj_in(x.to(dtype))
        latents = self.latents.to(dtype).repeat(x.shape[0], 1, 1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
