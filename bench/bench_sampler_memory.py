"""Peak host memory of the X-Dyna sampler versus video length (CPU, tiny random models).

Each length runs in its own subprocess. Inside it: build tiny models and inputs, do a short warm-up
run (allocator pools, lazy init), reset the peak-RSS mark (Linux ``/proc/self/clear_refs``), record the
resident set, sample, and read the peak. ``peak - before`` is the memory the run itself needed; with
one context window through the networks at a time it should not grow with length beyond the latents
and the per-frame inputs (printed alongside for comparison).

    python bench/bench_sampler_memory.py                     # 24 vs 96 frames, 32x32 latents
    python bench/bench_sampler_memory.py --frames 24 96 192 --latent 32 --steps 2

Every length is measured twice: with glibc's default allocator settings, whose *dynamic* mmap
threshold lets freed window buffers fragment the heap (RSS creeps up with the number of windows
although no tensor outlives its window), and with a fixed threshold (``MALLOC_MMAP_THRESHOLD_``), which
shows the sampler's own footprint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(frames: int, latent: int, steps: int, context: int, overlap: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig
    from xdyna_core.sampling.settings import SamplingSettings
    from xdyna_core.sampling.context_windows import num_context_windows
    from xdyna_core.sampling.pipeline import sample_video

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dim = 32
    widths = (32, 32, 64, 64)  # the tiny golden model sizes
    unet = UNet3DConditionModel(UNet3DConfig(block_out_channels=widths, num_attention_heads=2,
                                             cross_attention_dim=dim)).eval()
    nets = [ControlNetModel(ControlNetConfig(conditioning_channels=c, block_out_channels=widths, num_attention_heads=2,
                                             cross_attention_dim=dim,
                                             conditioning_embedding_out_channels=(8, 16, 16, 32))).eval()
            for c in (3, 6)]
    g = torch.Generator().manual_seed(0)

    def inputs(n):
        return dict(ref_latent=torch.randn(1, 4, 1, latent, latent, generator=g),
                    text_cond=torch.randn(1, 77, dim, generator=g), text_uncond=torch.randn(1, 77, dim, generator=g),
                    image_tokens_cond=torch.randn(1, 16, dim, generator=g),
                    image_tokens_uncond=torch.randn(1, 16, dim, generator=g),
                    pose_cond=torch.randint(0, 256, (n, 3, 8 * latent, 8 * latent), generator=g, dtype=torch.uint8),
                    face_cond=torch.randint(0, 256, (n, 6, 8 * latent, 8 * latent), generator=g, dtype=torch.uint8))

    kw = dict(pose_controlnet=nets[0], face_controlnet=nets[1])
    settings = SamplingSettings(steps=steps, cfg=7.5, context_length=context, context_overlap=overlap)
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    sample_video(unet, **inputs(min(frames, context + 1)), settings=dataclasses.replace(settings, steps=1),
                 generator=seeded(), **kw)      # warm-up
    data = inputs(frames)
    peak_reset = _reset_peak()
    before_kb = _status_kb("VmRSS")
    t0 = time.perf_counter()
    out = sample_video(unet, **data, settings=settings, generator=seeded(), **kw)
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mb = 1 / 1024
    return {
        "frames": frames,
        "windows_per_step": num_context_windows(frames, context, overlap),
        "rss_before_mb": before_kb * mb,
        "peak_mb": peak_kb * mb,
        "run_delta_mb": (peak_kb - before_kb) * mb,
        "peak_is_since_reset": peak_reset,
        "latents_mb": out.numel() * out.element_size() / 2**20,
        "control_inputs_mb": sum(data[k].numel() * data[k].element_size() for k in ("pose_cond", "face_cond")) / 2**20,
        "seconds": seconds,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[24, 96])
    p.add_argument("--latent", type=int, default=32, help="latent side (pixels = 8x)")
    p.add_argument("--steps", type=int, default=1, help="denoising steps (memory is the same every step)")
    p.add_argument("--context", type=int, default=16)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.frames[0], a.latent, a.steps, a.context, a.overlap, a.threads)))
        return 0
    print(f"X-Dyna sampler host memory, tiny models, {a.latent}x{a.latent} latents "
          f"({8 * a.latent}x{8 * a.latent} px), {a.steps} step(s), context {a.context}/{a.overlap}, CPU, "
          f"{a.threads} threads")
    for label, extra_env in (("glibc default malloc", {}),
                             ("fixed mmap threshold (MALLOC_MMAP_THRESHOLD_=131072)",
                              {"MALLOC_MMAP_THRESHOLD_": "131072"})):
        rows = []
        for n in a.frames:
            cmd = [sys.executable, __file__, "--child", "--frames", str(n), "--latent", str(a.latent), "--steps",
                   str(a.steps), "--context", str(a.context), "--overlap", str(a.overlap), "--threads", str(a.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **extra_env})
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                return res.returncode
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"\n[{label}]")
        print(f"{'frames':>6} {'windows':>7} {'before MB':>9} {'peak MB':>8} {'run +MB':>8} {'latents MB':>10} "
              f"{'controls MB':>11} {'s':>6}")
        for r in rows:
            print(f"{r['frames']:>6} {r['windows_per_step']:>7} {r['rss_before_mb']:>9.1f} {r['peak_mb']:>8.1f} "
                  f"{r['run_delta_mb']:>8.1f} {r['latents_mb']:>10.2f} {r['control_inputs_mb']:>11.1f} "
                  f"{r['seconds']:>6.1f}")
        if len(rows) > 1:
            lo, hi = rows[0], rows[-1]
            print(f"run memory {hi['frames']} vs {lo['frames']} frames: {hi['run_delta_mb']:.1f} MB vs "
                  f"{lo['run_delta_mb']:.1f} MB (x{hi['run_delta_mb'] / max(lo['run_delta_mb'], 1e-9):.2f}, "
                  f"+{hi['run_delta_mb'] - lo['run_delta_mb']:.1f} MB) for x{hi['frames'] / lo['frames']:.1f} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
