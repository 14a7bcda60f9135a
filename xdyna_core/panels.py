"""Text burnt into result frames: a label on each side-by-side panel, and a banner saying a video
made with random weights is a pipeline check, not an animation (so a shared clip cannot be
mistaken for the model's quality)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

PANEL_NAMES = ("reference", "driving", "pose", "face patches", "result")
RANDOM_WEIGHTS_BANNER = "PIPELINE CHECK - random weights"


def _put_text(frames: np.ndarray, text: str, x: int, y: int, max_width: int, colour=(255, 255, 255)) -> None:
    """Text with its baseline at (x, y) on a darkened box (readable on any picture), scaled down to
    fit max_width; in place on (N, H, W, 3)."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 0.5
    (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    if tw > max_width > 0:
        scale *= max_width / tw
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    box = frames[:, max(0, y - th - 4):y + 5, max(0, x - 4):x + tw + 4]
    box //= 3
    for frame in frames:  # cv2 draws on one contiguous HxWx3 image at a time
        cv2.putText(frame, text, (x, y), font, scale, colour, 1, cv2.LINE_AA)


def label_panels(frames: np.ndarray, names: Sequence[str] = PANEL_NAMES) -> np.ndarray:
    """A copy of side-by-side frames (N, H, len(names)*w, 3) with each panel's name at its top left."""
    out = np.ascontiguousarray(frames).copy()
    w = out.shape[2] // len(names)
    for i, name in enumerate(names):
        _put_text(out, name, i * w + 6, 18, w - 12)
    return out


def burn_banner(frames: np.ndarray, text: str = RANDOM_WEIGHTS_BANNER) -> np.ndarray:
    """A copy of (N, H, W, 3) frames with `text` in yellow on a dark box at the bottom left."""
    out = np.ascontiguousarray(frames).copy()
    h, w = out.shape[1:3]
    _put_text(out, text, 8, h - 10, w - 16, colour=(255, 230, 0))
    return out
