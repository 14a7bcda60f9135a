"""Attention layers shared by the X-Dyna UNet and its ControlNets.

Key names follow diffusers (`to_q`, `to_k`, `to_v`, `to_out.0`) so the official checkpoints load
unchanged. Every layer is built from an injectable `operations` namespace (default `torch.nn`) so
ComfyUI can pass `comfy.ops` classes for low-VRAM casting.

The attention kernel is one function, `attention(q, k, v, heads)`, on `(batch, tokens, heads*dim)`
tensors. It defaults to `scaled_dot_product_attention`; a host (ComfyUI) may swap it for its own
backend with `use_attention_backend`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v over `heads` heads; q (B, Nq, H·d), k/v (B, Nk, H·d)."""
    b, nq, c = q.shape
    d = c // heads
    q = q.view(b, nq, heads, d).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, d).transpose(1, 2)
    v = v.view(b, v.shape[1], heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, nq, c)


_backend: AttentionFn = sdpa_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return _backend(q, k, v, heads)


@contextlib.contextmanager
def use_attention_backend(fn: Optional[AttentionFn]):
    """Run a block of code with another attention kernel (same signature as `sdpa_attention`)."""
    global _backend
    previous = _backend
    _backend = fn or sdpa_attention
    try:
        yield
    finally:
        _backend = previous


