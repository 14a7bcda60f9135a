"""`xdyna convert IN OUT.safetensors [--dtype ...]`: the released checkpoints to clean .safetensors."""
from __future__ import annotations


def run(args) -> int:
    from ..loading.convert import convert_file

    print(convert_file(args.input, args.output, args.dtype).summary())
    return 0


def register(commands) -> None:
    from ..arg_types import DTYPE_NAMES
    from . import common_options

    p = commands.add_parser("convert", parents=[common_options()],
                            help="convert released .ckpt files to .safetensors (read safely, verified)")
    p.add_argument("input", help="released .ckpt / .bin / .pth / .safetensors (or a diffusers folder)")
    p.add_argument("output", help="OUT.safetensors")
    p.add_argument("--dtype", choices=sorted(DTYPE_NAMES), default=None, help="cast floating tensors (default: keep)")
    p.set_defaults(func=run)
