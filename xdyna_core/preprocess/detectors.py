"""Pose detector and face-landmark source factories shared by the nodes and both command lines."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .keypoints import PoseFrame


class DetectorUnavailable(ValueError):
    """The requested detector cannot be opened (missing files or package); the message says why."""


def make_pose_detector(backend: str, model_dirs: Sequence[str] = (), max_people: Optional[int] = 1,
                       static_images: bool = False) -> Tuple[str, Callable[[np.ndarray], PoseFrame]]:
    """(backend name, detector image -> PoseFrame). 'auto' = DWPose when its ONNX files are
    found, else MediaPipe when installed; the error then gives both reasons."""
    from .dwpose import DWPoseConfig, DWPoseDetector, DWPoseModelsNotFound, find_dwpose_models

    def dwpose():
        det, pose = find_dwpose_models(model_dirs)
        return "dwpose", DWPoseDetector(det, pose, config=DWPoseConfig(max_people=max_people))

    def mediapipe():
        from .mediapipe_backend import MediaPipePoseDetector

        return "mediapipe", MediaPipePoseDetector(static_image_mode=static_images)

    if backend == "dwpose":
        return dwpose()
    if backend == "mediapipe":
        return mediapipe()
    if backend != "auto":
        raise DetectorUnavailable(f"unknown pose backend {backend!r} (dwpose, mediapipe or auto)")
    try:
        return dwpose()
    except DWPoseModelsNotFound as e_dw:
        try:
            return mediapipe()
        except ImportError as e_mp:
            raise DetectorUnavailable(f"no pose backend available.\nDWPose: {e_dw}\nMediaPipe: {e_mp}") from None