def frame_shared_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                           frames: int) -> torch.Tensor:
    """Attention where the `frames` consecutive batch entries of q share one k/v entry.

    q: (B·frames, Nq, C); k, v: (B, Nk, C). Folding the frames into the query sequence is exact
    (softmax is per query row) and avoids repeating k/v once per frame.
    """
    bf, nq, c = q.shape
    out = attention(q.reshape(bf // frames, frames * nq, c), k, v, heads)
    return out.reshape(bf, nq, c)


class FeedForward(nn.Module):
    """GEGLU feed-forward (`net.0.proj`, `net.2`), as in SD1.5 and AnimateDiff."""

    def __init__(self, dim: int, mult: int = 4, operations=nn, device=None, dtype=None):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([
            _GEGLU(dim, inner, operations, device, dtype),
            nn.Dropout(0.0),
            operations.Linear(inner, dim, device=device, dtype=dtype),
        ])

    # Rows (tokens x batch) per pass. The GEGLU's 8x-wide temporaries dominate the activation peak at
    # the 64x112 level (~2.5 GiB in fp16 for a 16-frame CFG window); row chunks bound them at no
    # change of result (every row is computed alone) and ~no speed cost at this size.
    chunk_rows: Optional[int] = 32768

    def forward(self, x):
        rows = x.numel() // x.shape[-1]
        if not self.chunk_rows or rows <= self.chunk_rows:
            return self.net[2](self.net[0](x))
        flat = x.reshape(rows, x.shape[-1])
        out = None
        for i in range(0, rows, self.chunk_rows):
            y = self.net[2](self.net[0](flat[i:i + self.chunk_rows]))
            if out is None:
                out = y.new_empty(rows, y.shape[-1])
            out[i:i + y.shape[0]] = y
        return out.view(*x.shape[:-1], out.shape[-1])


def set_feed_forward_chunking(model: nn.Module, rows: Optional[int]) -> None:
    """Rows per feed-forward pass in every FeedForward of `model` (None or 0: no chunking)."""
    if rows is not None and rows < 0:
        raise ValueError(f"feed-forward chunk rows must be positive or None, got {rows}")
    for m in model.modules():
        if isinstance(m, FeedForward):
            m.chunk_rows = rows


class _GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out, operations, device, dtype):
        super().__init__()
        self.proj = operations.Linear(dim_in, dim_out * 2, device=device, dtype=dtype)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class CrossAttention(nn.Module):
    """Standard attention (self-attention when no context is given).

    With `num_image_tokens > 0` this is the IP-Adapter attention: the last `num_image_tokens`
    context tokens go through their own `to_k_ip`/`to_v_ip` projections and their attention result
    is added (scale `ip_scale`) to the text attention before the shared output projection.
    """

    def __init__(self, query_dim: int, context_dim: Optional[int] = None, heads: int = 8,
                 num_image_tokens: int = 0, operations=nn, device=None, dtype=None):
        super().__init__()
        context_dim = context_dim or query_dim
        self.heads = heads
        self.num_image_tokens = num_image_tokens
        self.ip_scale = 1.0
        lin = operations.Linear
        self.to_q = lin(query_dim, query_dim, bias=False, device=device, dtype=dtype)
        self.to_k = lin(context_dim, query_dim, bias=False, device=device, dtype=dtype)
        self.to_v = lin(context_dim, query_dim, bias=False, device=device, dtype=dtype)
        self.to_out = nn.ModuleList([lin(query_dim, query_dim, device=device, dtype=dtype), nn.Dropout(0.0)])
        if num_image_tokens:
            self.to_k_ip = lin(context_dim, query_dim, bias=False, device=device, dtype=dtype)
            self.to_v_ip = lin(context_dim, query_dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, frames: int = 1):
        """x: (B·frames, N, C). context: (B, T, D), shared by the `frames` entries of each item."""
        q = self.to_q(x)
        if context is None:
            out = attention(q, self.to_k(x), self.to_v(x), self.heads)
            return self.to_out[0](out)
        if self.num_image_tokens:
            text, image = context[:, :-self.num_image_tokens], context[:, -self.num_image_tokens:]
        else:
            text, image = context, None
        out = frame_shared_attention(q, self.to_k(text), self.to_v(text), self.heads, frames)
        if image is not None:
            ip = frame_shared_attention(q, self.to_k_ip(image), self.to_v_ip(image), self.heads, frames)
            out = out + self.ip_scale * ip
        return self.to_out[0](out)


class BasicTransformerBlock(nn.Module):
    """x += attn1(LN1 x); x += attn2(LN2 x, context); x += FF(LN3 x).

    `self_attention` builds attn1; the X-Dyna UNet passes the Dynamics-Adapter's mixed attention,
    the ControlNets a plain self-attention.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, self_attention: nn.Module,
                 num_image_tokens: int = 0, operations=nn, device=None, dtype=None):
        super().__init__()
        ln = operations.LayerNorm
        self.attn1 = self_attention
        self.norm1 = ln(dim, device=device, dtype=dtype)
        self.attn2 = CrossAttention(dim, context_dim, heads, num_image_tokens, operations, device, dtype)
        self.norm2 = ln(dim, device=device, dtype=dtype)
        self.ff = FeedForward(dim, operations=operations, device=device, dtype=dtype)
        self.norm3 = ln(dim, device=device, dtype=dtype)

    def forward(self, x, context, frames: int = 1):
        x = self.attn1(self.norm1(x), frames=frames) + x
        x = self.attn2(self.norm2(x), context, frames=frames) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame spatial transformer (diffusers Transformer2DModel / AnimateDiff Transformer3DModel).

    GroupNorm(eps 1e-6) → 1×1 conv → tokens → one BasicTransformerBlock → 1×1 conv → + input.
    Works on (B·frames, C, h, w); the context (B, T, D) is shared by each item's frames.
    """

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int,
                 self_attention: nn.Module, num_image_tokens: int = 0, operations=nn,
                 device=None, dtype=None):
        super().__init__()
        self.norm = operations.GroupNorm(groups, channels, eps=1e-6, affine=True, device=device, dtype=dtype)
        self.proj_in = operations.Conv2d(channels, channels, 1, device=device, dtype=dtype)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(channels, context_dim, heads, self_attention, num_image_tokens,
                                  operations, device, dtype)
        ])
        self.proj_out = operations.Conv2d(channels, channels, 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frames: int = 1) -> torch.Tensor:
        bf, c, h, w = x.shape
        y = self.proj_in(self.norm(x))
        y = y.permute(0, 2, 3, 1).reshape(bf, h * w, c)
        for block in self.transformer_blocks:
            y = block(y, context, frames=frames)
        # Back to the standard (B·F, C, h, w) layout before the 1×1 conv: a permuted (channels-last)
        # tensor would make proj_out return channels-last, and that layout would leak into every
        # following convolution (the official code also calls .contiguous() here; same values).
        y = y.reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(y) + x
