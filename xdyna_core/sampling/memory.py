"""Activation memory of one sampling window, for telling a memory manager what to keep free.

Measured with bench/bench_activation_memory.py (exact storage accounting on CPU, full-size random
networks): the peak of a step is linear in the window's frame-tokens (CFG batch x (1 + frames) x
h x w) and in the top-level width; the GEGLU feed-forward temporaries add a part bounded by the
rows per feed-forward pass (models/attention.py FeedForward.chunk_rows).
"""
from __future__ import annotations


import torch

from ..models.attention import FeedForward

_DEFAULT = object()
# activation floats per frame-token per top-level channel (bench/bench_activation_memory.py)
NON_FF_PER_TOKEN = 26.0
FF_PER_ROW = 10.5
MARGIN = 1.15   # allocator fragmentation and the decode/scheduler temporaries around a step


def window_activation_bytes(unet_config, h: int, w: int, frames: int = 16, batch: int = 2,
                            dtype: torch.dtype = torch.float16, ff_chunk_rows=_DEFAULT) -> int:
    """Estimated peak activation bytes of one window (ControlNet + UNet) for latents h x w."""
    rows = FeedForward.chunk_rows if ff_chunk_rows is _DEFAULT else ff_chunk_rows
    c0 = unet_config.block_out_channels[0]
    tokens = batch * (frames + 1) * h * w
    ff_rows = tokens if not rows else min(rows, tokens)
    size = torch.finfo(dtype).bits // 8
    return int(MARGIN * size * c0 * (NON_FF_PER_TOKEN * tokens + FF_PER_ROW * ff_rows))
