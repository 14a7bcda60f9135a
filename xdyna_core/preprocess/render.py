"""Skeleton renderer in the style of X-Dyna's pose videos (OpenPose-18 body + DWPose hands).

The official pose videos (``assets/poses/*.mp4``) are OpenPose/DWPose drawings *without the head
skeleton*: 13 body limbs (everything up to neck->nose), body joints 0-13, both hands, no eyes,
ears, face dots or feet, on black, drawn at the output resolution (spec PREPROCESSING.md §3).
This module holds the only copy of the colour and size tables; everything else calls
:func:`render_pose` / :func:`render_sequence`.

Sizes (stick half-width 4, joint radius 4, hand line 2 px, hand dot radius 4) are defined for a
short side of 512 px and scale with ``min(width, height) / 512`` so that other output sizes look
like the training data resized, not like a thinner drawing.

:func:`skeleton_coverage` is the metric used to compare a render with an official pose video.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from .keypoints import NUM_BODY, NUM_FACE, NUM_HAND, PoseFrame

# --------------------------------------------------------------------------- tables (RGB)

#: Colour of body joint i and, multiplied by LIMB_INTENSITY, of limb i.
BODY_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

#: OpenPose-18 limbs as 0-based joint pairs; limb i is drawn with colour i.
BODY_LIMBS: Tuple[Tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

#: Limbs and joints that belong to the head skeleton (eyes, ears); X-Dyna does not draw them.
HEAD_LIMBS = frozenset({13, 14, 15, 16})
HEAD_JOINTS = frozenset({14, 15, 16, 17})

#: Limbs are darker than joints: OpenPose multiplies the limb canvas by 0.6 (truncated).
LIMB_INTENSITY = 0.6

#: OpenPose hand bones (wrist = 0, then 4 points per finger, thumb first).
HAND_EDGES: Tuple[Tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)


def _hand_edge_color(e: int) -> Tuple[int, int, int]:
    # Hue e/20 at full saturation/value; OpenCV rounds float colours half-to-even, so does round().
    r, g, b = colorsys.hsv_to_rgb(e / len(HAND_EDGES), 1.0, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


HAND_EDGE_COLORS: Tuple[Tuple[int, int, int], ...] = tuple(_hand_edge_color(e) for e in range(len(HAND_EDGES)))
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)

#: Sizes at a short side of 512 px.
REFERENCE_SHORT_SIDE = 512
STICK_WIDTH = 4  # semi-minor axis of the limb ellipse
JOINT_RADIUS = 4
HAND_LINE_WIDTH = 2
HAND_POINT_RADIUS = 4
FACE_POINT_RADIUS = 3

#: Coordinates are clipped to +-this before drawing (OpenCV works in int32).
COORD_LIMIT = 1e5

#: A point is drawn only above this confidence (DWPose / ControlNet rule).
CONF_THRESHOLD = 0.3


@dataclass(frozen=True)
class RenderStyle:
    """What to draw. The defaults are X-Dyna's "no head skeleton" variant."""

    draw_body: bool = True
    draw_head: bool = False  # eye/ear joints 14-17 and limbs 13-16
    draw_hands: bool = True
    draw_face: bool = False
    conf_threshold: float = CONF_THRESHOLD
    size_scale: Optional[float] = None  # None: min(width, height) / 512


XDYNA_STYLE = RenderStyle()


# --------------------------------------------------------------------------- drawing


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a hard requirement
        raise ImportError("render.py needs OpenCV: pip install opencv-python-headless") from e
    return cv2


def _scaled(size: int, scale: float) -> int:
    return max(1, int(round(size * scale)))


