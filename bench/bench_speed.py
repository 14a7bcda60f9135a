"""Speed and memory of the X-Dyna sampler (issue: speed and memory on GPU).

Builds full-size networks with random weights (scaled so activations stay finite), runs the full
sampler (25 DDIM steps, CFG, pose ControlNet, context windows) and prints, per run: wall time per
phase (encoding, sampling, decoding; preprocessing excluded), peak GPU memory, network calls per
step, and MFU against a FLOP count taken with torch's FLOP counter on one window.

    python bench/bench_speed.py --frames 16 48 192 --steps 25 --dtype fp16           # GPU, full size
    python bench/bench_speed.py --frames 192 --time-steps 3                          # time 3 steps, scale to 25
    python bench/bench_speed.py --tiny --device cpu --frames 16 48 --steps 2         # CPU smoke run
    python bench/bench_speed.py --compare-fp32                                       # fp16/bf16 vs fp32 difference
    python bench/bench_speed.py --frames 16 --encoders --memory low                  # 8 GB budget mode: peaks per phase
    python bench/bench_speed.py --frames 16 --compile default                        # torch.compile (compile time apart)
    python bench/bench_speed.py --frames 16 --weights fp8 --channels-last            # fp8 weights; NHWC weights

`--peak-tflops` sets the MFU denominator (default 790: dense bf16/fp16 measured on an H100 SXM).
`--encoders` adds the CLIP vision encoder (ViT-H), Resampler and CLIP text encoder to the encode
phase (otherwise random tokens stand in); `--memory low` keeps only each phase's networks on the
GPU (xdyna_core/offload.py) and prints the peak of every phase. The comparison with the official
code is bench/official_compare.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xdyna_core.models import (ControlNetConfig, ControlNetModel, UNet3DConditionModel,  # noqa: E402
                               UNet3DConfig)
from xdyna_core.models.clip import (PenultimateCLIPVision, new_text_encoder, new_vision_encoder,  # noqa: E402
                                    text_config, vision_config)
from xdyna_core.models.resampler import Resampler, ResamplerConfig  # noqa: E402
from xdyna_core.models.vae import AutoencoderKL, AutoencoderKLConfig  # noqa: E402
from xdyna_core.offload import PhasePlacement  # noqa: E402
from xdyna_core.reference import clip_image_hidden, clip_uncond_hidden, image_tokens  # noqa: E402
from xdyna_core.sampling.context_windows import context_windows  # noqa: E402
from xdyna_core.sampling.pipeline import decode_chunk, decode_latents, sample_video  # noqa: E402
from xdyna_core.sampling.settings import SamplingSettings  # noqa: E402
from xdyna_core.sd15 import VAE_SCALING_FACTOR  # noqa: E402


def random_init_(model: torch.nn.Module, seed: int = 0):
    """N(0, 1/fan_in) weights, unit norm gains, small biases: finite activations at any depth."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g).mul_(fan_in ** -0.5).to(p.dtype))
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    return model


def build_encoders(tiny: bool, device, dtype):
    """CLIP vision (ViT-H/14), IP-Adapter Resampler and CLIP text encoder with random weights."""
    if tiny:
        vis = vision_config(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                            image_size=28, patch_size=14, projection_dim=32)
        txt = text_config(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2)
        res = ResamplerConfig(dim=32, depth=2, dim_head=12, heads=4, embedding_dim=48, output_dim=32)
    else:
        vis, txt, res = vision_config(), text_config(), ResamplerConfig()
    out = []
    # the standalone path's models: transformers' CLIP towers, the vision one without its last layer
    for build, cfg, seed in ((new_vision_encoder, vis, 4), (Resampler, res, 5),
                             (new_text_encoder, txt, 6)):
        out.append(random_init_(build(cfg), seed).to(device=device, dtype=dtype).eval())
    out[0] = PenultimateCLIPVision(out[0])
    return out


