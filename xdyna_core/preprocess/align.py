"""Driving-to-reference alignment of poses (and of driving frames, for the S-Face patches).

X-Dyna's pose videos are already aligned to the reference image, but the code that did it was
never released (its S-Face path even disables alignment). This module is our design: a
similarity transform without rotation, ``p_ref = scale * p_drv + (tx, ty)``, fitted between the
reference image's pose and one chosen driving frame, then applied to every driving frame.

* scale: the median, over body segments visible in both poses, of length_ref / length_drv.
  Segments are the ones whose length changes least with the pose: torso sides (neck-hip),
  shoulder and hip widths, neck-shoulder, upper and lower legs, neck-nose. The median ignores
  a few foreshortened or mis-detected segments. Arms are left out (they move the most).
* translation: maps an anchor of the driving pose onto the same anchor of the reference:
  the torso centre (mean of neck and mid-hip) when both poses have neck and both hips, else the
  neck, else the mid-hip, else the mean of the joints visible in both.
* fallback (no person in either pose, or nothing in common): the driving frame is fitted to the
  reference frame the way X-Dyna crops driving videos (``crop2ratio``, top-biased, then resize);
  that is the identity when both frames have the same size. ``Alignment.description`` says so
  and starts with "WARNING".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .keypoints import Person, PoseFrame

#: Segments used for the scale (OpenPose-18 indices).
SCALE_SEGMENTS: Tuple[Tuple[int, int], ...] = (
    (1, 8), (1, 11),  # torso sides
    (2, 5), (8, 11),  # shoulder width, hip width
    (1, 2), (1, 5),  # neck-shoulders
    (8, 9), (11, 12), (9, 10), (12, 13),  # upper / lower legs
    (1, 0),  # neck-nose
)
NECK, R_HIP, L_HIP = 1, 8, 11
CONF = 0.3


@dataclass
class Alignment:
    """``p_out = scale * p_driving + translation``; ``out_size`` = (width, height) of the reference."""

    scale: float
    translation: Tuple[float, float]
    anchor: str
    description: str
    out_size: Tuple[int, int]
    segments_used: int = 0

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine matrix (for cv2.warpAffine)."""
        s, (tx, ty) = self.scale, self.translation
        return np.array([[s, 0.0, tx], [0.0, s, ty]], dtype=np.float64)

    @property
    def is_fallback(self) -> bool:
        return self.description.startswith("WARNING")


def _valid(body: np.ndarray, i: int) -> bool:
    return bool(np.float32(body[i, 2]) > np.float32(CONF) and np.isfinite(body[i, :2]).all())


def _anchor(body: np.ndarray, kind: str) -> np.ndarray:
    mid_hip = (body[R_HIP, :2] + body[L_HIP, :2]) / 2
    if kind == "torso centre":
        return (body[NECK, :2] + mid_hip) / 2
    if kind == "neck":
        return body[NECK, :2]
    return mid_hip


def _frame_fit(driving: PoseFrame, out_size: Tuple[int, int]) -> Tuple[float, Tuple[float, float]]:
    # Same as face_patches.crop2ratio + resize: crop the driving frame to the reference aspect.
    from .face_patches import crop2ratio_params

    W, H = out_size
    _, _, sw, sh, tw, th = crop2ratio_params(driving.height, driving.width, H, W)
    s = W / tw
    return s, (-sw * s, -sh * s)


