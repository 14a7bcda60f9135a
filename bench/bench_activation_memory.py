"""Peak activation memory of one sampling step, measured exactly on CPU (no GPU needed).

A dispatch mode counts the bytes of every tensor storage the step creates and frees (weights and
inputs excluded), so the peak is what a GPU caching allocator would need for activations, give or
take fragmentation. It runs the full-size networks (random weights) at small latent sizes, where the
peak is linear in the frame-tokens (CFG batch x window frames x h x w), and extrapolates to the
896x512 window in fp16. Also prints the estimate the ComfyUI node gives ComfyUI's memory manager.

    python bench/bench_activation_memory.py                    # full size, ~1 min on 2 cores
    python bench/bench_activation_memory.py --tiny --sizes 16x16
"""
from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import build  # noqa: E402
from xdyna_core.models.attention import FeedForward, set_feed_forward_chunking  # noqa: E402
from xdyna_core.sampling.context_windows import context_windows  # noqa: E402
from xdyna_core.sampling.memory import window_activation_bytes  # noqa: E402
from xdyna_core.sampling.pipeline import XDynaSampler  # noqa: E402


class LiveBytes(TorchDispatchMode):
    """Live and peak bytes of the storages created inside the mode (views of others are ignored)."""

    def __init__(self, external=()):
        super().__init__()
        self.external = set(external)
        self.sizes = {}
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n == 0 or key in self.sizes or key in self.external:
                    continue
                self.sizes[key] = n
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._freed, key)
        return out

    def _freed(self, key):
        n = self.sizes.pop(key, None)
        if n is not None:
            self.live -= n


def step_peak(unet, cn, dim, h, w, frames=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sampler = XDynaSampler(unet, cn, None)
    cond = sampler.prepare(r(1, 4, 1, h, w), r(1, 77, dim), r(1, 77, dim), r(1, 16, dim), r(1, 16, dim),
                           pose_cond=(torch.rand(frames, 3, 8 * h, 8 * w, generator=g) * 255).to(torch.uint8))
    latents = r(1, 4, frames, h, w)
    external = {t.untyped_storage().data_ptr() for m in (unet, cn) for t in list(m.parameters()) + list(m.buffers())}
    with torch.no_grad(), LiveBytes(external) as mode:
        sampler.predict_noise(cond, latents, 500, context_windows(frames, 16, 4, 0))
    return mode.peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--sizes", nargs="+", default=["8x8", "16x16"], help="latent hxw to measure")
    ap.add_argument("--small-chunk", type=int, default=1024, help="rows per feed-forward pass when chunked")
    args = ap.parse_args()
    torch.manual_seed(0)
    (unet, cn, _), dim = build(args.tiny, torch.device("cpu"), torch.float32)
    target = 2 * 17 * 64 * 112   # CFG batch x (reference + 16 frames) x 896x512 latents, in frame-tokens
    per = {}
    for rows in (None, args.small_chunk):
        set_feed_forward_chunking(unet, rows)
        set_feed_forward_chunking(cn, rows)
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            peak = step_peak(unet, cn, dim, h, w)
            per[rows] = peak / (2 * 17 * h * w)
            est = window_activation_bytes(unet.config, h, w, 16, 2, torch.float32, ff_chunk_rows=rows)
            print(f"feed-forward rows/pass {str(rows or 'all'):>5s}, latents {h:3d}x{w:<3d}: peak {peak / 2**20:8.1f} MiB "
                  f"fp32 = {per[rows] / 1024:5.1f} KiB per frame-token | estimate {est / 2**20:8.1f} MiB "
                  f"({est / peak:.2f}x)")
    set_feed_forward_chunking(unet, FeedForward.chunk_rows)
    # fp16 halves every activation. Unchunked, the peak is linear in the frame-tokens; chunked, the
    # feed-forward temporaries are bounded by the chunk, the rest stays linear.
    ff_per_row = per[None] - per[args.small_chunk]
    chunked = per[args.small_chunk] * target + ff_per_row * min(FeedForward.chunk_rows, target)
    print(f"16-frame 896x512 window in fp16: unchunked {per[None] * target / 2 / 2**30:.2f} GiB, "
          f"default chunking ({FeedForward.chunk_rows} rows) ~{chunked / 2 / 2**30:.2f} GiB; node estimate "
          f"{window_activation_bytes(unet.config, 64, 112, 16, 2, torch.float16) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
