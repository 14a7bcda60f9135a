"""The one sanity check of pose keypoints, whatever their source: a POSE_KEYPOINT JSON file, the
POSE_KEYPOINT of another ComfyUI node, or our own extractor's output.

Keypoints that would render black pose frames, and so make X-Dyna sample an unguided video, are
refused with an error naming the frames: no person in any frame; values that cannot be coordinates
(NaN, infinite, beyond :data:`ABSURD_PX`); a canvas that does not match the coordinates (the points
of a frame spread over more than :data:`MAX_SPAN` canvases); every point of a frame off its canvas.
Several people in a frame are allowed, with a one-line note: X-Dyna animates one person.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence

import numpy as np

from ..errors import XDynaError
from .keypoints import PoseFrame, _parts

#: No canvas is this large (ComfyUI's largest image side is 16384): a coordinate beyond it is garbage.
ABSURD_PX = 100_000.0
#: A person's points (limbs reaching out of the picture included) span at most about one canvas; a
#: frame whose points span more than this many canvas widths or heights was taken on another canvas.
MAX_SPAN = 2.0
LISTED_FRAMES = 8  # frame numbers named in a message before "and N more"


class KeypointCheckError(XDynaError, ValueError):
    """Pose keypoints that would drive nothing (the message names the frames and what is wrong)."""


def frame_list(indices: Sequence[int]) -> str:
    """'frame 3' / 'frames 0-33' / 'frames 1, 4-6, 9 and 12 more': runs of consecutive frames."""
    runs: List[List[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:LISTED_FRAMES]]
    more = sum(b - a + 1 for a, b in runs[LISTED_FRAMES:])
    return ("frame " if len(indices) == 1 else "frames ") + ", ".join(text) + (f" and {more} more" if more else "")


def _present(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a[a[:, 2] > 0, :2] if len(a) else np.zeros((0, 2))


def _present_xy(frame: PoseFrame) -> np.ndarray:
    return np.concatenate([np.zeros((0, 2))] + [_present(a) for a in _parts(frame)], axis=0)


def people_shown(frame: PoseFrame) -> int:
    """People of ``frame`` with at least one present point (the others draw nothing)."""
    return sum(1 for p in frame.people
               if any(len(_present(a)) for a in (p.body, p.left_hand, p.right_hand, p.face) if a is not None))


def _range(values: Iterable[float]) -> str:
    v = np.asarray(list(values), np.float64)
    return f"{v.min():.0f}..{v.max():.0f}"


def count_without_person(frames: Sequence[PoseFrame]) -> int:
    """Frames showing nobody (no person, or people without a present point: black pose frames)."""
    return sum(1 for f in frames if not people_shown(f))


def check_people(frames: Sequence[PoseFrame], what: str) -> int:
    """Number of frames without a person; KeypointCheckError when no frame has one."""
    missing = count_without_person(frames)
    if frames and missing == len(frames):
        raise KeypointCheckError(f"no person found in any of the {len(frames)} frames of {what}: X-Dyna needs "
                                 f"the pose of a person to animate")
    return missing


def check_keypoints(frames: Sequence[PoseFrame], what: str) -> List[str]:
    """Raise KeypointCheckError (one line naming ``what`` and the frames) for keypoints that would
    drive nothing; return the notes for the user (several people in a frame)."""
    check_people(frames, what)
    absurd, mismatch, off, crowded = [], [], [], []
    spans, outside, worst = [], [], 0.0
    for i, f in enumerate(frames):
        xy = _present_xy(f)
        if not len(xy):
            continue  # nobody shown: a black pose frame (counted by check_people)
        if people_shown(f) > 1:
            crowded.append(i)
        largest = float(np.abs(xy).max()) if np.isfinite(xy).all() else np.inf
        if largest > ABSURD_PX:
            absurd.append(i)
            worst = max(worst, largest)
            continue
        span = xy.max(axis=0) - xy.min(axis=0)
        if span[0] > MAX_SPAN * f.width or span[1] > MAX_SPAN * f.height:
            mismatch.append(i)
            spans.append(xy)
            continue
        on = (xy[:, 0] >= 0) & (xy[:, 0] <= f.width) & (xy[:, 1] >= 0) & (xy[:, 1] <= f.height)
        if not on.any():
            off.append(i)
            outside.append(xy)
    if absurd:
        bad = "NaN or infinite values" if worst == np.inf else f"values up to {worst:.3g} (beyond {ABSURD_PX:.0f} px)"
        raise KeypointCheckError(f"{what}: {frame_list(absurd)}: coordinates that cannot be pixels: {bad}")
    if mismatch:
        f = frames[mismatch[0]]
        xy = np.concatenate(spans)
        raise KeypointCheckError(
            f"{what}: {frame_list(mismatch)}: the canvas {f.width}x{f.height} does not match the coordinates "
            f"(x {_range(xy[:, 0])}, y {_range(xy[:, 1])}): canvas_width/canvas_height must be the size the "
            f"points were taken on")
    if off:
        f = frames[off[0]]
        xy = np.concatenate(outside)
        raise KeypointCheckError(
            f"{what}: {frame_list(off)}: every keypoint lies off the {f.width}x{f.height} canvas "
            f"(x {_range(xy[:, 0])}, y {_range(xy[:, 1])}): nothing would be drawn")
    notes = []
    if crowded:
        most = max(people_shown(frames[i]) for i in crowded)
        notes.append(f"{what}: {frame_list(crowded)} hold up to {most} people; X-Dyna animates one person: the "
                     f"first listed (person 0) is the one alignment and the face follow; the others are drawn "
                     f"in the pose images too")
    return notes
