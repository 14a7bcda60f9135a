"""VAE decode of a video: ours (`decode_latents` over our AutoencoderKL) against the official code's
loop (diffusers `AutoencoderKL`, one frame per call, as the official `decode_latents` does) on the
same random weights (full SD1.5 widths) and latents.

    python bench/bench_decode.py --frames 16 --size 128x128 --device cpu --dtype fp32

Ours runs before and after the decode changes of issue 24 in the same run: "literal" = the
upsamplers as nearest-x2-then-3x3-conv (``Upsample2D.subpixel = False``), "four-phase" = as four
2x2 convs; each at the frames-per-call given by --chunks (default: 8, the benchmarks' former
default, 4, the former default of `animate`, 1, and `decode_chunk(device)`'s choice). Runs are
interleaved (official, then each of ours, repeated) so that a machine whose load changes during the
run shifts every side alike; the median of the repeats is printed with the ratio official / ours
(> 1: ours is faster) and max |Δ| of the frames against the official's. Throughput counts the
literal decoder's FLOPs (torch's FLOP counter, one frame) for every variant, so a variant that
does the same job with fewer FLOPs shows as more TFLOP/s; MFU divides by --peak-tflops (default
790 on CUDA: dense fp16 on an H100 SXM; none on the CPU unless given).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import count_flops, random_init_, sync  # noqa: E402
from official_compare import official_vae  # noqa: E402
from xdyna_core.models.vae import AutoencoderKL, AutoencoderKLConfig, Upsample2D  # noqa: E402
from xdyna_core.sampling.pipeline import decode_chunk, decode_latents  # noqa: E402


@torch.no_grad()
def official_decode(vae, latents):
    """The official pipeline's decode_latents (animatediff/pipelines/pipeline_xdyna.py), verbatim in effect."""
    z = (1 / 0.18215 * latents)[0].transpose(0, 1)  # (f, c, h, w)
    video = torch.cat([vae.decode(z[i:i + 1]).sample for i in range(z.shape[0])])
    return (video / 2 + 0.5).clamp(0, 1).float()  # (f, 3, H, W)


@torch.no_grad()
def profile(vae, z, device, timed):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    vae.decode(z)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        vae.decode(z)
    print(prof.key_averages().table(sort_by="self_cpu_time_total" if device.type == "cpu" else
                                    "self_device_time_total", row_limit=8))
    contiguous = min(timed(lambda: vae.decode(z))[0] for _ in range(3))
    vae_cl = vae.to(memory_format=torch.channels_last)
    last = min(timed(lambda: vae_cl.decode(z.contiguous(memory_format=torch.channels_last)))[0] for _ in range(3))
    print(f"one frame, best of 3: contiguous {contiguous:.3f} s, channels-last {last:.3f} s "
          f"(contiguous/channels-last {contiguous / last:.2f}x)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(128, 128), help="WxH")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp32")
    ap.add_argument("--chunks", type=int, nargs="+", default=None, help="frames per call to try (default 8 4 1 + "
                    "the device's choice)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="only: where one frame's decode spends its time (torch profiler), then the same frame "
                         "with the decoder in channels-last layout")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    ours = random_init_(AutoencoderKL(AutoencoderKLConfig()), 2).to(device, dtype).eval()
    official = official_vae(ours).to(device, dtype).eval()
    W, H = args.size
    g = torch.Generator().manual_seed(0)
    latents = (torch.randn(1, 4, args.frames, H // 8, W // 8, generator=g) * 0.18215 * 4).to(device, dtype)

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        return time.perf_counter() - t0, out

    if args.profile:
        return profile(ours, latents[0, :, :1].transpose(0, 1) / 0.18215, device, timed)

    Upsample2D.subpixel = False
    with torch.no_grad():
        flops = count_flops(lambda: ours.decode(latents[0, :, :1].transpose(0, 1) / 0.18215)) * args.frames
    Upsample2D.subpixel = True
    peak = args.peak_tflops or (790.0 if device.type == "cuda" else None)
    chunks = args.chunks or sorted({8, 4, 1, decode_chunk(device)}, reverse=True)
    variants = [(name, sub, c) for name, sub in (("literal", False), ("four-phase", True)) for c in chunks]
    times = {v: [] for v in ["official", *variants]}
    err = {}

    def ours_run(subpixel, chunk):
        Upsample2D.subpixel = subpixel
        try:
            return decode_latents(ours.decode, latents, chunk=chunk, dtype=dtype)
        finally:
            Upsample2D.subpixel = True

    for _ in range(args.repeat):
        t, ref = timed(lambda: official_decode(official, latents))
        times["official"].append(t)
        for v in variants:
            t, out = timed(lambda: ours_run(v[1], v[2]))
            times[v].append(t)
            err[v] = (out[0].transpose(0, 1).float().cpu() - ref.cpu()).abs().max().item()
    base = statistics.median(times["official"])
    print(f"VAE decode, {args.frames} frames {W}x{H}, {args.dtype}, {args.device}, "
          f"threads {torch.get_num_threads()}, median of {args.repeat}")
    def rate(t):
        tf = flops / t / 1e12
        return f"{tf:.3f} TFLOP/s" + (f", MFU {tf / peak:.1%}" if peak else "")

    print(f"decoder work: {flops / 1e9:.1f} GFLOP for {args.frames} frames (literal decoder's count)")
    print(f"official (1 frame per call): {base:.2f} s  {rate(base)}")
    before = statistics.median(times[("literal", False, max(chunks))])
    for v in variants:
        t = statistics.median(times[v])
        print(f"ours {v[0]:10s} {v[2]} frame(s)/call: {t:.2f} s  official/ours {base / t:.2f}x  "
              f"vs literal at {max(chunks)}: {before / t:.2f}x  max |Δ| vs official {err[v]:.3g}  {rate(t)}")
    best = ("four-phase", True, decode_chunk(device))
    if best in times:
        print(f"default now (four-phase, {best[2]} frame(s)/call): official/ours "
              f"{base / statistics.median(times[best]):.2f}x")


if __name__ == "__main__":
    main()
