"""Float pixels (0..1: a ComfyUI IMAGE, a decoded frame) -> uint8, with one rounding rule.

Rounding is half up: ``floor(clamp(x, 0, 1) * 255 + 0.5)``, so k/255 maps back to k exactly and
(k + 0.5)/255 maps to k + 1 (in float32 too). ComfyUI's own SaveImage truncates instead; the
comparisons against it allow one step for that (tests/real_comfyui/test_fronts_agree.py).
"""
from __future__ import annotations

import numpy as np
import torch


def to_uint8(x):
    """uint8 of a float tensor or array in 0..1 (out-of-range values clamped), same type and shape.
    NaN has no uint8 value: callers that may meet it check first."""
    if isinstance(x, torch.Tensor):
        return (x.float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
    a = np.asarray(x, dtype=np.float32)
    return (np.clip(a, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)