def _points_scaled(arr: Optional[np.ndarray], sx: float, sy: float, n: int, what: str) -> Optional[np.ndarray]:
    if arr is None:
        return None
    a = np.asarray(arr, dtype=np.float64)
    if a.shape != (n, 3):
        raise ValueError(f"{what} keypoints must have shape ({n}, 3) (x, y, conf), got {a.shape}")
    out = a.copy()
    out[:, 0] *= sx
    out[:, 1] *= sy
    # Far-away points (e.g. pushed out by an alignment) must not overflow OpenCV's int32 maths.
    np.clip(out[:, :2], -COORD_LIMIT, COORD_LIMIT, out=out[:, :2])
    return out


def _valid(pts: np.ndarray, i: int, thr: float) -> bool:
    x, y, c = pts[i]
    # Compare in float32, the storage type of keypoints (0.3 stored is not "> 0.3").
    return bool(np.float32(c) > np.float32(thr) and np.isfinite(x) and np.isfinite(y))


def _draw_limb(cv2, canvas, a, b, half_width: int, color):
    # OpenPose limb: a filled ellipse between the two joints, polygon sampled every degree.
    (xa, ya), (xb, yb) = a, b
    length = math.hypot(xa - xb, ya - yb)
    angle = math.degrees(math.atan2(ya - yb, xa - xb))
    centre = (int((xa + xb) / 2), int((ya + yb) / 2))
    poly = cv2.ellipse2Poly(centre, (int(length / 2), half_width), int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, poly, color)


def render_pose(frame: PoseFrame, width: int, height: int, style: RenderStyle = XDYNA_STYLE) -> np.ndarray:
    """Draw every person of ``frame`` on a black (height, width, 3) uint8 RGB canvas.

    Keypoints are in pixels of (frame.width, frame.height) and are scaled to (width, height).
    """
    cv2 = _cv2()
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"render size must be positive, got width={width} height={height}")
    if frame.width <= 0 or frame.height <= 0:
        raise ValueError(f"PoseFrame has an invalid size {frame.width}x{frame.height}")
    sx, sy = width / frame.width, height / frame.height
    scale = style.size_scale if style.size_scale is not None else min(width, height) / REFERENCE_SHORT_SIDE
    stick, joint_r = _scaled(STICK_WIDTH, scale), _scaled(JOINT_RADIUS, scale)
    hand_w, hand_r = _scaled(HAND_LINE_WIDTH, scale), _scaled(HAND_POINT_RADIUS, scale)
    face_r = _scaled(FACE_POINT_RADIUS, scale)
    thr = style.conf_threshold

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    people = [
        (
            _points_scaled(p.body, sx, sy, NUM_BODY, "body"),
            [_points_scaled(h, sx, sy, NUM_HAND, "hand") for h in (p.left_hand, p.right_hand)],
            _points_scaled(p.face, sx, sy, NUM_FACE, "face"),
        )
        for p in frame.people
    ]

    if style.draw_body:
        # All limbs of all people first, then all joints (OpenPose order).
        for i, (ja, jb) in enumerate(BODY_LIMBS):
            if i in HEAD_LIMBS and not style.draw_head:
                continue
            color = tuple(int(c * LIMB_INTENSITY) for c in BODY_COLORS[i])
            for body, _, _ in people:
                if body is not None and _valid(body, ja, thr) and _valid(body, jb, thr):
                    _draw_limb(cv2, canvas, body[ja, :2], body[jb, :2], stick, color)
        for j in range(NUM_BODY):
            if j in HEAD_JOINTS and not style.draw_head:
                continue
            for body, _, _ in people:
                if body is not None and _valid(body, j, thr):
                    cv2.circle(canvas, (int(body[j, 0]), int(body[j, 1])), joint_r, BODY_COLORS[j], thickness=-1)

    if style.draw_hands:
        for _, hands, _ in people:
            for hand in hands:
                if hand is None:
                    continue
                for e, (a, b) in enumerate(HAND_EDGES):
                    if _valid(hand, a, thr) and _valid(hand, b, thr):
                        p1 = (int(hand[a, 0]), int(hand[a, 1]))
                        p2 = (int(hand[b, 0]), int(hand[b, 1]))
                        cv2.line(canvas, p1, p2, HAND_EDGE_COLORS[e], thickness=hand_w)
                for k in range(NUM_HAND):
                    if _valid(hand, k, thr):
                        cv2.circle(canvas, (int(hand[k, 0]), int(hand[k, 1])), hand_r, HAND_POINT_COLOR, thickness=-1)

    if style.draw_face:
        for _, _, face in people:
            if face is None:
                continue
            for k in range(NUM_FACE):
                if _valid(face, k, thr):
                    cv2.circle(canvas, (int(face[k, 0]), int(face[k, 1])), face_r, FACE_POINT_COLOR, thickness=-1)
    return canvas


