"""ResNet blocks, resamplers and the timestep embedding (SD1.5 layout, diffusers key names).

Hidden states travel as (B·F, C, h, w): frames folded into the batch, so every 2-D conv is applied
per frame exactly as the reference's InflatedConv3d. The resnet GroupNorms of the X-Dyna UNet are
different: the reference applies `nn.GroupNorm` to the 5-D (B, C, F, h, w) tensor, so the
statistics span all frames of the call, the reference frame included (spec §1.2). `video_norm`
reproduces that; with F = 1 (the ControlNets) it is an ordinary per-image GroupNorm.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def video_norm(norm: nn.Module, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Apply a GroupNorm module jointly over the `frames` entries of each batch item."""
    if frames == 1:
        return norm(x)
    bf, c, h, w = x.shape
    b = bf // frames
    y = x.view(b, frames, c, h * w).transpose(1, 2).reshape(b, c, frames * h * w)
    y = norm(y)
    return y.view(b, c, frames, h * w).transpose(1, 2).reshape(bf, c, h, w)


def timestep_sinusoid(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """SD's time projection with flip_sin_to_cos=True, shift 0: [cos | sin] of t·e^{-ln(1e4)·k/half}."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int, operations=nn, device=None, dtype=None):
        super().__init__()
        self.linear_1 = operations.Linear(in_dim, dim, device=device, dtype=dtype)
        self.linear_2 = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


def broadcast_timesteps(timestep, batch: int, device) -> torch.Tensor:
    """(batch,) timesteps on `device`. Samplers should pass a tensor already on the device: a Python
    number becomes a host-to-device copy per call and, under torch.compile, a constant baked into
    the graph (one recompile per timestep); a tensor is a graph input."""
    if isinstance(timestep, torch.Tensor):
        t = timestep.to(device)
    else:
        t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t[None]
    if t.shape[0] == 1 and batch > 1:
        t = t.expand(batch)
    if t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(f"timestep must be a scalar or have one value per batch item ({batch}); got shape {tuple(t.shape)}")
    return t


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int,
                 eps: float, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.norm1 = operations.GroupNorm(groups, in_channels, eps=eps, affine=True, **kw)
        self.conv1 = operations.Conv2d(in_channels, out_channels, 3, padding=1, **kw)
        self.time_emb_proj = operations.Linear(temb_channels, out_channels, **kw)
        self.norm2 = operations.GroupNorm(groups, out_channels, eps=eps, affine=True, **kw)
        self.conv2 = operations.Conv2d(out_channels, out_channels, 3, padding=1, **kw)
        self.conv_shortcut = (operations.Conv2d(in_channels, out_channels, 1, **kw)
                              if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, frames: int = 1) -> torch.Tensor:
        """x: (B·frames, C, h, w); temb: (B, T) — one embedding per batch item, shared by its frames."""
        h = self.conv1(F.silu(video_norm(self.norm1, x, frames)))
        t = self.time_emb_proj(F.silu(temb))
        if frames > 1:
            t = t.repeat_interleave(frames, dim=0)
        h = h + t[:, :, None, None]
        h = self.conv2(F.silu(video_norm(self.norm2, h, frames)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class Downsample(nn.Module):
    def __init__(self, channels: int, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, stride=2, padding=1, device=device, dtype=dtype)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x, size=None):
        # `size` (the matching skip's size) keeps odd latent sizes aligned with their skips.
        if size is None:
            y = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            y = F.interpolate(x, size=size, mode="nearest")
        return self.conv(y)
