"""Pose detector and face-landmark source factories shared by the nodes and both command lines."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from ..errors import XDynaError
from .keypoints import PoseFrame


class DetectorUnavailable(XDynaError, ValueError):
    """The requested detector cannot be opened (missing files or package); the message says why."""


NO_POSE_EXTRACTOR = (
    "no pose extractor available: place DWPose's yolox_l.onnx (or yolox_l.torchscript.pt) and "
    "dw-ll_ucoco_384.onnx (or dw-ll_ucoco_384_bs5.torchscript.pt) in ComfyUI/models/xdyna/detectors/ "
    "(comfyui_controlnet_aux's downloads are used where they are), or on Python 3.10-3.12 install "
    "the optional mediapipe 0.10.14 (bash install.sh --mediapipe)")


def make_pose_detector(backend: str, model_dirs: Sequence[str] = (), max_people: Optional[int] = 1,
                       static_images: bool = False, device=None) -> Tuple[str, Callable[[np.ndarray], PoseFrame]]:
    """(backend name, detector image -> PoseFrame). 'auto' = DWPose when its files (ONNX or
    TorchScript, see dwpose.find_dwpose_models) are found, else MediaPipe when installed; the error
    then starts with one line saying what to place where, followed by both reasons. `device`: where
    TorchScript DWPose files run (default: CUDA when available)."""
    from .dwpose import DWPoseConfig, DWPoseDetector, DWPoseModelsNotFound, find_dwpose_models

    def dwpose():
        det, pose = find_dwpose_models(model_dirs)
        return "dwpose", DWPoseDetector(det, pose, config=DWPoseConfig(max_people=max_people), device=device)

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
            raise DetectorUnavailable(f"{NO_POSE_EXTRACTOR}.\nDWPose: {e_dw}\nMediaPipe: {e_mp}") from None


def pose_extractor_status(model_dirs: Sequence[str] = ()) -> str:
    """One line: which pose extractor 'auto' would use here (files found, nothing opened), or
    what to place where. Cheap enough for install time."""
    import importlib.util

    from .dwpose import DWPoseModelsNotFound, find_dwpose_models

    try:
        det, pose = find_dwpose_models(model_dirs)
        return f"pose extractor: DWPose ({det} + {pose})"
    except DWPoseModelsNotFound:
        pass
    if importlib.util.find_spec("mediapipe") is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("mediapipe")
        except PackageNotFoundError:
            v = "?"
        if v == "0.10.14":
            return "pose extractor: MediaPipe 0.10.14 (no DWPose files found)"
    return NO_POSE_EXTRACTOR
