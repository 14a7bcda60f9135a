"""The Dynamics-Adapter: X-Dyna's mixed self-attention (paper §3.2, spec §1.3).

Frame 0 of every UNet call is the clean reference latent. In every spatial self-attention each
frame attends to itself as usual and, through a second query projection `to_q_ff`, to frame 0's
keys and values (computed with the same frozen `to_k`/`to_v`). The two results have their own
output projections and are summed:

    attn1(z_f) = to_out(MHA(q_f, k_f, v_f)) + to_out_ff(MHA(q_ff_f, k_0, v_0))

The adapter's only new parameters are `to_q_ff` and `to_out_ff`.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import attention


class MixedSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, operations=nn, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        lin = operations.Linear
        self.to_q = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_k = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_v = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_out = nn.ModuleList([lin(dim, dim, device=device, dtype=dtype), nn.Dropout(0.0)])
        self.to_q_ff = lin(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_out_ff = lin(dim, dim, device=device, dtype=dtype)

    def forward(self, z: torch.Tensor, frames: int = 1) -> torch.Tensor:
        """z: (B·frames, N, C), frame-major inside each batch item; frame 0 is the reference."""
        bf, n, c = z.shape
        b = bf // frames
        k = self.to_k(z)
        v = self.to_v(z)
        own = attention(self.to_q(z), k, v, self.heads)
        # The reference branch: every frame's to_q_ff queries (folded into one sequence per item)
        # against frame 0's keys/values of the same item.
        k0 = k.view(b, frames, n, c)[:, 0]
        v0 = v.view(b, frames, n, c)[:, 0]
        ref = attention(self.to_q_ff(z).reshape(b, frames * n, c), k0, v0, self.heads)
        return self.to_out[0](own) + self.to_out_ff(ref.reshape(bf, n, c))
