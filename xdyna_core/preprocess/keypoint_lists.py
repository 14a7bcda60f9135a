"""POSE_KEYPOINT lists as the nodes exchange them: parsed with a clear error, checked for a person,
and written so that rendering the list anywhere gives exactly the pose images rendered here."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .keypoint_checks import check_keypoints, check_people
from .keypoints import Person, PoseFrame, from_pose_keypoint_json, to_pose_keypoint_json
from .render import CONF_THRESHOLD

def drawable(frame: PoseFrame, threshold: Optional[float] = None) -> PoseFrame:
    """Copy of ``frame`` keeping only the points the renderer draws (confidence above the
    threshold); the others become missing (0, 0, 0). POSE_KEYPOINT stores binary confidences, so
    this is what makes a written list render exactly like the poses it came from."""
    thr = np.float32(CONF_THRESHOLD if threshold is None else threshold)

    def clean(a):
        if a is None:
            return None
        a = np.array(a, dtype=np.float32, copy=True)
        bad = ~((a[:, 2] > thr) & np.isfinite(a[:, :2]).all(axis=1))
        a[bad] = 0.0
        return a

    people = [Person(clean(p.body), clean(p.left_hand), clean(p.right_hand), clean(p.face)) for p in frame.people]
    return PoseFrame(frame.width, frame.height, people)


def keypoint_round_trip(poses: Sequence[PoseFrame]) -> Tuple[List[dict], List[PoseFrame]]:
    """(POSE_KEYPOINT list, the poses as that list reads back). Render the second to get exactly
    the images any consumer of the list renders."""
    data = to_pose_keypoint_json([drawable(p) for p in poses])
    return data, from_pose_keypoint_json(data, normalized=False)


def parse_keypoints(pose_keypoint, what: str = "pose_keypoint") -> List[PoseFrame]:
    """POSE_KEYPOINT (list of frame dicts, one dict or a JSON string) -> PoseFrames, at least one,
    through the one sanity check (:func:`.keypoint_checks.check_keypoints`; its notes:
    :func:`keypoint_notes`)."""
    if pose_keypoint is None:
        raise ValueError(f"{what}: no POSE_KEYPOINT given")
    frames = from_pose_keypoint_json(pose_keypoint)
    if not frames:
        raise ValueError(f"{what}: the POSE_KEYPOINT list holds no frames")
    check_keypoints(frames, what)
    return frames


def keypoint_notes(frames: Sequence[PoseFrame], what: str = "pose_keypoint") -> List[str]:
    """The notes of the sanity check for checked ``frames`` (several people in a frame), one line each."""
    return check_keypoints(frames, what)


def require_person(poses: Sequence[PoseFrame], what: str) -> int:
    """Number of frames without a person; KeypointCheckError (a ValueError) when no frame has one."""
    return check_people(poses, what)
