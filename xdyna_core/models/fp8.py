"""fp8 weight storage for the UNet and ControlNets (float8_e4m3fn, one scale per tensor).

The Linear and Conv2d weights (all but ~0.1 % of the parameters) are stored as float8_e4m3fn,
halving weight memory against fp16/bf16; biases, norms and buffers stay in the compute dtype. A
layer computes with ``dequantize(weight, weight_scale, compute dtype)``: the matmuls and
convolutions run in fp16/bf16/fp32 as before, only the stored weights are rounded (3 mantissa
bits, the dominant error).

The per-tensor scale is a power of two near ``max|W| / 448`` (448 = e4m3's largest finite value):
then every dequantized weight ``q * scale`` is exact in fp16, bf16 and fp32, so an fp8 network is
exactly the full-precision network with rounded weights, whatever the compute dtype.

Opt-in: ``store_weights_fp8(model, compute_dtype)`` converts a loaded network in place (the CLI's
``--weights fp8``). ComfyUI's cast layers stream and cast weights themselves; the node adapter passes
a ``layer_class`` built on them (nodes/comfy_bridge.py) that adds the scale after ComfyUI's cast.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max           # 448
_MIN_SCALE_EXP = -24                           # 2^-24: the smallest fp16 power of two (exact)


def quantize_per_tensor(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` with ``q`` float8_e4m3fn and ``scale`` a 0-d float32 power of two,
    ``q * scale ≈ weight`` (round to nearest, |q| <= 448)."""
    w = weight.detach().float()
    amax = w.abs().max().item() if w.numel() else 0.0
    if not math.isfinite(amax):
        raise ValueError(f"cannot store non-finite weights in fp8 (max |w| = {amax})")
    exp = math.ceil(math.log2(amax / FP8_MAX)) if amax > 0 else 0
    scale = torch.tensor(2.0 ** max(exp, _MIN_SCALE_EXP), dtype=torch.float32, device=w.device)
    q = (w / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight * scale`` in ``dtype``; ``weight`` is fp8 or already cast to ``dtype`` (exact either way)."""
    return weight.to(dtype) * scale.to(device=weight.device, dtype=dtype)


class Fp8Layer:
    """Mixin for an fp8-stored nn.Linear / nn.Conv2d: dequantize the weight in the input's dtype."""

    weight_scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = dequantize(self.weight, self.weight_scale, x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if isinstance(self, nn.Conv2d):
            return self._conv_forward(x, weight, bias)
        return F.linear(x, weight, bias)


_CLASSES: dict = {}


def fp8_layer_class(cls: type) -> type:
    """The fp8 variant of a Linear/Conv2d class (made once per class)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Fp8{cls.__name__}", (Fp8Layer, cls), {})
    return _CLASSES[cls]


def is_fp8_layer(module: nn.Module) -> bool:
    return getattr(module, "weight", None) is not None and module.weight.dtype == FP8_DTYPE


def store_weights_fp8(model: nn.Module, compute_dtype: torch.dtype,
                      layer_class: Callable[[type], type] = fp8_layer_class) -> nn.Module:
    """Store every Linear/Conv2d weight of ``model`` as scaled float8_e4m3fn, in place.

    ``compute_dtype`` becomes the model's compute dtype (the dtype of its other parameters is
    kept); ``layer_class(cls)`` gives the fp8 variant of a layer class. Returns ``model``.
    """
    if compute_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"fp8 weights compute in fp16, bf16 or fp32, not {compute_dtype}")
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or is_fp8_layer(m):
            continue
        q, scale = quantize_per_tensor(m.weight)
        m.weight = nn.Parameter(q, requires_grad=False)
        m.register_buffer("weight_scale", scale)
        m.__class__ = layer_class(type(m))
    if hasattr(model, "compute_dtype"):
        model.compute_dtype = compute_dtype
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


WEIGHT_FORMATS = ("default", "fp8")


def check_weight_format(name: Optional[str]) -> str:
    name = name or "default"
    if name not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, got {name!r}")
    return name
