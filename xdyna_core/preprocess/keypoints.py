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
# x, y are canvas pixels or normalised to the canvas, decided PER PART as comfyui_controlnet_aux
# decides when it draws (its util.is_normalized): a part whose present points all have |x| <= 1 and
# |y| <= 1 is normalised (a small negative from a person touching the border included).
# As controlnet_aux writes: a hand or face without any present point is null (a face is never
# just the two eye points); the body is always a list.
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


def _flatten_part(points: Optional[np.ndarray], binary_confidence: bool, scale,
                  keep_empty: bool = False) -> Optional[list]:
    """Flat [x, y, c]*n list; None for an absent part, and for a part without any present point
    unless ``keep_empty`` (the body)."""
    if points is None:
        return None
    digits = 3 if scale == (1.0, 1.0) else 7  # pixels to 1/1000 px; normalised to well under 0.01 px
    out, seen = [], False
    for x, y, c in np.asarray(points, dtype=np.float64):
        if c > 0 and math.isfinite(x) and math.isfinite(y):
            out += [round(float(x) * scale[0], digits), round(float(y) * scale[1], digits),
                    1.0 if binary_confidence else round(float(c), 4)]
            seen = True
        else:
            out += [0.0, 0.0, 0.0]
    return out if seen or keep_empty else None


def _has_points(points: Optional[np.ndarray]) -> bool:
    return points is not None and bool((np.asarray(points)[:, 2] > 0).any())


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
            if _has_points(person.face):
                # controlnet_aux appends the body's right and left eye to the 68 face points.
                face = np.concatenate([np.asarray(person.face, np.float64)[:NUM_FACE],
                                       np.asarray(person.body, np.float64)[[14, 15]]], axis=0)
            people.append({
                BODY_KEY: _flatten_part(person.body, binary_confidence, scale, keep_empty=True),
                FACE_KEY: _flatten_part(face, binary_confidence, scale),
                LEFT_HAND_KEY: _flatten_part(person.left_hand, binary_confidence, scale),
                RIGHT_HAND_KEY: _flatten_part(person.right_hand, binary_confidence, scale),
            })
        out.append({"people": people, "canvas_height": int(frame.height), "canvas_width": int(frame.width)})
    return out


def _parse_part(values: Any, allowed: Dict[int, Optional[List[int]]], where: str,
                normalized: Optional[bool], canvas: Tuple[int, int]) -> Optional[np.ndarray]:
    """Flat [x, y, c]*n list -> (n_out, 3) float32 in canvas pixels; `allowed` maps an accepted point
    count to the rows to keep (None = all). null / [] -> None. Normalised or not is decided on the
    part as given (the face with its two eye points), as controlnet_aux decides."""
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
    present = arr[:, 2] > 0
    arr[~present] = 0.0  # canonical missing point
    if normalized is True or (normalized is None and is_normalized(arr[present, :2])):
        arr[present, :2] *= canvas
    rows = allowed[arr.shape[0]]
    if rows is not None:
        arr = arr[rows]
    return arr.astype(np.float32)


def is_normalized(xy: np.ndarray) -> bool:
    """comfyui_controlnet_aux's rule for one part: its present points (x, y) all within -1..1
    (absolute value <= 1) and at least one of them."""
    return len(xy) > 0 and bool((np.abs(xy) <= 1.0).all())


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
    normalized: None = decide per part (see :func:`is_normalized`), True / False = all normalised /
    all pixels. A hand or face without any present point is None.
    Raises KeypointFormatError naming the frame, person and field of the first problem. The content
    (people, canvas, values) is checked by :func:`.keypoint_checks.check_keypoints`.
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
            parse = lambda key, allowed: _parse_part(pj.get(key), allowed, f"{pw}, '{key}'", normalized,
                                                     (width, height))
            body = parse(BODY_KEY, {NUM_BODY: None, 25: BODY25_TO_BODY18})
            face = parse(FACE_KEY, {NUM_FACE: None, NUM_FACE_JSON: list(range(NUM_FACE))})
            lh = parse(LEFT_HAND_KEY, {NUM_HAND: None})
            rh = parse(RIGHT_HAND_KEY, {NUM_HAND: None})
            if body is None:
                body = np.zeros((NUM_BODY, 3), np.float32)  # hands/face only: body all missing
            lh, rh, face = (a if _has_points(a) else None for a in (lh, rh, face))
            people.append(Person(body, lh, rh, face))
        frames.append(PoseFrame(width, height, people))
    return frames


def _parts(frame: PoseFrame):
    for p in frame.people:
        for a in (p.body, p.left_hand, p.right_hand, p.face):
            if a is not None:
                yield a


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