def render_sequence(
    frames: Iterable[PoseFrame], width: int, height: int, style: RenderStyle = XDYNA_STYLE
) -> np.ndarray:
    """Render a list of PoseFrames to a (N, height, width, 3) uint8 array."""
    out = [render_pose(f, width, height, style) for f in frames]
    if not out:
        raise ValueError("render_sequence got no frames")
    return np.stack(out)


# --------------------------------------------------------------------------- metric


#: A pixel of a pose render counts as skeleton when its brightest channel exceeds this value.
#: Codec noise in the official videos stays below ~30 on the black background.
SKELETON_PIXEL_THRESHOLD = 50


def skeleton_mask(image: np.ndarray, threshold: int = SKELETON_PIXEL_THRESHOLD) -> np.ndarray:
    """Boolean (H, W) mask of the drawn (non-black) pixels of a rendered pose image."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    return img.max(axis=2) > threshold


@dataclass
class CoverageResult:
    """``covered``: fraction of the target's skeleton pixels that have one of ours within the
    tolerance (recall); ``precision``: the same with the roles swapped. Both pooled over frames."""

    covered: float
    precision: float
    target_pixels: int
    ours_pixels: int
    frames: int


def skeleton_coverage(
    ours: Sequence[np.ndarray] | np.ndarray,
    target: Sequence[np.ndarray] | np.ndarray,
    tolerance_px: float = 5.0,
    threshold: int = SKELETON_PIXEL_THRESHOLD,
) -> CoverageResult:
    """Compare rendered pose frames with target (e.g. official) pose frames of the same size.

    A target skeleton pixel is covered when a skeleton pixel of ours lies within
    ``tolerance_px`` (Euclidean). Counts are pooled over all frames.
    """
    cv2 = _cv2()
    if len(ours) != len(target):
        raise ValueError(f"frame counts differ: ours {len(ours)}, target {len(target)}")
    if len(ours) == 0:
        raise ValueError("skeleton_coverage needs at least one frame")
    hit_t = hit_o = tot_t = tot_o = 0
    for a, b in zip(ours, target):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"frame shapes differ: ours {np.shape(a)}, target {np.shape(b)}")
        ma, mb = skeleton_mask(a, threshold), skeleton_mask(b, threshold)
        # Distance of every pixel to the nearest skeleton pixel of the other render.
        da = cv2.distanceTransform((~ma).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        db = cv2.distanceTransform((~mb).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        hit_t += int(np.count_nonzero(da[mb] <= tolerance_px))
        hit_o += int(np.count_nonzero(db[ma] <= tolerance_px))
        tot_t += int(mb.sum())
        tot_o += int(ma.sum())
    return CoverageResult(
        covered=hit_t / tot_t if tot_t else float("nan"),
        precision=hit_o / tot_o if tot_o else float("nan"),
        target_pixels=tot_t,
        ours_pixels=tot_o,
        frames=len(ours),
    )


__all__ = [
    "BODY_COLORS", "BODY_LIMBS", "HAND_EDGES", "HAND_EDGE_COLORS", "HAND_POINT_COLOR", "HEAD_JOINTS",
    "HEAD_LIMBS", "LIMB_INTENSITY", "RenderStyle", "XDYNA_STYLE", "render_pose", "render_sequence",
    "skeleton_mask", "skeleton_coverage", "CoverageResult",
]
