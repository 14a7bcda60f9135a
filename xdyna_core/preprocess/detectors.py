"""Pose detector and face-landmark source factories shared by the nodes and both command lines."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from ..errors import XDynaError
from .keypoints import PoseFrame


class DetectorUnavailable(XDynaError, ValueError):
    """The requested detector cannot be opened (missing files or package); the message says why."""


DWPOSE_PLACE = ("place DWPose's yolox_l.onnx (or yolox_l.torchscript.pt) and dw-ll_ucoco_384.onnx (or "
                "dw-ll_ucoco_384_bs5.torchscript.pt) in ComfyUI/models/xdyna/detectors/ (comfyui_controlnet_aux's "
                "downloads are used where they are)")


def no_extractor_message(mediapipe_reason: Optional[str] = None) -> str:
    """The one sentence for "no pose extractor here": why MediaPipe is not usable, then both ways out."""
    from .mediapipe_backend import SETUP_HINT

    why = f" ({mediapipe_reason})" if mediapipe_reason else ""
    return f"no pose extractor available{why}: {SETUP_HINT}, or {DWPOSE_PLACE}"


def mediapipe_message(why: str) -> str:
    """The one sentence for "MediaPipe asked for, not usable here"."""
    from .mediapipe_backend import SETUP_HINT

    return f"MediaPipe is not available ({why}): {SETUP_HINT}"


NO_POSE_EXTRACTOR = no_extractor_message()


def mediapipe_problem() -> Optional[str]:
    """None when a MediaPipe pose extractor can be opened here, else why not (package metadata and
    files only: nothing is imported or opened)."""
    from .mediapipe_backend import unavailable_reason

    return unavailable_reason()


def pose_extractor_problem(backend: str, model_dirs: Sequence[str] = ()) -> Optional[str]:
    """None when :func:`make_pose_detector` (``backend``) should find an extractor, else the one
    sentence it would fail with. Cheap (files and package metadata only): callers run it before
    building or loading any model."""
    from .dwpose import DWPoseModelsNotFound, find_dwpose_models

    if backend not in ("auto", "dwpose", "mediapipe"):
        return f"unknown pose backend {backend!r} (dwpose, mediapipe or auto)"
    if backend in ("auto", "dwpose"):
        try:
            find_dwpose_models(model_dirs)
            return None
        except DWPoseModelsNotFound as e:
            if backend == "dwpose":
                return str(e).splitlines()[0]
    why = mediapipe_problem()
    if why is None:
        return None
    return mediapipe_message(why) if backend == "mediapipe" else no_extractor_message(why)


def make_pose_detector(backend: str, model_dirs: Sequence[str] = (), max_people: Optional[int] = 1,
                       static_images: bool = False, device=None) -> Tuple[str, Callable[[np.ndarray], PoseFrame]]:
    """(backend name, detector image -> PoseFrame). 'auto' = DWPose when its files (ONNX or
    TorchScript, see dwpose.find_dwpose_models) are found, else MediaPipe (legacy 0.10.14 or the
    Tasks runtime, see mediapipe_backend.open_pose_detector); otherwise DetectorUnavailable with
    :func:`no_extractor_message`. `device`: where TorchScript DWPose files run (default: CUDA when
    available)."""
    from .dwpose import DWPoseConfig, DWPoseDetector, DWPoseModelsNotFound, find_dwpose_models
    from .mediapipe_backend import open_pose_detector

    def dwpose():
        det, pose = find_dwpose_models(model_dirs)
        return "dwpose", DWPoseDetector(det, pose, config=DWPoseConfig(max_people=max_people), device=device)

    def mediapipe():
        why = mediapipe_problem()
        if why is None:
            try:
                return "mediapipe", open_pose_detector(static_image_mode=static_images)
            except (ImportError, FileNotFoundError) as e:
                why = str(e).splitlines()[0]
        raise DetectorUnavailable(why)

    if backend == "dwpose":
        return dwpose()
    if backend not in ("auto", "mediapipe"):
        raise DetectorUnavailable(f"unknown pose backend {backend!r} (dwpose, mediapipe or auto)")
    if backend == "auto":
        try:
            return dwpose()
        except DWPoseModelsNotFound:
            pass
    try:
        return mediapipe()
    except DetectorUnavailable as e:
        msg = mediapipe_message(str(e)) if backend == "mediapipe" else no_extractor_message(str(e))
        raise DetectorUnavailable(msg) from None


def pose_extractor_status(model_dirs: Sequence[str] = ()) -> str:
    """One line: which pose extractor 'auto' would use here (files found, nothing opened), or
    what to do. Cheap enough for install time."""
    from .dwpose import DWPoseModelsNotFound, find_dwpose_models
    from .mediapipe_backend import installed_mediapipe, is_legacy

    try:
        det, pose = find_dwpose_models(model_dirs)
        return f"pose extractor: DWPose ({det} + {pose})"
    except DWPoseModelsNotFound:
        pass
    why = mediapipe_problem()
    if why is not None:
        return no_extractor_message(why)
    v = installed_mediapipe()
    kind = "legacy solutions" if is_legacy(v) else "Tasks runtime with the 0.10.14 models"
    return f"pose extractor: MediaPipe {v} ({kind}; no DWPose files found)"
