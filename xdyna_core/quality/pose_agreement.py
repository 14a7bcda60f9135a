"""Pose agreement: PCK of the keypoints re-detected in the result against the driving keypoints.

The driving keypoints are taken in the result's geometry, i.e. after the crop/stretch or the
alignment onto the reference that the job used (:func:`preprocess.driving_pose.extract_driving_pose`,
the nodes' and the CLI's one driving path), and the result is searched with the same detector.
A driving point counts when the pose source gave it (the points the renderer draws, so the ones
the sampler saw); it is correct when the result has the same point within ``alpha`` times the
diagonal of the driving person's box (all its drawn points). Body (18 OpenPose points) and hands
(2 x 21) are scored separately; a frame without a driving person or without points of a part has
no score for that part (NaN per frame, left out of the overall figure).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..preprocess.keypoints import Person, PoseFrame

ALPHAS = (0.05, 0.1)
PARTS = ("body", "hands")


def _points(person: Optional[Person], part: str) -> Optional[np.ndarray]:
    if person is None:
        return None
    if part == "body":
        return person.body
    hands = [h if h is not None else np.zeros((21, 3), np.float32) for h in (person.left_hand, person.right_hand)]
    if person.left_hand is None and person.right_hand is None:
        return None
    return np.concatenate(hands, axis=0)


def _visible(a: Optional[np.ndarray], threshold: float) -> np.ndarray:
    if a is None:
        return np.zeros(0, bool)
    return (a[:, 2] > threshold) & np.isfinite(a[:, :2]).all(axis=1)


def box_diagonal(person: Person, threshold: float) -> float:
    """Diagonal of the box around every drawn point of the person (body, hands)."""
    pts = [a[_visible(a, threshold), :2] for a in (person.body, person.left_hand, person.right_hand) if a is not None]
    pts = np.concatenate(pts, axis=0) if pts else np.zeros((0, 2))
    if len(pts) < 2:
        return 0.0
    return float(np.hypot(*(pts.max(axis=0) - pts.min(axis=0))))


@dataclass
class PoseAgreement:
    """per_frame[part][alpha]: PCK per frame (NaN = nothing to score); overall[part][alpha]: the
    pooled fraction over all scored points; points[part]: how many driving points were scored."""
    per_frame: Dict[str, Dict[float, List[float]]] = field(default_factory=dict)
    overall: Dict[str, Dict[float, float]] = field(default_factory=dict)
    points: Dict[str, int] = field(default_factory=dict)


def pck(driving: Sequence[PoseFrame], result: Sequence[PoseFrame], alphas: Sequence[float] = ALPHAS,
        threshold: Optional[float] = None) -> PoseAgreement:
    """PCK of ``result`` against ``driving`` (same canvas, frame by frame)."""
    from ..preprocess.render import CONF_THRESHOLD

    thr = CONF_THRESHOLD if threshold is None else float(threshold)
    if len(driving) != len(result):
        raise ValueError(f"{len(driving)} driving pose frames but {len(result)} result pose frames")
    out = PoseAgreement()
    for part in PARTS:
        hits = {a: 0 for a in alphas}
        total = 0
        frames = {a: [] for a in alphas}
        for d, r in zip(driving, result):
            ref = _points(d.main, part)
            ok = _visible(ref, thr)
            diag = box_diagonal(d.main, thr) if d.main is not None else 0.0
            if not ok.any() or diag <= 0:
                for a in alphas:
                    frames[a].append(float("nan"))
                continue
            got = _points(r.main, part)
            seen = _visible(got, thr) if got is not None else np.zeros_like(ok)
            dist = (np.hypot(*(got[:, :2] - ref[:, :2]).T) if got is not None else np.full(len(ok), np.inf))
            n = int(ok.sum())
            total += n
            for a in alphas:
                good = int((ok & seen & (dist <= a * diag)).sum())
                hits[a] += good
                frames[a].append(good / n)
        out.per_frame[part] = frames
        out.overall[part] = {a: (hits[a] / total if total else float("nan")) for a in alphas}
        out.points[part] = total
    return out


def driving_and_result_poses(driving_frames, result_frames, detector, fit: str = "crop",
                             reference: Optional[np.ndarray] = None) -> Tuple[List[PoseFrame], List[PoseFrame], str]:
    """(driving poses in the result's geometry, poses detected in the result, geometry description).

    ``reference`` (uint8 image) = the job aligned the driving skeleton onto the reference person."""
    from ..preprocess.driving_pose import extract_driving_pose
    from ..preprocess.pose_detection import detect_poses

    if len(result_frames) == 0:
        raise ValueError("the result has no frames")
    H, W = result_frames[0].shape[:2]
    prepared = extract_driving_pose(driving_frames, detector, (W, H), fit, reference)
    result = detect_poses(result_frames, detector)
    return prepared.poses, result, prepared.description
