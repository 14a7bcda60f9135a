"""The names the ComfyUI nodes import as ``preprocess.driving`` (``drv.*``); each lives in the module
of its concept:

* :mod:`.image_batch` - IMAGE batches one frame at a time, the per-frame callback;
* :mod:`.pose_detection` - detectors by backend name, the reference picture's pose;
* :mod:`.keypoint_lists` - POSE_KEYPOINT lists: parsed, checked, written to render identically;
* :mod:`.driving_pose` - the driving poses in the output geometry (crop, stretch, alignment);
* :mod:`.sface_inputs` - face landmarks and S-Face patch batches;
* :mod:`xdyna_core.working_size` - the working size rule.

Core code imports from those modules; this one only keeps the nodes' imports working.
"""
from __future__ import annotations

from ..working_size import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, SIZE_RULE, check_output_size, check_same_size
from .driving_pose import FITS, align_keypoints, extract_driving_pose, fit_keypoints, plain_geometry
from .image_batch import ImageBatchFrames, Uint8Batch, map_frames, render_batch
from .keypoint_checks import check_keypoints
from .keypoint_lists import keypoint_notes, keypoint_round_trip, parse_keypoints, require_person
from .pose_detection import POSE_BACKENDS, close_quietly, open_pose_detector, reference_pose
from .sface_inputs import LANDMARK_SOURCES, FaceBatches, face_landmarks, face_patch_batches, poses_for_frames

__all__ = [
    "MAX_SIDE", "MIN_SIDE", "SIZE_MULTIPLE", "SIZE_RULE", "check_output_size", "check_same_size",
    "FITS", "align_keypoints", "extract_driving_pose",
    "fit_keypoints", "plain_geometry", "ImageBatchFrames", "Uint8Batch", "map_frames", "render_batch",
    "keypoint_round_trip", "parse_keypoints", "keypoint_notes", "check_keypoints", "require_person", "POSE_BACKENDS", "close_quietly",
    "open_pose_detector", "reference_pose", "LANDMARK_SOURCES", "FaceBatches", "face_landmarks",
    "face_patch_batches", "poses_for_frames",
]
