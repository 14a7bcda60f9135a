"""fp8 weight storage of the full-size UNet and pose ControlNet: weight memory and output difference.

Random full-size networks (bench_speed.random_init_), one call each at a small latent size:
weights stored in fp16 vs fp8 (float8_e4m3fn, per-tensor power-of-two scale,
xdyna_core/models/fp8.py). Output differences are measured against fp32 weights, for fp16 weights
and for fp8 weights, both computed in --compute (default fp32: fp16/bf16 matmuls are slow on CPU;
fp8 dequantization is exact in every dtype, so the weight rounding is what is measured).

    python bench/bench_fp8.py                                   # CPU: 8x8 latents, 2+1 frames
    python bench/bench_fp8.py --device cuda --compute fp16 --latent 112 64 --frames 16
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import random_init_, sync  # noqa: E402
from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig  # noqa: E402
from xdyna_core.models.fp8 import FP8_DTYPE, store_weights_fp8  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _flat(out):
    return torch.cat([o.float().flatten() for o in out[0] + [out[1]]]) if isinstance(out, tuple) else out.float().flatten()


def measure(name, make, inputs, device, compute):
    net = make()                                             # fp32 weights, CPU
    state = {k: v.clone() for k, v in net.state_dict().items()}
    fp16_bytes = sum(v.numel() * 2 if v.is_floating_point() else v.numel() * v.element_size() for v in state.values())

    def run(model):
        model = model.to(device).eval()
        args = [x.to(device=device, dtype=compute) if x.is_floating_point() else x.to(device) for x in inputs]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = _flat(model(*args))
        sync(device)
        return out, time.perf_counter() - t0

    ref, t_ref = run(net.to(compute))
    net.load_state_dict({k: v.half().to(compute) for k, v in state.items()})        # fp16-rounded weights
    out16, t16 = run(net)
    net.load_state_dict({k: v.to(compute) for k, v in state.items()})
    store_weights_fp8(net, compute)
    # as deployed with fp16 compute: fp8 weights 1 byte, fp32 scales 4, everything else fp16
    fp8_bytes = sum(t.numel() * (1 if t.dtype == FP8_DTYPE else 4 if n.endswith("weight_scale") else 2)
                    for n, t in list(net.named_parameters()) + list(net.named_buffers()))
    out8, t8 = run(net)

    def rel(x):
        return (x - ref).norm().item() / ref.norm().item(), (x - ref).abs().max().item() / ref.abs().max().item()

    r16, m16 = rel(out16)
    r8, m8 = rel(out8)
    print(f"{name}: weights fp16 {fp16_bytes / 2**30:.3f} GiB -> fp8 {fp8_bytes / 2**30:.3f} GiB "
          f"({fp16_bytes / fp8_bytes:.2f}x less)")
    print(f"  vs fp32 weights, {str(compute)[6:]} compute: fp16 weights RMS {r16:.2e} (max {m16:.2e}) | "
          f"fp8 weights RMS {r8:.2e} (max {m8:.2e}) | call {t_ref:.1f} / {t16:.1f} / {t8:.1f} s")
    del net


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compute", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--latent", type=int, nargs=2, default=(8, 8), metavar=("H", "W"))
    ap.add_argument("--frames", type=int, default=2, help="generated frames per UNet call (+1 reference)")
    ap.add_argument("--nets", nargs="+", choices=["unet", "controlnet"], default=["unet", "controlnet"])
    a = ap.parse_args(argv)
    device, compute = torch.device(a.device), DTYPES[a.compute]
    h, w = a.latent
    g = torch.Generator().manual_seed(0)
    t = torch.tensor(501)
    print(f"full-size random networks, latent {h}x{w}, {a.frames}+1 frames, {a.compute} compute on {device}")
    if "unet" in a.nets:
        inputs = (torch.randn(2, 4, a.frames + 1, h, w, generator=g), t, torch.randn(2, 93, 768, generator=g))
        measure("UNet", lambda: random_init_(UNet3DConditionModel(UNet3DConfig()), 0), inputs, device, compute)
    if "controlnet" in a.nets:
        inputs = (torch.randn(a.frames, 4, h, w, generator=g), t, torch.randn(a.frames, 77, 768, generator=g),
                  torch.rand(a.frames, 3, 8 * h, 8 * w, generator=g))
        measure("pose ControlNet", lambda: random_init_(ControlNetModel(ControlNetConfig()), 1), inputs, device, compute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
