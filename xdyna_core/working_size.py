"""The working size rule, the one that both front ends (nodes and command line) check.

The VAE works on 8x8 pixel blocks, so width and height must be multiples of 8. The UNet asks for no
more: it halves the latent three times, but each upsampling follows the size of its skip connection
(odd latent sizes such as 17x25 for 136x200 run), so multiples of 64 are not needed. X-Dyna was
trained at 512x896.
"""
from __future__ import annotations

from typing import Tuple

from .sd15 import VAE_DOWNSCALE

SIZE_MULTIPLE = VAE_DOWNSCALE
SIZE_RULE = f"a multiple of {SIZE_MULTIPLE} (X-Dyna was trained at 512x896)"


def check_output_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> Tuple[int, int]:
    """(width, height) as ints, or ValueError unless both are positive multiples of ``multiple``."""
    w, h = int(width), int(height)
    if w <= 0 or h <= 0 or w % multiple or h % multiple:
        raise ValueError(
            f"working size {w}x{h}: width and height must be positive multiples of {multiple} (the VAE "
            f"works on {multiple}x{multiple} pixel blocks; X-Dyna was trained at 512x896)")
    return w, h


def check_same_size(size: Tuple[int, int], working: Tuple[int, int], what: str) -> None:
    """ValueError naming both sizes unless ``size`` (of ``what``) is the working size (both (w, h))."""
    if tuple(int(v) for v in size) != tuple(int(v) for v in working):
        raise ValueError(
            f"{what} is {size[0]}x{size[1]} but the reference was encoded at {working[0]}x{working[1]}: "
            f"the working size is set once, on X-Dyna Reference Encode")
