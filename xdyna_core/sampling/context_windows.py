"""Context windows for videos longer than the motion module's context (official "uniform" rule).

The official pipeline re-draws the windows at every denoising step (its context scheduler is always
called with step index 0, so only the closed-loop stride-1 pass is used):

* ``N <= context_length``: one window with every frame, ``[0, 1, ..., N-1]`` (the offset is unused);
* otherwise windows start at ``j = 0, S, 2S, ...`` (``j < N``) with ``S = context_length - overlap``,
  and window ``j`` is ``[(j + e + offset) % N for e in range(context_length)]``: the video is a closed
  loop, a window running past the last frame continues at the first, and that wrapped order is the
  temporal order the motion module sees.

Indices are into the driving frames ``0..N-1`` (the reference frame is not part of them).
"""
from __future__ import annotations

DEFAULT_CONTEXT_LENGTH = 16
DEFAULT_CONTEXT_OVERLAP = 4


def validate_context(context_length: int, context_overlap: int) -> None:
    if int(context_length) != context_length or context_length < 1:
        raise ValueError(f"context_length must be a positive integer, got {context_length!r}")
    if int(context_overlap) != context_overlap or not 0 <= context_overlap < context_length:
        raise ValueError(
            f"context_overlap must be an integer in [0, context_length-1] = [0, {context_length - 1}], "
            f"got {context_overlap!r}")


def context_windows(num_frames: int, context_length: int = DEFAULT_CONTEXT_LENGTH,
                    context_overlap: int = DEFAULT_CONTEXT_OVERLAP, offset: int = 0) -> list[list[int]]:
    """Windows (lists of frame indices) covering ``num_frames`` frames for one denoising step."""
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    validate_context(context_length, context_overlap)
    if num_frames <= context_length:
        return [list(range(num_frames))]
    stride = context_length - context_overlap
    return [[(start + e + offset) % num_frames for e in range(context_length)]
            for start in range(0, num_frames, stride)]


def num_context_windows(num_frames: int, context_length: int = DEFAULT_CONTEXT_LENGTH,
                        context_overlap: int = DEFAULT_CONTEXT_OVERLAP) -> int:
    """Number of windows per step (independent of the offset): ``ceil(N / stride)`` or 1."""
    validate_context(context_length, context_overlap)
    if num_frames <= context_length:
        return 1
    stride = context_length - context_overlap
    return -(-num_frames // stride)
