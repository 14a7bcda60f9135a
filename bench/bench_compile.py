"""torch.compile of the UNet and the ControlNet: recompiles over timesteps, accuracy, speed.

For each network: eager fp32, an eager fp64 reference and the compiled fp32 network run the same
inputs at several timesteps (passed as device tensors, as the sampler does). Printed: compile
(first call) time, frames compiled (1 = no recompile across timesteps), steady call times, and
max |x - fp64| / max |fp64| for eager and compiled, plus max |compiled - eager| / max |eager|.
A compiled error of the same size as eager's error says "rounding, not a miscompile".

    python bench/bench_compile.py --config tiny          # the golden tiny widths, 16x8 latents (CPU)
    python bench/bench_compile.py --config tiny-wide     # same widths, 8 groups, 32x32 latents
    python bench/bench_compile.py --config full --device cuda --dtype fp16 --frames 16 --latent 112 64
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
from xdyna_core.models.resnet import broadcast_timesteps, timestep_sinusoid  # noqa: E402

CONFIGS = {
    # the golden tiny config: 32 groups on 32 channels = one channel per group, 2x1 deepest maps
    "tiny": dict(unet=dict(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32),
                 cn=dict(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32,
                         conditioning_embedding_out_channels=(8, 16, 16, 32)),
                 latent=(16, 8), dim=32),
    # same widths, 8 groups (4-8 channels per group) and 32x32 latents (4x4 deepest maps)
    "tiny-wide": dict(unet=dict(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32,
                                norm_num_groups=8),
                      cn=dict(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32,
                              conditioning_embedding_out_channels=(8, 16, 16, 32), norm_num_groups=8),
                      latent=(32, 32), dim=32),
    "full": dict(unet={}, cn={}, latent=(112, 64), dim=768),
}


class FirstUnit(torch.nn.Module):
    """The UNet's first unit (resnet -> mixed-attention transformer -> motion module) with the time
    embedding: a small graph that Inductor compiles in minutes on a CPU where the whole UNet takes far longer."""

    def __init__(self, unet: UNet3DConditionModel):
        super().__init__()
        self.time_embedding, self.block, self.ch = unet.time_embedding, unet.down_blocks[0], unet.config.block_out_channels[0]

    def forward(self, x, t, ctx):
        b = ctx.shape[0]
        temb = self.time_embedding(timestep_sinusoid(broadcast_timesteps(t, b, x.device), self.ch).to(x.dtype))
        return self.block._unit(0, x, temb, ctx, b, x.shape[0] // b)


def rel(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def flat(out):
    return torch.cat([o.flatten() for o in out]) if isinstance(out, (list, tuple)) else out.flatten()


def compare(name, make, inputs, timesteps, device, dtype, backend, mode):
    eager = make().to(device=device, dtype=dtype).eval()
    ref64 = make().double().to(device).eval()
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend(backend if backend != "none" else "eager")
    # "none": no compile, only the eager-vs-fp64 column (how much the network amplifies fp32 rounding)
    compiled = eager if backend == "none" else torch.compile(eager, backend=counter, mode=mode, dynamic=False)

    def call(net, t, dt):
        args = [x.to(dt) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs(t)]
        with torch.no_grad():
            out = net(*args)
        sync(device)
        return flat(out[0] + [out[1]] if isinstance(out, tuple) else out)

    rows = []
    t0 = time.perf_counter()
    call(compiled, timesteps[0], dtype)
    compile_s = time.perf_counter() - t0
    for t in timesteps:
        ref = call(ref64, t, torch.float64)
        e0 = time.perf_counter()
        out_e = call(eager, t, dtype)
        e_s = time.perf_counter() - e0
        c0 = time.perf_counter()
        out_c = call(compiled, t, dtype)
        c_s = time.perf_counter() - c0
        rows.append((int(t), rel(out_e, ref), rel(out_c, ref), rel(out_c, out_e), e_s, c_s))
    print(f"{name}: compile + first call {compile_s:.1f} s, frames compiled {counter.frame_count} "
          f"over {len(timesteps)} timesteps ({backend}, mode {mode})")
    for t, ee, ce, ced, e_s, c_s in rows:
        print(f"  t={t:4d}  eager-fp64 {ee:.2e}  compiled-fp64 {ce:.2e}  compiled-eager {ced:.2e}  "
              f"| eager {e_s * 1e3:.1f} ms  compiled {c_s * 1e3:.1f} ms  ({e_s / c_s:.2f}x)")
    return counter.frame_count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    ap.add_argument("--backend", default="inductor", help="inductor, aot_eager, eager, or none (no compile)")
    ap.add_argument("--mode", default=None, help="torch.compile mode (e.g. max-autotune)")
    ap.add_argument("--frames", type=int, default=4, help="generated frames per UNet call (+1 reference)")
    ap.add_argument("--latent", type=int, nargs=2, default=None, metavar=("H", "W"))
    ap.add_argument("--timesteps", type=int, nargs="+", default=[961, 501, 41])
    ap.add_argument("--golden", default=None, metavar="DIR",
                    help="ControlNet only: the golden tiny pose ControlNet's weights and inputs from DIR "
                         "(tests/data/golden: tiny_controlnet_pose, controlnets)")
    ap.add_argument("--python-int", action="store_true",
                    help="pass timesteps as Python ints (the old calling convention: one compile per timestep)")
    ap.add_argument("--nets", nargs="+", choices=["unet", "controlnet", "unit"], default=["unet", "controlnet"],
                    help="unit: the UNet's first resnet/transformer/motion unit only (quick to compile)")
    a = ap.parse_args(argv)
    cfg = CONFIGS[a.config]
    device = torch.device(a.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    h, w = a.latent or cfg["latent"]
    dim, f = cfg["dim"], a.frames + 1
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, f, h, w, generator=g).to(device)
    ctx = torch.randn(2, 77 + 16, dim, generator=g).to(device)
    cn_sample = torch.randn(2 * a.frames, 4, h, w, generator=g).to(device)
    text = torch.randn(2 * a.frames, 77, dim, generator=g).to(device)
    image = torch.rand(2 * a.frames, 3, 8 * h, 8 * w, generator=g).to(device)
    ts = list(a.timesteps) if a.python_int else [torch.tensor(t, device=device) for t in a.timesteps]
    print(f"config {a.config}, latent {h}x{w}, {a.frames}+1 frames, {a.dtype} on {device}, torch {torch.__version__}")
    frames = {}
    if "unet" in a.nets:
        frames["unet"] = compare("UNet", lambda: random_init_(UNet3DConditionModel(UNet3DConfig(**cfg["unet"])), 0),
                                 lambda t: (sample, t, ctx), ts, device, dtype, a.backend, a.mode)
    if "unit" in a.nets:
        ch = (cfg["unet"].get("block_out_channels") or UNet3DConfig().block_out_channels)[0]
        x = torch.randn(2 * f, ch, h, w, generator=g).to(device)
        frames["unit"] = compare("UNet unit", lambda: FirstUnit(random_init_(UNet3DConditionModel(UNet3DConfig(**cfg["unet"])), 0)),
                                 lambda t: (x, t, ctx), ts, device, dtype, a.backend, a.mode)
    if "controlnet" in a.nets and a.golden:
        import json

        from safetensors.torch import load_file

        root = Path(a.golden)
        gcfg = ControlNetConfig.from_diffusers_config(json.loads((root / "tiny_controlnet_pose.json").read_text())["config"])
        gsd = load_file(str(root / "tiny_controlnet_pose.safetensors"))
        case = {k: v.float().to(device) if v.is_floating_point() else v for k, v in
                load_file(str(root / "controlnets.safetensors")).items()}

        def make_golden():
            net = ControlNetModel(gcfg)
            net.load_state_dict({k: v.float() for k, v in gsd.items()})
            return net

        frames["controlnet"] = compare(
            "ControlNet (golden tiny)", make_golden,
            lambda t: (case["latents"], t, case["encoder_hidden_states"], case["cond_pose"]), ts, device, dtype,
            a.backend, a.mode)
    elif "controlnet" in a.nets:
        frames["controlnet"] = compare(
            "ControlNet", lambda: random_init_(ControlNetModel(ControlNetConfig(**cfg["cn"])), 1),
            lambda t: (cn_sample, t, text, image), ts, device, dtype, a.backend, a.mode)
    return 0 if a.backend == "none" or all(v == 1 for v in frames.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
