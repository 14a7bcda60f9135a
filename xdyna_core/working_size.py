"""The working size rule, the one that both front ends (nodes and command line) check.

The VAE works on 8x8 pixel blocks, so width and height must be multiples of 8. The UNet asks for no
more: it halves the latent three times, but each upsampling follows the size of its skip connection
(odd latent sizes such as 17x25 for 136x200 run), so multiples of 64 are not needed. X-Dyna was
trained at 512x896.

Bounds, each with its reason in the message: at least MIN_SIDE a side (the UNet halves the 1/8 latent
three times; below 64 px its deepest level has less than one latent pixel and the reference's person
is too small to detect), at most MAX_SIDE a side (4x the trained width; the VAE decoder's full
resolution layers alone hold 128-channel feature maps, :func:`decoder_bytes_per_frame`).
"""
from __future__ import annotations

from typing import Tuple

from .sd15 import VAE_DOWNSCALE

SIZE_MULTIPLE = VAE_DOWNSCALE
MIN_SIDE = SIZE_MULTIPLE * 2 ** 3   # 64: the UNet's three halvings of the latent leave one pixel
MAX_SIDE = 2048                     # 4x the trained 512 width; also the nodes' widget limit
SIZE_RULE = f"a multiple of {SIZE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE} (X-Dyna was trained at 512x896)"
# Channels of the SD1.5 VAE decoder's full-resolution layers (block_out_channels[0]).
DECODER_FULL_RES_CHANNELS = 128


def decoder_bytes_per_frame(width: int, height: int, bytes_per_value: int = 4) -> int:
    """Bytes of ONE full-resolution feature map of the VAE decoder for one frame (a lower bound on
    what decoding a frame at this size holds at once)."""
    return DECODER_FULL_RES_CHANNELS * int(width) * int(height) * bytes_per_value


def check_output_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> Tuple[int, int]:
    """(width, height) as ints, or ValueError unless both are multiples of ``multiple`` within
    MIN_SIDE..MAX_SIDE (``multiple=1``: any positive size, for pose videos that never reach the
    sampler), the message saying why."""
    w, h = int(width), int(height)
    if w <= 0 or h <= 0 or w % multiple or h % multiple:
        raise ValueError(
            f"working size {w}x{h}: width and height must be positive multiples of {multiple} (the VAE "
            f"works on {multiple}x{multiple} pixel blocks; X-Dyna was trained at 512x896)")
    if multiple == 1:
        return w, h
    if min(w, h) < MIN_SIDE:
        raise ValueError(
            f"working size {w}x{h}: each side at least {MIN_SIDE} px (the UNet halves the 1/{SIZE_MULTIPLE} "
            f"latent three times, so below {MIN_SIDE} px its deepest level has under one pixel and the person "
            f"is too small to detect; X-Dyna was trained at 512x896)")
    if max(w, h) > MAX_SIDE:
        gb = decoder_bytes_per_frame(w, h) / 1e9
        raise ValueError(
            f"working size {w}x{h}: each side at most {MAX_SIDE} px (X-Dyna was trained at 512x896; at "
            f"{w}x{h} one VAE decoder feature map alone is {gb:.1f} GB per frame in fp32, the driving and "
            f"result frames {w * h * 3 * 4 / 1e6:.0f} MB each in float32)")
    return w, h


def check_same_size(size: Tuple[int, int], working: Tuple[int, int], what: str) -> None:
    """ValueError naming both sizes unless ``size`` (of ``what``) is the working size (both (w, h))."""
    if tuple(int(v) for v in size) != tuple(int(v) for v in working):
        raise ValueError(
            f"{what} is {size[0]}x{size[1]} but the reference was encoded at {working[0]}x{working[1]}: "
            f"the working size is set once, on X-Dyna Reference Encode")
