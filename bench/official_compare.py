"""Our sampler against the official X-Dyna code on the same weights, inputs and random draws.

Needs a checkout of the official repository (github.com/bytedance/X-Dyna) that you provide; nothing
is downloaded. Both sides get identical random-weight networks (UNet with dynamics adapter and
motion modules, pose ControlNet, optionally the S-Face ControlNet, VAE), the same text / image
tokens, reference latent and control frames. The official pipeline draws its own randomness (blur
mask, initial noise, window offsets); those draws are recorded and injected into ours, so the two
videos must agree up to rounding. Printed: wall time of each side (sampling and VAE decode), the
speed ratio, and max |Δ| of the final latents and of the video.

    python bench/official_compare.py --official-repo ../X-Dyna --frames 16          # GPU, fp16, 896x512
    python bench/official_compare.py --official-repo ../X-Dyna --tiny --device cpu \\
        --dtype fp32 --frames 20 --size 64x64 --steps 3 --face                      # CPU check

What the official code needs and this script provides when absent (documented, nothing else is
changed): `xformers.ops.memory_efficient_attention` (the official attention and motion modules call
it; mapped to torch's exact SDPA), `torchvision.transforms.GaussianBlur` (only when torchvision does
not import: our exact 9x9 blur), `imageio` (imported, unused on this path), and the module paths
`diffusers.models.unet_2d_blocks` / `unet_2d_condition` that newer diffusers moved under
`diffusers.models.unets`. The pipeline's `_encode_prompt` is replaced by the given text embeddings
(the golden files were made the same way), so no text encoder or tokenizer is needed.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import random
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import build, random_init_, sync  # noqa: E402
from xdyna_core.models import ControlNetConfig, ControlNetModel  # noqa: E402
from xdyna_core.sampling.init_latents import gaussian_blur_frames  # noqa: E402
from xdyna_core.sampling.pipeline import InjectedRandomness, decode_chunk, decode_latents, sample_video  # noqa: E402
from xdyna_core.sampling.settings import SamplingSettings  # noqa: E402


# ------------------------------------------------------------------------------ official code
def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def _memory_efficient_attention(q, k, v, attn_bias=None, **_):
    if q.ndim == 4:  # xformers layout (B, M, H, K)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=attn_bias)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)


class _GaussianBlur:
    """Stand-in for torchvision's GaussianBlur(kernel_size=(9, 9), sigma=(18, 18)) when torchvision is absent."""

    def __init__(self, kernel_size, sigma):
        if tuple(kernel_size) != (9, 9) or tuple(sigma) != (18, 18):
            raise NotImplementedError(f"only the pipeline's 9x9 sigma-18 blur is provided, got {kernel_size}, {sigma}")

    def __call__(self, x):
        return gaussian_blur_frames(x[:, :, None])[:, :, 0]  # (N, C, h, w) images


def load_official(repo: Path):
    """Import the official pipeline, UNet and ControlNet classes from a checkout at `repo`."""
    repo = Path(repo).resolve()
    if not (repo / "animatediff" / "pipelines" / "pipeline_xdyna.py").is_file():
        raise SystemExit(f"{repo} is not an X-Dyna checkout (animatediff/pipelines/pipeline_xdyna.py missing)")
    # Import diffusers/transformers before any stand-in module exists: their availability probes
    # must see the real environment.
    import diffusers.utils.import_utils as iu
    import transformers
    transformers.CLIPTextModel, transformers.CLIPTokenizer  # resolve the lazy imports now  # noqa: B018

    if importlib.util.find_spec("xformers") is None:
        ops = _module("xformers.ops", memory_efficient_attention=_memory_efficient_attention)
        sys.modules["xformers"], sys.modules["xformers.ops"] = _module("xformers", ops=ops), ops
        iu.is_xformers_available = lambda: True
    try:
        importlib.import_module("torchvision.transforms")
    except Exception:
        tr = _module("torchvision.transforms", GaussianBlur=_GaussianBlur)
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = _module("torchvision", transforms=tr), tr
    if importlib.util.find_spec("imageio") is None:
        sys.modules["imageio"] = _module("imageio")
    for old, new in (("unet_2d_blocks", "unets.unet_2d_blocks"), ("unet_2d_condition", "unets.unet_2d_condition")):
        try:
            importlib.import_module(f"diffusers.models.{old}")
        except ImportError:
            sys.modules[f"diffusers.models.{old}"] = importlib.import_module(f"diffusers.models.{new}")
    sys.path.insert(0, str(repo))
    from animatediff.models.controlnet import ControlNetModel as OfficialControlNet
    from animatediff.models.unet import UNet3DConditionModel as OfficialUNet
    from animatediff.pipelines import pipeline_xdyna

    import yaml
    x_dyna = yaml.safe_load((repo / "configs" / "x_dyna.yaml").read_text())
    return types.SimpleNamespace(UNet=OfficialUNet, ControlNet=OfficialControlNet, module=pipeline_xdyna,
                                 Pipeline=pipeline_xdyna.XDynaPipeline, config=x_dyna)


