"""The S-Face inputs of a clip: 68-point face landmarks per frame (from the poses' own face points,
insightface's 1k3d68 or MediaPipe FaceMesh) and the local/global face patch batches made from them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import face_landmarks as fl
from .face_patches import carry_landmarks, face_patches
from .image_batch import ImageBatchWriter, OnFrame, tick
from .keypoint_lists import parse_keypoints
from .driving_pose import unify_canvas
from .keypoints import PoseFrame
from .pose_detection import BackendUnavailable, close_quietly, open_pose_detector, reset_tracking

LANDMARK_SOURCES = ("auto", "pose_keypoint", "mediapipe", "insightface")


def poses_for_frames(pose_keypoint, n: int, size: Tuple[int, int]) -> List[PoseFrame]:
    """POSE_KEYPOINT matching ``n`` frames of ``size`` (canvases stretched onto it)."""
    frames = parse_keypoints(pose_keypoint)
    if len(frames) != n:
        raise ValueError(f"pose_keypoint has {len(frames)} frames but driving_images has {n}: connect the "
                         f"outputs of the same XDynaPoseExtract (or the same pose source)")
    return unify_canvas(frames, size)


def has_face_points(poses: Optional[Sequence[PoseFrame]]) -> bool:
    return bool(poses) and any(p.main is not None and p.main.face is not None for p in poses)


def choose_landmark_source(kind: str, poses: Optional[Sequence[PoseFrame]], model_dirs: Sequence[str] = ()) -> str:
    """'auto' -> the poses' own 68 face points when they have some, else insightface's 1k3d68
    when its file is found, else MediaPipe FaceMesh (spec PREPROCESSING.md §0.3)."""
    if kind not in LANDMARK_SOURCES:
        raise ValueError(f"unknown landmark source {kind!r}: expected one of {', '.join(LANDMARK_SOURCES)}")
    if kind == "pose_keypoint" and poses is None:
        raise ValueError("landmarks 'pose_keypoint' reads the face points of the pose_keypoint input: connect "
                         "it (e.g. from XDynaPoseExtract) or choose another landmark source")
    if kind != "auto":
        return kind
    if has_face_points(poses):
        return "pose_keypoint"
    try:
        fl.find_insightface_landmark_model(model_dirs)
        return "insightface"
    except FileNotFoundError:
        return "mediapipe"


def _open_landmark_model(source: str, model_dirs: Sequence[str]):
    if source == "insightface":
        return fl.InsightFaceLandmarks(fl.find_insightface_landmark_model(model_dirs))
    from .detectors import mediapipe_message, mediapipe_problem

    why = mediapipe_problem()
    try:
        if why is None:
            return fl.MediaPipeFaceLandmarks()
    except (ImportError, FileNotFoundError) as e:
        why = str(e).splitlines()[0]
    raise BackendUnavailable(f"face landmarks 'mediapipe': {mediapipe_message(why)}")


def face_landmarks(frames: Sequence[np.ndarray], kind: str = "auto", poses: Optional[Sequence[PoseFrame]] = None,
                   model_dirs: Sequence[str] = (), on_frame: OnFrame = None):
    """(68-point landmarks or None per frame, source name) in the pixels of ``frames``.

    ``poses`` (same frames, same pixels) give the face points ('pose_keypoint') or the head boxes
    for the image-based sources; without them a pose detector ('auto' backend) finds the boxes.
    """
    source = choose_landmark_source(kind, poses, model_dirs)
    n = len(frames)
    if poses is not None and len(poses) != n:
        raise ValueError(f"{len(poses)} poses for {n} frames")
    out: List[Optional[np.ndarray]] = []
    if source == "pose_keypoint":
        for i, p in enumerate(poses):
            out.append(fl.landmarks_from_pose(p))
            tick(on_frame, i)
        return out, source

    model = _open_landmark_model(source, model_dirs)
    detector = None
    try:
        if poses is None:
            _, detector = open_pose_detector("auto", model_dirs)
            reset_tracking(detector)
        for i in range(n):
            img = frames[i]
            pose = poses[i] if poses is not None else detector(img)
            out.append(model.from_pose(img, pose))
            tick(on_frame, i)
    finally:
        close_quietly(detector)
        close_quietly(model)
    return out, source


@dataclass
class FaceBatches:
    local: torch.Tensor  # IMAGE [N, H, W, 3] (or uint8 numpy): eye and mouth windows on black
    global_: torch.Tensor  # IMAGE [N, H, W, 3] (or uint8 numpy): the enlarged face box on black
    has_face: List[bool]  # landmarks found in that frame

    def preview(self) -> torch.Tensor:
        """Display image: the face box at half brightness with the local windows at full."""
        return torch.maximum(self.local, self.global_ * 0.5)


def face_patch_batches(frames: Sequence[np.ndarray], landmarks: Sequence[Optional[np.ndarray]],
                       carry_missing: bool = True, on_frame: OnFrame = None, batch=ImageBatchWriter) -> FaceBatches:
    """S-Face local/global patches frame by frame; the same images as
    ``face_patches.face_patch_sequence(frames, landmarks, fix_failures=carry_missing)``.

    carry_missing: a frame without landmarks reuses the last good face geometry (the first good
    one for leading misses) with its own pixels, and windows are clamped to the frame; off = the
    reference (black patches on a miss). A clip without any face gives black patches either way.
    """
    n = len(frames)
    if len(landmarks) != n:
        raise ValueError(f"{len(landmarks)} landmark entries for {n} frames")
    if n == 0:
        raise ValueError("no frames given")
    use = carry_landmarks(landmarks) if carry_missing else list(landmarks)
    H, W = frames[0].shape[:2]
    local, glob = batch(n, W, H), batch(n, W, H)
    for i in range(n):
        loc, glo, _ = face_patches(frames[i], use[i], clamp_windows=carry_missing)
        local[i], glob[i] = loc, glo
        tick(on_frame, i)
    return FaceBatches(local.data, glob.data, [lm is not None for lm in landmarks])
