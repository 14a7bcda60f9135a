"""Temporal stability: frame-to-frame change at context-window seams against inside the windows.

The sampler denoises a long clip in overlapping windows (:mod:`sampling.context_windows`); where
one window's frames end and the next one's begin, the motion module saw different neighbours, so
window flicker shows up as a jump in frame-to-frame change at exactly those boundaries. The change
between frames t-1 and t is the mean absolute difference of the two frames (grey, downscaled so
that noise and compression matter less than content). Each boundary is compared with the median
change of the non-seam boundaries around it, so steady motion does not count as flicker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..sampling.context_windows import context_windows

#: the frames are compared at this width (keeps the measure about content, and cheap)
COMPARE_WIDTH = 128
#: boundaries on each side whose median change is a boundary's baseline
NEIGHBOURS = 4


def window_seams(num_frames: int, context_frames: int, context_overlap: int,
                 offsets: Optional[Sequence[int]] = None) -> List[int]:
    """Boundaries b (between frame b-1 and frame b, 1 <= b < N) where a window of the sampler's
    schedule starts or ends, for every step offset in ``offsets`` (default: offset 0). A clip that
    fits one window has no seam; the closed loop's wrap (N-1 -> 0) is no boundary of the video."""
    seams = set()
    for off in (offsets if offsets is not None else [0]):
        windows = context_windows(num_frames, context_frames, context_overlap, int(off))
        if len(windows) == 1:
            continue
        for w in windows:  # a window wrapping past the last frame still starts and ends at seams
            seams.add(w[0])
            seams.add((w[-1] + 1) % num_frames)
    return sorted(b for b in seams if 0 < b < num_frames)


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
    changes: List[float]              # change at boundary b = index b-1
    excess: List[float]               # change / local median of inside boundaries
    seams: List[int]
    mean_change_seams: float = float("nan")
    mean_change_inside: float = float("nan")
    seam_ratio: float = float("nan")  # mean_change_seams / mean_change_inside (1 = no flicker)
    seam_excess: float = float("nan")  # mean excess over seams (1 = seams like their neighbours)
    inside_excess: float = float("nan")
    extra: Dict[str, float] = field(default_factory=dict)


def stability(frames: Sequence[np.ndarray], seams: Sequence[int]) -> Stability:
    ch = frame_changes(frames)
    n = len(ch) + 1
    seams = sorted(int(b) for b in seams if 0 < int(b) < n)
    is_seam = np.zeros(len(ch) + 1, bool)
    is_seam[seams] = True
    inside = [b for b in range(1, n) if not is_seam[b]]
    excess = np.full(len(ch), np.nan)
    eps = 1e-3
    for b in range(1, n):
        near = [c for c in inside if c != b and abs(c - b) <= NEIGHBOURS]
        if not near:
            near = [c for c in inside if c != b]
        if near:
            excess[b - 1] = ch[b - 1] / (float(np.median(ch[[c - 1 for c in near]])) + eps)
    out = Stability(changes=ch.tolist(), excess=excess.tolist(), seams=seams)
    if seams and inside:
        out.mean_change_seams = float(ch[[b - 1 for b in seams]].mean())
        out.mean_change_inside = float(ch[[b - 1 for b in inside]].mean())
        out.seam_ratio = out.mean_change_seams / (out.mean_change_inside + eps)
        out.seam_excess = float(np.nanmean(excess[[b - 1 for b in seams]]))
        out.inside_excess = float(np.nanmean(excess[[b - 1 for b in inside]]))
    return out