def official_vae(vae):
    """diffusers' AutoencoderKL (the official code's VAE) holding exactly our VAE's weights."""
    import diffusers

    v = vae.config
    net = diffusers.AutoencoderKL(block_out_channels=list(v.block_out_channels), layers_per_block=v.layers_per_block,
                                  latent_channels=v.latent_channels, norm_num_groups=v.norm_num_groups,
                                  down_block_types=["DownEncoderBlock2D"] * len(v.block_out_channels),
                                  up_block_types=["UpDecoderBlock2D"] * len(v.block_out_channels),
                                  scaling_factor=v.scaling_factor)
    net.load_state_dict(vae.state_dict(), strict=True)
    return net


def official_models(off, unet, pose_cn, face_cn, vae):
    """Official networks holding exactly our networks' weights (the key names are the same)."""
    import diffusers

    u = unet.config
    sd_config = dict(in_channels=u.in_channels, out_channels=u.out_channels,
                     block_out_channels=list(u.block_out_channels), layers_per_block=u.layers_per_block,
                     attention_head_dim=u.num_attention_heads, cross_attention_dim=u.cross_attention_dim,
                     norm_num_groups=u.norm_num_groups, norm_eps=u.norm_eps, sample_size=64,
                     down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                     up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3)
    kwargs = json.loads(json.dumps(off.config["unet_additional_kwargs"]))
    kwargs["motion_module_kwargs"]["num_attention_heads"] = u.motion_num_heads
    kwargs["motion_module_kwargs"]["temporal_position_encoding_max_len"] = u.motion_max_len
    ounet = off.UNet.from_config(sd_config, **kwargs)
    ounet.load_state_dict(unet.state_dict(), strict=True)

    def controlnet(ours):
        cfg = ours.config
        net = off.ControlNet(in_channels=cfg.in_channels, conditioning_channels=cfg.conditioning_channels,
                             block_out_channels=list(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                             attention_head_dim=cfg.num_attention_heads, cross_attention_dim=cfg.cross_attention_dim,
                             norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps,
                             conditioning_embedding_out_channels=list(cfg.conditioning_embedding_out_channels))
        net.load_state_dict(ours.state_dict(), strict=True)
        return net

    ovae = official_vae(vae)
    scheduler = diffusers.DDIMScheduler(**off.config["noise_scheduler_kwargs"])
    return ounet, controlnet(pose_cn), (controlnet(face_cn) if face_cn is not None else None), ovae, scheduler


@contextmanager
def recorded_randomness(module):
    """Record the official pipeline's draws: blur mask (torch.rand), init noise (torch.randn_like) and
    window offsets (random.randint), in call order."""
    rec = {"rand": [], "randn_like": [], "offsets": []}
    orig_rand, orig_randn_like, orig_randint = torch.rand, torch.randn_like, module.random.randint

    def rand(*a, **k):
        out = orig_rand(*a, **k)
        rec["rand"].append(out.detach().clone())
        return out

    def randn_like(*a, **k):
        out = orig_randn_like(*a, **k)
        rec["randn_like"].append(out.detach().clone())
        return out

    def randint(lo, hi):
        out = orig_randint(lo, hi)
        rec["offsets"].append(out)
        return out

    torch.rand, torch.randn_like, module.random.randint = rand, randn_like, randint
    try:
        yield rec
    finally:
        torch.rand, torch.randn_like, module.random.randint = orig_rand, orig_randn_like, orig_randint


def run_official(off, nets, inputs, args, device, dtype):
    from PIL import Image

    ounet, ocn, ocf, ovae, scheduler = nets
    pipe = off.Pipeline(vae=ovae, text_encoder=None, tokenizer=None, unet=ounet, controlnet=ocn,
                        controlnet_face=ocf, scheduler=scheduler)
    pipe.use_face_controlnet = ocf is not None
    pipe._encode_prompt = lambda *a, **k: (inputs["text_uncond"], inputs["text_cond"])
    timing = {"decode": 0.0}
    decode = pipe.decode_latents

    def timed_decode(latents):
        sync(device)
        t0 = time.perf_counter()
        out = decode(latents)
        timing["decode"] += time.perf_counter() - t0
        return out

    pipe.decode_latents = timed_decode
    final = {}
    pil = lambda frames: [Image.fromarray(f) for f in frames]  # noqa: E731
    kw = {}
    if ocf is not None:
        kw = dict(sface_local_condition=pil(inputs["face_local"]), sface_global_condition=pil(inputs["face_global"]))
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    H, W = inputs["size"]
    with recorded_randomness(off.module) as rec, torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        video = pipe(prompt="", negative_prompt="", video_length=inputs["frames"], height=H, width=W,
                     num_inference_steps=args.steps, guidance_scale=args.cfg, strength=1.0,
                     latents=inputs["ref_latent"].to(dtype), controlnet_condition=pil(inputs["pose"]),
                     context_length=16, context_overlap=4, repeat_latents=True, gaussian_blur=True,
                     cross_id=True, un_cond_image_embeds=inputs["tok_u"], cond_image_embeds=inputs["tok_c"],
                     generator=torch.Generator(device=device).manual_seed(args.seed),
                     callback=lambda i, t, lat: final.__setitem__("latents", lat[:, :, 1:].float().clone()),
                     output_type="tensor", **kw).videos
        sync(device)
        total = time.perf_counter() - t0
    if len(rec["rand"]) != 1 or len(rec["randn_like"]) != 1 or len(rec["offsets"]) != args.steps:
        raise RuntimeError(f"unexpected official draws: {len(rec['rand'])} rand, {len(rec['randn_like'])} "
                           f"randn_like, {len(rec['offsets'])} offsets for {args.steps} steps")
    injected = InjectedRandomness(blur_keep_mask=(rec["rand"][0] >= 0.5).to(torch.uint8).cpu(),
                                  init_noise=rec["randn_like"][0].float().cpu(), window_offsets=rec["offsets"])
    return dict(video=video.float(), latents=final["latents"].cpu(), sample=total - timing["decode"],
                decode=timing["decode"], injected=injected)


def run_ours(nets, inputs, injected, args, device, dtype):
    unet, pose_cn, face_cn, vae = nets
    face = None
    if face_cn is not None:
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
        face = torch.cat([chw(inputs["face_local"]), chw(inputs["face_global"])], dim=1)
    pose = torch.from_numpy(np.ascontiguousarray(inputs["pose"])).permute(0, 3, 1, 2)
    sync(device)
    t0 = time.perf_counter()
    latents = sample_video(unet, inputs["ref_latent"], inputs["text_cond"], inputs["text_uncond"], inputs["tok_c"],
                           inputs["tok_u"], SamplingSettings(steps=args.steps, cfg=args.cfg), pose_controlnet=pose_cn,
                           face_controlnet=face_cn, pose_cond=pose, face_cond=face, device=device, dtype=dtype,
                           injected=injected)
    sync(device)
    t1 = time.perf_counter()
    video = decode_latents(vae.decode, latents, chunk=args.decode_chunk or decode_chunk(device), dtype=dtype,
                           scaling_factor=vae.config.scaling_factor)
    sync(device)
    return dict(video=video.float(), latents=latents.float().cpu(), sample=t1 - t0, decode=time.perf_counter() - t1)


def make_inputs(args, dim, device, dtype):
    g = torch.Generator().manual_seed(args.seed)
    W, H = args.size
    h, w = H // 8, W // 8
    u8 = lambda *s: (torch.rand(*s, generator=g) * 255).to(torch.uint8).numpy()  # noqa: E731
    return dict(
        frames=args.frames, size=(H, W),
        ref_latent=(torch.randn(1, 4, 1, h, w, generator=g)).to(device),
        text_cond=torch.randn(1, 77, dim, generator=g).to(device, dtype),
        text_uncond=torch.randn(1, 77, dim, generator=g).to(device, dtype),
        tok_c=torch.randn(1, 16, dim, generator=g).to(device, dtype),
        tok_u=torch.randn(1, 16, dim, generator=g).to(device, dtype),
        pose=u8(args.frames, H, W, 3), face_local=u8(args.frames, H, W, 3), face_global=u8(args.frames, H, W, 3))


def compare(args) -> dict:
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    off = load_official(args.official_repo)
    (unet, pose_cn, vae), dim = build(args.tiny, device, dtype)
    face_cn = None
    if args.face:
        cfg = pose_cn.config.to_dict()
        cfg["conditioning_channels"] = 6
        face_cn = random_init_(ControlNetModel(ControlNetConfig.from_dict(cfg)), 3).to(device, dtype).eval()
    onets = tuple(m.to(device, dtype).eval() if isinstance(m, torch.nn.Module) else m
                  for m in official_models(off, unet, pose_cn, face_cn, vae))
    inputs = make_inputs(args, dim, device, dtype)
    runs = {}
    for rep in range(args.repeat):  # later repeats are warm (kernels chosen, memory pooled)
        runs["official"] = run_official(off, onets, inputs, args, device, dtype)
        runs["ours"] = run_ours((unet, pose_cn, face_cn, vae), inputs, runs["official"]["injected"], args, device, dtype)
    o, r = runs["official"], runs["ours"]
    lat_ref = o["latents"].abs().max().item()
    out = dict(latent_err=(r["latents"] - o["latents"]).abs().max().item(), latent_max=lat_ref,
               video_err=(r["video"].cpu() - o["video"].cpu()).abs().max().item(),
               official_sample=o["sample"], official_decode=o["decode"], ours_sample=r["sample"],
               ours_decode=r["decode"], finite=bool(torch.isfinite(r["video"]).all()))
    out["speedup_sample"] = out["official_sample"] / out["ours_sample"]
    out["speedup_total"] = (out["official_sample"] + out["official_decode"]) / (out["ours_sample"] + out["ours_decode"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-repo", required=True, type=Path, help="checkout of github.com/bytedance/X-Dyna")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(512, 896),
                    help="WxH in pixels (default 512x896)")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny widths (CPU check of the harness)")
    ap.add_argument("--face", action="store_true", help="also the S-Face ControlNet")
    ap.add_argument("--decode-chunk", type=int, default=None,
                    help="frames per VAE decode call (default: xdyna_core's choice for the device)")
    ap.add_argument("--repeat", type=int, default=1, help="run both sides this many times, report the last")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    r = compare(args)
    W, H = args.size
    print(f"{args.frames} frames {W}x{H}, {args.steps} steps, {args.dtype}, face={args.face}, device {args.device}")
    print(f"official: sample {r['official_sample']:.2f}s  decode {r['official_decode']:.2f}s")
    print(f"ours:     sample {r['ours_sample']:.2f}s  decode {r['ours_decode']:.2f}s")
    print(f"speed-up: sampling {r['speedup_sample']:.2f}x, sampling+decode {r['speedup_total']:.2f}x")
    print(f"max |Δ| final latents {r['latent_err']:.4g} (max |official| {r['latent_max']:.3g}, "
          f"rel {r['latent_err'] / max(r['latent_max'], 1e-12):.3g}); max |Δ| video {r['video_err']:.4g}; "
          f"finite {r['finite']}")
    if args.json is not None:
        args.json.write_text(json.dumps(dict(r, args={k: str(v) for k, v in vars(args).items()}), indent=1))
    return r


if __name__ == "__main__":
    main()
