"""`xdyna tiny --out DIR`: the tiny random model set in the real file formats (tests, demos, CI)."""
from __future__ import annotations

import time


def run(args) -> int:
    from ..loading.tiny import write_tiny_set

    t0 = time.perf_counter()
    paths = write_tiny_set(args.out, seed=args.seed, dtype=args.dtype, with_variants=args.with_variants)
    total = 0
    for role, p in paths.items():
        size = p.stat().st_size
        total += size
        print(f"{role:16s} {size / 1e6:6.2f} MB  {p}")
    print(f"tiny model set: {len(paths)} files, {total / 1e6:.1f} MB, seed {args.seed}, {time.perf_counter() - t0:.1f} s")
    return 0


def register(commands) -> None:
    from ..arg_types import DTYPE_NAMES
    from . import common_options

    p = commands.add_parser("tiny", parents=[common_options()], help="write the tiny random model set")
    p.add_argument("--out", required=True, help="the models/ folder to write into (created if needed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default="fp16", help="storage dtype (default fp16)")
    p.add_argument("--with-variants", action="store_true",
                   help="also write the optional files (X-Dyna UNet without SD1.5 base keys)")
    p.set_defaults(func=run)