def build(tiny: bool, device, dtype):
    if tiny:
        ucfg = UNet3DConfig(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32)
        ccfg = ControlNetConfig(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32,
                                conditioning_embedding_out_channels=(8, 16, 16, 32))
        vcfg = AutoencoderKLConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
        dim = 32
    else:
        ucfg, ccfg, vcfg, dim = UNet3DConfig(), ControlNetConfig(), AutoencoderKLConfig(), 768
    nets = []
    for cls, cfg, seed in ((UNet3DConditionModel, ucfg, 0), (ControlNetModel, ccfg, 1), (AutoencoderKL, vcfg, 2)):
        m = cls(cfg)  # built in fp32 on CPU, then moved: random init is seeded and device independent
        nets.append(random_init_(m, seed).to(device=device, dtype=dtype).eval())
    return nets, dim


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args, frames: int, nets, dim, device, dtype, encoders=None):
    unet, cn, vae = nets
    place = PhasePlacement(device, low_memory=args.memory == "low")
    for name, net in zip(("unet", "controlnet", "vae", "clip_vision", "resampler", "text_encoder"),
                         list(nets) + list(encoders or [None] * 3)):
        place.register(name, net)
    peaks = {}

    def phase_start():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def phase_end(name):
        sync(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    W, H = args.size
    h, w = H // 8, W // 8
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, dim, generator=g).to(device, dtype)
    tok_c = torch.randn(1, 16, dim, generator=g).to(device, dtype)
    tok_u = torch.randn(1, 16, dim, generator=g).to(device, dtype)
    pose = (torch.rand(frames, 3, H, W, generator=g) * 255).to(torch.uint8)
    calls = {"unet": 0, "controlnet": 0, "controlnet_frames": 0}

    def counted(net, key):
        def call(sample, *a, **k):
            calls[key] += 1
            if key == "controlnet":
                calls["controlnet_frames"] += sample.shape[0]
            return net(sample, *a, **k)
        return call

    timed_steps = args.time_steps or args.steps
    place.use(["vae", "clip_vision", "resampler", "text_encoder"])
    phase_start()
    t0 = time.perf_counter()
    with torch.no_grad():
        ref_img = torch.rand(1, 3, H, W, generator=g).to(device, dtype) * 2 - 1
        mean, logvar = vae.encode(ref_img)
        ref = (mean * VAE_SCALING_FACTOR)[:, :, None]
        if encoders is not None:
            clip_vision, resampler, text_encoder = encoders
            px = torch.rand(1, 3, clip_vision.config.image_size, clip_vision.config.image_size, generator=g)
            tok_c = image_tokens(resampler, clip_image_hidden(clip_vision, px)).to(dtype)
            tok_u = image_tokens(resampler, clip_uncond_hidden(clip_vision, px)).to(dtype)
            ids = torch.randint(0, text_encoder.config.vocab_size, (1, 77), generator=g).to(device)
            text = text_encoder(input_ids=ids).last_hidden_state.to(dtype)
    phase_end("encode")
    t_enc = time.perf_counter() - t0

    place.use(["unet", "controlnet"])
    phase_start()
    t0 = time.perf_counter()
    latents = sample_video(counted(unet, "unet"), ref, text, text, tok_c, tok_u,
                           SamplingSettings(steps=args.steps, cfg=7.5), torch.Generator().manual_seed(0),
                           pose_controlnet=counted(cn, "controlnet"), pose_cond=pose, strength=timed_steps / args.steps, device=device, dtype=dtype,
                           window_batch_size=args.window_batch)
    phase_end("sample")
    t_sample = (time.perf_counter() - t0) * args.steps / timed_steps

    place.use(["vae"])
    phase_start()
    t0 = time.perf_counter()
    video = decode_latents(vae.decode, latents, chunk=args.decode_chunk or decode_chunk(device), dtype=dtype)
    phase_end("decode")
    t_dec = time.perf_counter() - t0
    peak = max(peaks.values())
    place.use(["unet", "controlnet"])     # the FLOP count below runs the sampling networks

    # FLOPs of one step, counted on the actual calls of one window, times the windows per step.
    windows = context_windows(frames, 16, 4, 0)
    wlen = len(windows[0])
    sample = torch.randn(2, 4, 1 + wlen, h, w, generator=g).to(device, dtype)
    ctx = torch.cat([text, tok_c], 1).expand(2, -1, -1)
    unet, cn = getattr(unet, "_orig_mod", unet), getattr(cn, "_orig_mod", cn)   # count on the eager modules
    with torch.no_grad():
        down, mid = cn(sample[0, :, 1:].transpose(0, 1), 500, text.expand(wlen, -1, -1),
                       controlnet_cond=torch.rand(wlen, 3, H, W).to(device, dtype))
        res = [torch.cat([torch.zeros_like(r[:1]), r]).transpose(0, 1)[None].expand(2, -1, -1, -1, -1) for r in down]
        mres = torch.cat([torch.zeros_like(mid[:1]), mid]).transpose(0, 1)[None].expand(2, -1, -1, -1, -1)
        f_unet = count_flops(lambda: unet(sample, 500, ctx, res, mres))
        f_cn = count_flops(lambda: cn(sample[0, :, 1:].transpose(0, 1), 500, text.expand(wlen, -1, -1),
                                      controlnet_cond=torch.rand(wlen, 3, H, W).to(device, dtype)))
    per_step = len(windows) * f_unet + f_cn * frames / wlen
    total = per_step * args.steps
    mfu = total / t_sample / (args.peak_tflops * 1e12)
    ok = bool(torch.isfinite(video).all())
    print(f"{frames:4d} frames {W}x{H} {args.steps} steps {str(dtype)[6:]:8s} | encode {t_enc:6.2f}s  "
          f"sample {t_sample:7.2f}s  decode {t_dec:6.2f}s | peak {peak:6.2f} GiB | per step: "
          f"{calls['unet'] / timed_steps:.0f} UNet, {calls['controlnet_frames'] / timed_steps:.0f} ControlNet frames | "
          f"{total / 1e15:.2f} PFLOP, MFU {100 * mfu:.1f}% | finite {ok}")
    if args.memory == "low" or encoders is not None:
        print("      peak per phase (GiB): " + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items())
              + f" | memory mode {args.memory}")
    return latents


