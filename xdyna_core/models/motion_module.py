"""AnimateDiff-v1 motion module as X-Dyna uses it (`cross_id=True`, spec §1.5).

Frame 0 (the reference latent) passes through unchanged; a temporal transformer runs over frames
1..F-1 only: each spatial position attends over those frames, with a sinusoidal position table
added to the normalised tokens before the q/k/v projections.
Key names follow AnimateDiff (`temporal_transformer.transformer_blocks.0.attention_blocks.i`,
`norms.i`, `ff`, `ff_norm`, `pos_encoder.pe`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import FeedForward, attention


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """pe[p, 2i] = sin(p·e^{-2i·ln(10000)/dim}), pe[p, 2i+1] = cos(same); shape (1, max_len, dim)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_len: int, device=None):
        super().__init__()
        # Persistent: the released checkpoints carry the table.
        self.register_buffer("pe", sinusoidal_table(max_len, dim).to(device), persistent=True)

    def forward(self, x):
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"motion module sees {x.shape[1]} frames, its position table holds "
                             f"{self.pe.shape[1]}; use a context length of at most {self.pe.shape[1]}")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int, operations=nn, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        lin = operations.Linear
        self.to_q = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_k = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_v = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_out = nn.ModuleList([lin(dim, dim, device=device, dtype=dtype), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_len, device=device)

    def forward(self, x):
        """x: (B·positions, frames, C)."""
        x = self.pos_encoder(x)
        return self.to_out[0](attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim, heads, max_len, num_attention_blocks=2, operations=nn, device=None, dtype=None):
        super().__init__()
        self.attention_blocks = nn.ModuleList([
            TemporalSelfAttention(dim, heads, max_len, operations, device, dtype)
            for _ in range(num_attention_blocks)
        ])
        self.norms = nn.ModuleList([operations.LayerNorm(dim, device=device, dtype=dtype)
                                    for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, operations=operations, device=device, dtype=dtype)
        self.ff_norm = operations.LayerNorm(dim, device=device, dtype=dtype)

    def forward(self, x):
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, dim, heads, max_len, operations=nn, device=None, dtype=None):
        super().__init__()
        # 32 groups are hard-wired in the reference motion module, whatever the UNet's setting.
        self.norm = operations.GroupNorm(32, dim, eps=1e-6, affine=True, device=device, dtype=dtype)
        self.proj_in = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.transformer_blocks = nn.ModuleList([
            TemporalTransformerBlock(dim, heads, max_len, operations=operations, device=device, dtype=dtype)
        ])
        self.proj_out = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """x: (batch·frames, C, h, w) → same shape."""
        bf, c, h, w = x.shape
        frames = bf // batch
        y = self.norm(x)
        # (b f) c h w -> (b h w) f c : each spatial position becomes one temporal sequence.
        y = y.view(batch, frames, c, h * w).permute(0, 3, 1, 2).reshape(batch * h * w, frames, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y)
        y = y.view(batch, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return y + x


class MotionModule(nn.Module):
    """VanillaTemporalModule with `cross_id`: the reference frame 0 is never touched."""

    def __init__(self, dim: int, heads: int = 8, max_len: int = 24, operations=nn, device=None, dtype=None):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(dim, heads, max_len, operations, device, dtype)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        frames = bf // batch
        if frames <= 1:
            return x
        video = x.view(batch, frames, c, h, w)
        moving = video[:, 1:].reshape(batch * (frames - 1), c, h, w)
        moving = self.temporal_transformer(moving, batch).view(batch, frames - 1, c, h, w)
        return torch.cat([video[:, :1], moving], dim=1).view(bf, c, h, w)
