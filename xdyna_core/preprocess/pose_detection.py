"""Pose detectors for driving clips and reference pictures: the backend chosen by name ('auto':
DWPose when its ONNX files are found, else MediaPipe), a one-sentence error saying how to get a missing
one, tracking reset between clips, and the reference picture's pose as the sampler sees it."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import XDynaError
from ..reference import prepare_reference_image
from .detectors import DetectorUnavailable, make_pose_detector
from .image_batch import OnFrame, tick
from .keypoints import PoseFrame

POSE_BACKENDS = ("auto", "dwpose", "mediapipe")


class BackendUnavailable(XDynaError, ValueError):
    """No usable detector for the requested backend; the message says how to install one."""


def close_quietly(obj) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        close()  # MediaPipe graphs hold native threads


def open_pose_detector(backend: str, model_dirs: Sequence[str] = (), max_people: Optional[int] = 1):
    """(backend name, detector image -> PoseFrame). 'auto' = DWPose when its ONNX files are found,
    else MediaPipe. Raises :class:`BackendUnavailable` with one sentence saying how to get one."""
    if backend not in POSE_BACKENDS:
        raise ValueError(f"unknown pose backend {backend!r}: expected one of {', '.join(POSE_BACKENDS)}")
    try:
        return make_pose_detector(backend, list(model_dirs), max_people, static_images=False)
    except (DetectorUnavailable, ImportError, FileNotFoundError) as e:
        where = "; ".join(model_dirs) or "no folder configured"
        raise BackendUnavailable(f"pose backend '{backend}' is not available: {str(e).splitlines()[0]}"
                                 + (f" (DWPose folders searched: {where})" if backend != "mediapipe" else "")) from None


def reset_tracking(detector) -> None:
    if hasattr(detector, "reset"):
        detector.reset()  # a tracking backend must not carry one clip's subject into another


def detect_poses(frames: Sequence[np.ndarray], detector, on_frame: OnFrame = None) -> List[PoseFrame]:
    """Pose of every frame (consecutive frames of one clip; tracking is reset first)."""
    reset_tracking(detector)
    poses = []
    for i in range(len(frames)):
        poses.append(detector(frames[i]))
        tick(on_frame, i)
    return poses


def reference_pose(detector, image: np.ndarray, size: Tuple[int, int]) -> PoseFrame:
    """Pose of the reference picture as the sampler sees it (centre-cropped and resized to
    ``size``); ValueError when it shows no person."""
    W, H = size
    prepared = prepare_reference_image(image, H, W)
    reset_tracking(detector)
    pose = detector(prepared)
    reset_tracking(detector)
    if pose.main is None:
        raise ValueError("no person found in the reference image: alignment needs a photo of a person "
                         "with the body visible")
    return pose