def fit_alignment(reference: PoseFrame, driving: PoseFrame) -> Alignment:
    """Fit the similarity that puts ``driving``'s main person onto ``reference``'s main person."""
    out_size = (int(reference.width), int(reference.height))
    ref_p, drv_p = reference.main, driving.main
    problem = None
    if ref_p is None or drv_p is None:
        problem = "no person in the " + ("reference" if ref_p is None else "driving") + " pose"
    else:
        rb = np.asarray(ref_p.body, dtype=np.float64)
        db = np.asarray(drv_p.body, dtype=np.float64)
        ratios = []
        for a, b in SCALE_SEGMENTS:
            if _valid(rb, a) and _valid(rb, b) and _valid(db, a) and _valid(db, b):
                lr = np.hypot(*(rb[a, :2] - rb[b, :2]))
                ld = np.hypot(*(db[a, :2] - db[b, :2]))
                if lr > 1e-6 and ld > 1e-6:
                    ratios.append(lr / ld)
        if not ratios:
            problem = "no body segment visible in both poses"
    if problem is not None:
        s, t = _frame_fit(driving, out_size)
        return Alignment(
            s, t, "frame",
            f"WARNING: {problem}; driving frame fitted to the reference frame (crop2ratio), no pose alignment",
            out_size, 0,
        )

    scale = float(np.median(ratios))
    both = lambda idx: all(_valid(rb, i) and _valid(db, i) for i in idx)
    if both((NECK, R_HIP, L_HIP)):
        anchor = "torso centre"
    elif both((NECK,)):
        anchor = "neck"
    elif both((R_HIP, L_HIP)):
        anchor = "mid-hip"
    else:
        anchor = "common joints"
    if anchor == "common joints":
        common = [i for i in range(rb.shape[0]) if _valid(rb, i) and _valid(db, i)]
        a_ref, a_drv = rb[common, :2].mean(axis=0), db[common, :2].mean(axis=0)
    else:
        a_ref, a_drv = _anchor(rb, anchor), _anchor(db, anchor)
    t = a_ref - scale * a_drv
    desc = (
        f"scale {scale:.4f} (median of {len(ratios)} segment ratios, spread "
        f"{min(ratios):.3f}-{max(ratios):.3f}), anchor {anchor}, translation ({t[0]:.1f}, {t[1]:.1f}) px"
    )
    return Alignment(scale, (float(t[0]), float(t[1])), anchor, desc, out_size, len(ratios))


def choose_driving_frame(frames: Sequence[PoseFrame]) -> int:
    """Index of the driving frame to fit on: the first whose main person shows neck, both
    shoulders and both hips; else the one with the most valid body joints (0 if none)."""
    best, best_n = 0, -1
    for i, f in enumerate(frames):
        p = f.main
        if p is None:
            continue
        body = np.asarray(p.body)
        if all(_valid(body, j) for j in (1, 2, 5, 8, 11)):
            return i
        n = sum(_valid(body, j) for j in range(body.shape[0]))
        if n > best_n:
            best, best_n = i, n
    return best


def _transform_points(pts: Optional[np.ndarray], s: float, t: Tuple[float, float]) -> Optional[np.ndarray]:
    if pts is None:
        return None
    p = np.array(pts, dtype=np.float32, copy=True)
    keep = p[:, 2] > 0  # missing points keep their placeholder coordinates
    p[keep, 0] = p[keep, 0] * s + t[0]
    p[keep, 1] = p[keep, 1] * s + t[1]
    return p


def apply_alignment(
    frames: Sequence[PoseFrame], alignment: Alignment, out_size: Optional[Tuple[int, int]] = None
) -> List[PoseFrame]:
    """Transform every person's points; the result frames have size ``out_size`` (width, height),
    default the reference size. Points pushed outside the frame are kept (the renderer clips)."""
    W, H = out_size if out_size is not None else alignment.out_size
    s, t = alignment.scale, alignment.translation
    out = []
    for f in frames:
        people = [
            Person(
                _transform_points(p.body, s, t),
                _transform_points(p.left_hand, s, t),
                _transform_points(p.right_hand, s, t),
                _transform_points(p.face, s, t),
            )
            for p in f.people
        ]
        out.append(PoseFrame(int(W), int(H), people))
    return out


def warp_frame(image: np.ndarray, alignment: Alignment, out_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Warp a driving video frame (H, W, 3) with the alignment (bilinear, black outside)."""
    import cv2

    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    W, H = out_size if out_size is not None else alignment.out_size
    return cv2.warpAffine(
        np.ascontiguousarray(img), alignment.matrix, (int(W), int(H)), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


__all__ = ["Alignment", "fit_alignment", "apply_alignment", "warp_frame", "choose_driving_frame", "SCALE_SEGMENTS"]