def speedups(args, nets, dtype):
    """Apply the --weights / --channels-last / --compile options to the UNet and ControlNet."""
    unet, cn, vae = nets
    if args.weights == "fp8":
        from xdyna_core.models.fp8 import store_weights_fp8, weight_bytes

        before = weight_bytes(unet) + weight_bytes(cn)
        store_weights_fp8(unet, dtype)
        store_weights_fp8(cn, dtype)
        print(f"fp8 weights: UNet + ControlNet {before / 2**30:.2f} -> "
              f"{(weight_bytes(unet) + weight_bytes(cn)) / 2**30:.2f} GiB")
    if args.channels_last:
        unet, cn = unet.to(memory_format=torch.channels_last), cn.to(memory_format=torch.channels_last)
    if args.compile != "off":
        mode = None if args.compile == "default" else args.compile
        unet, cn = torch.compile(unet, mode=mode, dynamic=False), torch.compile(cn, mode=mode, dynamic=False)
    return [unet, cn, vae]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 48, 192])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--time-steps", type=int, default=None, help="time only the last K steps and scale")
    ap.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(512, 896))
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny widths (CPU smoke runs)")
    ap.add_argument("--window-batch", type=int, default=1)
    ap.add_argument("--decode-chunk", type=int, default=None,
                    help="frames per VAE decode call (default: xdyna_core's choice for the device)")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--compare-fp32", action="store_true", help="max |fp16/bf16 - fp32| of the final latents")
    ap.add_argument("--encoders", action="store_true", help="run the CLIP vision/text encoders in the encode phase")
    ap.add_argument("--compile", choices=["off", "default", "max-autotune", "reduce-overhead"], default="off",
                    help="torch.compile the UNet and ControlNet (mode); a 1-step warm-up run compiles first "
                         "and its time is printed apart")
    ap.add_argument("--weights", choices=["default", "fp8"], default="default",
                    help="fp8: UNet/ControlNet weights stored as float8_e4m3fn, computed in --dtype")
    ap.add_argument("--channels-last", action="store_true", help="UNet/ControlNet conv weights in channels-last")
    ap.add_argument("--memory", choices=["high", "low"], default="high",
                    help="low: only the current phase's networks on the GPU (the 8 GB budget mode)")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    home = torch.device("cpu") if args.memory == "low" else device   # low: weights wait in CPU memory
    nets, dim = build(args.tiny, home, dtype)
    nets = speedups(args, nets, dtype)
    encoders = build_encoders(args.tiny, home, dtype) if args.encoders else None
    print(f"device {device}, UNet {sum(p.numel() for p in nets[0].parameters()) / 1e9:.3f} G params")
    if args.compile != "off":
        for n in args.frames:
            t0 = time.perf_counter()
            run(argparse.Namespace(**{**vars(args), "time_steps": 1}), n, nets, dim, device, dtype, encoders)
            print(f"      ^ compile + warm-up run for {n} frames: {time.perf_counter() - t0:.1f} s")
    results = {n: run(args, n, nets, dim, device, dtype, encoders) for n in args.frames}
    if args.compare_fp32 and dtype != torch.float32:
        nets32, _ = build(args.tiny, device, torch.float32)
        for n, lat in results.items():
            ref = run(args, n, nets32, dim, device, torch.float32)
            err = (lat.float() - ref.float()).abs().max().item()
            print(f"{n} frames: max |{args.dtype} - fp32| = {err:.4g} (max |fp32| {ref.abs().max().item():.3g}, "
                  f"rel {err / max(ref.abs().max().item(), 1e-12):.3g})")


if __name__ == "__main__":
    main()
