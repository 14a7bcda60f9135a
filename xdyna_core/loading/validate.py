"""Weights must be finite: a NaN or inf in a file (a broken training save or conversion) is
reported when it is read, naming the file and the first bad tensor — not as a black or NaN video
after a whole sampling run.

Cost: one pass over the floating-point data at load time (the data is read anyway). The test is
`torch.aminmax` (NaN propagates into the extremes, an inf is one of them): measured 0.3-0.5 ns per
element on one CPU core (fp16/bf16/fp32), ~0.5 s for the 1.3 G-parameter X-Dyna UNet; the obvious
`isfinite(t).all()` costs ~20 ns per element (a bool tensor per weight).
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import CheckpointError


def check_finite(sd: Mapping[str, torch.Tensor], name) -> Mapping[str, torch.Tensor]:
    """Return `sd` unchanged; raise CheckpointError naming `name` and the first tensor holding
    NaN/inf values (with how many)."""
    for key, t in sd.items():
        if not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()):
            continue
        lo, hi = torch.aminmax(t)
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            nan = int(torch.isnan(t).sum())
            inf = int(torch.isinf(t).sum())
            raise CheckpointError(f"{name}: tensor {key!r} {tuple(t.shape)} holds non-finite values "
                                  f"({nan} NaN, {inf} inf of {t.numel()}): the file is damaged or was saved "
                                  f"from a diverged run; re-download or re-convert it")
    return sd
