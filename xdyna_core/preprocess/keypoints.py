"""Pose keypoints: the one in-memory layout every pose source maps to.

Layout (OpenPose/DWPose conventions, pixel coordinates of the frame the points belong to):
  body  (18, 3)  OpenPose-18 order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow,
                 l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear
  left_hand / right_hand (21, 3)   OpenPose hand order (wrist first)
  face  (68, 3)  iBUG-68 order
Each row is (x, y, confidence); confidence 0 marks a missing point (x, y are then ignored).
A part that the source did not produce at all is None.

Also here: the POSE_KEYPOINT JSON format of comfyui_controlnet_aux in and out
(to_pose_keypoint_json / from_pose_keypoint_json / save_keypoints / load_keypoints), so any pose
source can feed the renderer and an extraction can be edited and re-used.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import XDynaError
from ..outputs import write_atomic

NUM_BODY = 18
NUM_HAND = 21
NUM_FACE = 68


@dataclass
class Person:
    body: np.ndarray  # (18, 3) float32
    left_hand: Optional[np.ndarray] = None  # (21, 3)
    right_hand: Optional[np.ndarray] = None  # (21, 3)
    face: Optional[np.ndarray] = None  # (68, 3)

    def copy(self) -> "Person":
        c = lambda a: None if a is None else np.array(a, dtype=np.float32, copy=True)
        return Person(c(self.body), c(self.left_hand), c(self.right_hand), c(self.face))


@dataclass
class PoseFrame:
    """All people found in one frame of size width x height (pixels)."""

    width: int
    height: int
    people: List[Person] = field(default_factory=list)

    @property
    def main(self) -> Optional[Person]:
        """The person X-Dyna animates from: the first one (sources order people by size/score)."""
        return self.people[0] if self.people else None


# ---------------------------------------------------------------------------------------------
# POSE_KEYPOINT JSON (comfyui_controlnet_aux / OpenPose output format)
#
# One dict per image: {"people": [person, ...], "canvas_height": H, "canvas_width": W}; a person
# holds flat [x, y, c, x, y, c, ...] lists "pose_keypoints_2d" (18 points; OpenPose BODY_25 with
# 25 points is accepted on input), "face_keypoints_2d" (70 = iBUG-68 + right/left eye from the
# body, as controlnet_aux writes it; 68 accepted on input), "hand_left_keypoints_2d" and
# "hand_right_keypoints_2d" (21 each). A part may be null or []. Missing points are 0, 0, 0.
# x, y are canvas pixels; coordinates that all lie in 0..1 are taken as normalised and scaled.
# ---------------------------------------------------------------------------------------------

BODY_KEY = "pose_keypoints_2d"
FACE_KEY = "face_keypoints_2d"
LEFT_HAND_KEY = "hand_left_keypoints_2d"
RIGHT_HAND_KEY = "hand_right_keypoints_2d"
NUM_FACE_JSON = 70  # 68 + the two body eye points appended by controlnet_aux

# OpenPose BODY_25 -> OpenPose-18 (drops mid-hip 8 and the six foot points 19-24).
BODY25_TO_BODY18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


class KeypointFormatError(XDynaError, ValueError):
    """POSE_KEYPOINT JSON that does not have the expected structure (message says where)."""


def _flatten_part(points: Optional[np.ndarray], binary_confidence: bool, scale) -> Optional[list]:
    if points is None:
        return None
    out = []
    for x, y, c in np.asarray(points, dtype=np.float64):
        if c > 0 and math.isfinite(x) and math.isfinite(y):
            out += [round(float(x) * scale[0], 3), round(float(y) * scale[1], 3),
                    1.0 if binary_confidence else round(float(c), 4)]
        else:
            out += [0.0, 0.0, 0.0]
    return out


def to_pose_keypoint_json(
    frames: Sequence[PoseFrame], binary_confidence: bool = True, normalized: bool = False
) -> List[dict]:
    """PoseFrames -> POSE_KEYPOINT list (one dict per frame).

    binary_confidence: write c = 1.0 for every present point, as controlnet_aux does (its reader
    drops points with c < 1.0); False writes the source's confidence.
    normalized: write x / width, y / height instead of pixels.
    """
    out = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, PoseFrame):
            raise TypeError(f"to_pose_keypoint_json: frame {i} is {type(frame).__name__}, expected PoseFrame")
        scale = (1.0 / frame.width, 1.0 / frame.height) if normalized else (1.0, 1.0)
        people = []
        for person in frame.people:
            face = None
            if person.face is not None:
                # controlnet_aux appends the body's right and left eye to the 68 face points.
                face = np.concatenate([np.asarray(person.face, np.float64)[:NUM_FACE],
                                       np.asarray(person.body, np.float64)[[14, 15]]], axis=0)
            people.append({
                BODY_KEY: _flatten_part(person.body, binary_confidence, scale),
                FACE_KEY: _flatten_part(face, binary_confidence, scale),
                LEFT_HAND_KEY: _flatten_part(person.left_hand, binary_confidence, scale),
                RIGHT_HAND_KEY: _flatten_part(person.right_hand, binary_confidence, scale),
            })
        out.append({"people": people, "canvas_height": int(frame.height), "canvas_width": int(frame.width)})
    return out


def _parse_part(values: Any, allowed: Dict[int, Optional[List[int]]], where: str) -> Optional[np.ndarray]:
    """Flat [x, y, c]*n list -> (n_out, 3) float32; `allowed` maps an accepted point count to the
    rows to keep (None = all). null / [] -> None."""
    if values is None or (isinstance(values, list) and len(values) == 0):
        return None
    if not isinstance(values, list):
        raise KeypointFormatError(f"{where}: expected a list of numbers or null, got {type(values).__name__}")
    bad = next((j for j, v in enumerate(values)
                if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if bad is not None:
        raise KeypointFormatError(f"{where}: value {bad} is {values[bad]!r}, expected a number")
    if len(values) % 3 or len(values) // 3 not in allowed:
        counts = " or ".join(f"{n * 3} ({n} points x 3)" for n in allowed)
        raise KeypointFormatError(f"{where}: expected {counts} numbers, got {len(values)}")
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(arr).all():
        raise KeypointFormatError(f"{where}: contains NaN or infinite values")
    rows = allowed[arr.shape[0]]
    if rows is not None:
        arr = arr[rows]
    arr[arr[:, 2] <= 0] = 0.0  # canonical missing point
    return arr.astype(np.float32)


def _canvas_dim(frame: dict, key: str, fallback: Optional[int], where: str) -> int:
    v = frame.get(key, fallback)
    if v is None:
        raise KeypointFormatError(f"{where}: missing '{key}' (pass canvas_size=(width, height) to supply it)")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
        raise KeypointFormatError(f"{where}: '{key}' must be a positive integer, got {v!r}")
    return int(v)


def from_pose_keypoint_json(
    obj: Any, canvas_size: Optional[Tuple[int, int]] = None, normalized: Optional[bool] = None
) -> List[PoseFrame]:
    """POSE_KEYPOINT list (or one frame dict, or a JSON string) -> PoseFrames.

    canvas_size: (width, height) for frames without canvas_width/canvas_height.
    normalized: None = detect per frame (all present x, y within 0..1 -> scaled by the canvas).
    Raises KeypointFormatError naming the frame, person and field of the first problem.
    """
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise KeypointFormatError(f"POSE_KEYPOINT: not valid JSON: {e}") from None
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise KeypointFormatError(
            f"POSE_KEYPOINT: expected a list of frame dicts, got {type(obj).__name__}")
    fw, fh = canvas_size if canvas_size is not None else (None, None)
    frames = []
    for i, fr in enumerate(obj):
        where = f"POSE_KEYPOINT frame {i}"
        if not isinstance(fr, dict):
            raise KeypointFormatError(f"{where}: expected a dict, got {type(fr).__name__}")
        width = _canvas_dim(fr, "canvas_width", fw, where)
        height = _canvas_dim(fr, "canvas_height", fh, where)
        if "people" not in fr:
            raise KeypointFormatError(f"{where}: missing 'people' list")
        people_json = fr["people"]
        if people_json is None:
            people_json = []
        if not isinstance(people_json, list):
            raise KeypointFormatError(f"{where}: 'people' must be a list, got {type(people_json).__name__}")
        people = []
        for j, pj in enumerate(people_json):
            pw = f"{where}, person {j}"
            if not isinstance(pj, dict):
                raise KeypointFormatError(f"{pw}: expected a dict, got {type(pj).__name__}")
            body = _parse_part(pj.get(BODY_KEY), {NUM_BODY: None, 25: BODY25_TO_BODY18}, f"{pw}, '{BODY_KEY}'")
            face = _parse_part(pj.get(FACE_KEY), {NUM_FACE: None, NUM_FACE_JSON: list(range(NUM_FACE))},
                               f"{pw}, '{FACE_KEY}'")
            lh = _parse_part(pj.get(LEFT_HAND_KEY), {NUM_HAND: None}, f"{pw}, '{LEFT_HAND_KEY}'")
            rh = _parse_part(pj.get(RIGHT_HAND_KEY), {NUM_HAND: None}, f"{pw}, '{RIGHT_HAND_KEY}'")
            if body is None:
                body = np.zeros((NUM_BODY, 3), np.float32)  # hands/face only: body all missing
            people.append(Person(body, lh, rh, face))
        frame = PoseFrame(width, height, people)
        if normalized is True or (normalized is None and _looks_normalized(frame)):
            _scale_frame(frame, width, height)
        frames.append(frame)
    return frames


def _parts(frame: PoseFrame):
    for p in frame.people:
        for a in (p.body, p.left_hand, p.right_hand, p.face):
            if a is not None:
                yield a


def _looks_normalized(frame: PoseFrame) -> bool:
    present = [a[a[:, 2] > 0, :2] for a in _parts(frame)]
    present = [a for a in present if len(a)]
    if not present or (frame.width <= 2 and frame.height <= 2):
        return False
    xy = np.concatenate(present, axis=0)
    return bool(xy.min() >= 0.0 and xy.max() <= 1.0)


def _scale_frame(frame: PoseFrame, width: int, height: int) -> None:
    for a in _parts(frame):
        a[:, 0] *= width
        a[:, 1] *= height


def save_keypoints(path: Union[str, os.PathLike], frames: Sequence[PoseFrame], **kwargs) -> None:
    """Write PoseFrames as a POSE_KEYPOINT JSON file (kwargs go to to_pose_keypoint_json)."""
    write_atomic(path, json.dumps(to_pose_keypoint_json(frames, **kwargs), separators=(",", ":")))


def load_keypoints(path: Union[str, os.PathLike], **kwargs) -> List[PoseFrame]:
    """Read a POSE_KEYPOINT JSON file (kwargs go to from_pose_keypoint_json)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"keypoint file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KeypointFormatError(f"{p}: not valid JSON: {e}") from None
    try:
        return from_pose_keypoint_json(data, **kwargs)
    except KeypointFormatError as e:
        raise KeypointFormatError(f"{p}: {e}") from None
