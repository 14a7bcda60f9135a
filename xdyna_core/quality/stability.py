"""Temporal stability: frame-to-frame change at context-window seams against inside the windows.

The sampler denoises a long clip in overlapping windows (:mod:`sampling.context_windows`); where
one window's frames end and the next one's begin, the motion module saw different neighbours, so
window flicker shows up as a jump in frame-to-frame change at exactly those boundaries. The change
between frames t-1 and t is the mean absolute difference of the two frames (grey, downscaled so
that noise and compression matter less than content). Each boundary is compared with the median
change of the non-seam boundaries around it, so steady motion does not count as flicker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..sampling.context_windows import context_windows

#: the frames are compared at this width (keeps the measure about content, and cheap)
COMPARE_WIDTH = 128
#: boundaries on each side whose median change is a boundary's baseline
NEIGHBOURS = 4


def seam_weights(num_frames: int, context_length: int, context_overlap: int,
                 offsets: Optional[Sequence[int]] = None) -> np.ndarray:
    """(N,) share of the steps in which boundary b (between frame b-1 and frame b) is where a
    window of the sampler's schedule starts or ends; ``offsets``: one per step (default: [0]).
    Index 0 and the closed loop's wrap (N-1 -> 0) are no boundary of the video (weight 0)."""
    offsets = list(offsets) if offsets is not None else [0]
    if not offsets:
        raise ValueError("give at least one window offset")
    weights = np.zeros(int(num_frames))
    for off in offsets:
        windows = context_windows(num_frames, context_length, context_overlap, int(off))
        if len(windows) == 1:
            continue
        edges = set()
        for w in windows:  # a window wrapping past the last frame still starts and ends at seams
            edges.add(w[0])
            edges.add((w[-1] + 1) % num_frames)
        for e in edges:
            weights[e] += 1.0
    weights[0] = 0.0
    return weights / len(offsets)


def window_seams(num_frames: int, context_length: int, context_overlap: int,
                 offsets: Optional[Sequence[int]] = None) -> List[int]:
    """Boundaries that are a window edge in at least one step (see :func:`seam_weights`)."""
    return [int(b) for b in np.flatnonzero(seam_weights(num_frames, context_length, context_overlap, offsets))]


def scheduled_window_offsets(seed: int, num_frames: int, width: int, height: int, steps: int,
                             context_length: int, latent: str = "sample", latent_channels: int = 4) -> List[int]:
    """The window offset of every step of a run with this seed, replayed without the networks.

    A run (:func:`xdyna_core.job.run_sampling`, both front ends) seeds ONE generator and draws, in
    the official order: the reference's posterior sample (``latent="sample"``), the blur keep-mask
    and the initial noise of (1, C, N+1, h, w), then one offset per step. The same draws here leave
    the generator where the sampler reads the offsets (a test checks this against a real run)."""
    import torch

    from ..reference import posterior_sample
    from ..sampling.init_latents import draw_blur_keep_mask

    if latent not in ("sample", "mean"):
        raise ValueError(f"latent must be 'sample' or 'mean', got {latent!r}")
    h, w = int(height) // 8, int(width) // 8
    g = torch.Generator("cpu").manual_seed(int(seed))
    if latent == "sample":
        zeros = torch.zeros((1, latent_channels, h, w))
        posterior_sample(zeros, zeros, g)
    shape = (1, latent_channels, int(num_frames) + 1, h, w)
    draw_blur_keep_mask(shape, g)
    torch.randn(shape, generator=g, dtype=torch.float32)
    return torch.randint(0, int(context_length), (int(steps),), generator=g).tolist()


def frame_changes(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(N-1,) mean absolute grey difference (0..255 scale) between consecutive frames."""
    import cv2

    prev = None
    out = []
    for f in frames:
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"expected RGB frames (H, W, 3), got shape {f.shape}")
        h, w = f.shape[:2]
        size = (COMPARE_WIDTH, max(1, round(h * COMPARE_WIDTH / w))) if w > COMPARE_WIDTH else (w, h)
        g = cv2.resize(cv2.cvtColor(f.astype(np.uint8), cv2.COLOR_RGB2GRAY), size,
                       interpolation=cv2.INTER_AREA).astype(np.float32)
        if prev is not None:
            out.append(float(np.abs(g - prev).mean()))
        prev = g
    return np.array(out, dtype=np.float64)


@dataclass
class Stability:
    changes: List[float]               # change at boundary b = index b-1
    excess: List[float]                # change / median change of the boundaries around it
    seams: List[int]                   # boundaries that are a window edge in some step
    weights: List[float]               # share of steps in which boundary b is a window edge (index b-1)
    mean_change_seams: float = float("nan")   # change averaged with the seam weights
    mean_change_inside: float = float("nan")  # ... with 1 - weight
    seam_ratio: float = float("nan")   # mean_change_seams / mean_change_inside (1 = no flicker)
    seam_excess: float = float("nan")  # excess averaged with the seam weights (1 = like the neighbours)
    inside_excess: float = float("nan")


def stability(frames: Sequence[np.ndarray], weights: Sequence[float]) -> Stability:
    """Seam figures of ``frames`` for per-boundary seam ``weights`` (:func:`seam_weights`, length N)."""
    ch = frame_changes(frames)
    n = len(ch) + 1
    wts = np.asarray(weights, dtype=np.float64)
    if wts.shape != (n,):
        raise ValueError(f"{len(wts)} seam weights for {n} frames")
    wb = wts[1:]                                   # weight of boundary b at index b-1
    excess = np.full(len(ch), np.nan)
    eps = 1e-3
    for i in range(len(ch)):
        near = [j for j in range(max(0, i - NEIGHBOURS), min(len(ch), i + NEIGHBOURS + 1)) if j != i]
        calm = [j for j in near if wb[j] == 0] or near  # prefer boundaries that are never seams
        if calm:
            excess[i] = ch[i] / (float(np.median(ch[calm])) + eps)
    out = Stability(changes=ch.tolist(), excess=excess.tolist(), seams=[int(b) for b in np.flatnonzero(wts)],
                    weights=wb.tolist())
    inside = 1.0 - wb
    if wb.sum() > 0 and inside.sum() > 0:
        ok = ~np.isnan(excess)
        out.mean_change_seams = float((ch * wb).sum() / wb.sum())
        out.mean_change_inside = float((ch * inside).sum() / inside.sum())
        out.seam_ratio = out.mean_change_seams / (out.mean_change_inside + eps)
        if (wb * ok).sum() > 0 and (inside * ok).sum() > 0:
            out.seam_excess = float((excess[ok] * wb[ok]).sum() / wb[ok].sum())
            out.inside_excess = float((excess[ok] * inside[ok]).sum() / inside[ok].sum())
    return out
