"""The quality report's plot: per-frame curves in stacked panels, context-window seams marked.

Drawn with OpenCV on a numpy canvas (no plotting library at run time). Each panel has its own
value range, a grey grid at the range ends and middle, a legend, and the seams as thin red lines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

WIDTH = 960
PANEL_HEIGHT = 190
MARGIN = (70, 16, 34, 26)  # left, right, top, bottom inside a panel
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (214, 39, 40)]
SEAM = (220, 40, 40)
GRID = (210, 210, 210)
TEXT = (30, 30, 30)


@dataclass
class Panel:
    title: str
    series: Dict[str, Sequence[float]]   # name -> value per x (NaN = gap)
    x_offset: float = 0.0                # x of the first value (0.5 for boundaries between frames)
    value_range: Optional[Tuple[float, float]] = None
    seams: List[int] = field(default_factory=list)  # x positions of the seams


def _range(panel: Panel) -> Tuple[float, float]:
    if panel.value_range is not None:
        return panel.value_range
    vals = [v for s in panel.series.values() for v in s if v is not None and math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _text(img, text, org, scale=0.45, colour=TEXT):
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def draw_panel(img: np.ndarray, top: int, panel: Panel, num_frames: int) -> None:
    import cv2

    left, right, mtop, bottom = MARGIN
    x0, x1 = left, WIDTH - right
    y0, y1 = top + mtop, top + PANEL_HEIGHT - bottom
    lo, hi = _range(panel)
    span_x = max(num_frames - 1, 1)

    def px(x):
        return int(round(x0 + (x1 - x0) * x / span_x))

    def py(v):
        return int(round(y1 - (y1 - y0) * (v - lo) / (hi - lo)))

    _text(img, panel.title, (x0, top + 20), 0.55)
    for v in (lo, (lo + hi) / 2, hi):
        cv2.line(img, (x0, py(v)), (x1, py(v)), GRID, 1)
        _text(img, f"{v:.3g}", (6, py(v) + 5), 0.4)
    cv2.rectangle(img, (x0, y0), (x1, y1), (120, 120, 120), 1)
    for s in panel.seams:
        cv2.line(img, (px(s - 0.5), y0), (px(s - 0.5), y1), SEAM, 1)
    for k in range(0, num_frames, max(1, num_frames // 10)):
        _text(img, str(k), (px(k) - 6, y1 + 16), 0.38)
    legend_x = x1 - 10
    for i, (name, values) in enumerate(reversed(list(panel.series.items()))):
        colour = COLOURS[(len(panel.series) - 1 - i) % len(COLOURS)]
        pts = []
        for k, v in enumerate(values):
            if v is None or not math.isfinite(v):
                if len(pts) > 1:
                    cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
                elif pts:
                    cv2.circle(img, pts[0], 2, colour, -1)
                pts = []
                continue
            pts.append((px(k + panel.x_offset), py(min(max(v, lo), hi))))
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        elif pts:
            cv2.circle(img, pts[0], 2, colour, -1)
        (tw, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        legend_x -= tw + 30
        cv2.line(img, (legend_x, top + 16), (legend_x + 18, top + 16), colour, 3)
        _text(img, name, (legend_x + 22, top + 20))
    if panel.seams:
        _text(img, "| seams", (x0 + 8 + int(8.5 * len(panel.title)), top + 20), 0.45, SEAM)


def draw_plot(panels: Sequence[Panel], num_frames: int, title: str = "") -> np.ndarray:
    """(H, WIDTH, 3) uint8 RGB image of the panels stacked, frame index on x."""
    head = 30 if title else 0
    img = np.full((head + PANEL_HEIGHT * len(panels), WIDTH, 3), 255, np.uint8)
    if title:
        _text(img, title, (10, 21), 0.6)
    for i, panel in enumerate(panels):
        draw_panel(img, head + i * PANEL_HEIGHT, panel, num_frames)
    return img
