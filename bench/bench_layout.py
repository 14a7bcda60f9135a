"""Memory layout after the spatial transformer: the pose ControlNet call with and without the leak.

Before the fix, `SpatialTransformer` returned `proj_out(permuted tokens) + x`; the permuted
(channels-last) tensor made the 1x1 conv and every following convolution run channels-last, with
other kernels (and other rounding) than the official layout. This bench times one full-size pose
ControlNet call (random weights, fp32) both ways, alternating A/B so that machine load hits both
alike, checks that the outputs are bit-identical and prints the time ratio.

    OMP_NUM_THREADS=1 python bench/bench_layout.py                 # 32x32 latent, 5 rounds
    python bench/bench_layout.py --latent 64 32 --rounds 3 --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import random_init_  # noqa: E402
from xdyna_core.models import ControlNetConfig, ControlNetModel  # noqa: E402
from xdyna_core.models.attention import SpatialTransformer  # noqa: E402


def _leaky_forward(self, x, context, frames: int = 1):
    """The pre-fix forward: no .contiguous() after the token -> image permute."""
    bf, c, h, w = x.shape
    y = self.proj_in(self.norm(x))
    y = y.permute(0, 2, 3, 1).reshape(bf, h * w, c)
    for block in self.transformer_blocks:
        y = block(y, context, frames=frames)
    y = y.reshape(bf, h, w, c).permute(0, 3, 1, 2)
    return self.proj_out(y) + x


@contextlib.contextmanager
def leaky_layout():
    fixed = SpatialTransformer.forward
    SpatialTransformer.forward = _leaky_forward
    try:
        yield
    finally:
        SpatialTransformer.forward = fixed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=2, help="ControlNet batch (2 = both CFG halves)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    net = random_init_(ControlNetModel(ControlNetConfig())).to(dev).eval()
    g = torch.Generator().manual_seed(0)
    h, w = a.latent
    sample = torch.randn(a.batch, 4, h, w, generator=g).to(dev)
    text = torch.randn(a.batch, 77, 768, generator=g).to(dev)
    cond = torch.rand(a.batch, 3, 8 * h, 8 * w, generator=g).to(dev)
    t = torch.tensor(501, device=dev)

    def call():
        with torch.no_grad():
            out = net(sample, t, text, controlnet_cond=cond)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    call()  # warm-up (allocator, kernel selection)
    with leaky_layout():
        call()
    times = {"fixed": [], "leaky": []}
    outs = {}
    for _ in range(a.rounds):
        for name in ("leaky", "fixed"):
            ctx = leaky_layout() if name == "leaky" else contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter()
                outs[name] = call()
                times[name].append(time.perf_counter() - t0)
    (down_f, mid_f), (down_l, mid_l) = outs["fixed"], outs["leaky"]
    identical = all(torch.equal(x, y) for x, y in zip(down_f + [mid_f], down_l + [mid_l]))
    leaked = sum(not d.is_contiguous() for d in down_l + [mid_l])
    fixed_cl = sum(not d.is_contiguous() for d in down_f + [mid_f])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"pose ControlNet, full size, fp32, batch {a.batch}, latent {h}x{w}, {a.threads} thread(s), "
          f"{a.rounds} A/B rounds on {dev}")
    print(f"  leaky layout : median {med['leaky']:.3f} s  ({leaked}/13 residuals not contiguous)")
    print(f"  contiguous   : median {med['fixed']:.3f} s  ({fixed_cl}/13 residuals not contiguous)")
    print(f"  ratio leaky/fixed = {med['leaky'] / med['fixed']:.2f}x; outputs bit-identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
