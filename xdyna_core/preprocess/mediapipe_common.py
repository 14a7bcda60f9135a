"""What every MediaPipe route shares (legacy 0.10.14 solutions, the Tasks runtime): which mediapipe is
installed (package metadata only), hiding the native log lines on the command line, and BlazePose-33 to
OpenPose-18. A module of its own so the routes and the model builder import it, not each other."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Optional

import numpy as np

from .keypoints import NUM_BODY

#: OpenPose-18 index -> BlazePose-33 index (None: neck, synthesised from both shoulders).
BLAZEPOSE_TO_OPENPOSE18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
BLAZEPOSE_LEFT_SHOULDER, BLAZEPOSE_RIGHT_SHOULDER = 11, 12


def installed_mediapipe() -> Optional[str]:
    """Version of the installed mediapipe distribution, or None (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mediapipe")
    except PackageNotFoundError:
        return None


def is_legacy(v: Optional[str]) -> bool:
    return v is not None and v.startswith("0.10.") and int(v.split(".")[2].split("rc")[0] or 0) < 30


# MediaPipe 0.10.14's C++ side (absl, TFLite) writes its warnings ("Feedback manager requires a model
# with a single signature...", "Created TensorFlow Lite XNNPACK delegate") straight to file descriptor 2
# before any log set-up: GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL and absl's Python logging do not reach
# them (tried). The command line sets this flag and quiet_native_logs() points fd 2 at /dev/null while a
# graph is built or run. Off by default: inside ComfyUI, other threads' output in those milliseconds
# would be lost.
QUIET_NATIVE_LOGS = False


@contextlib.contextmanager
def quiet_native_logs():
    if not QUIET_NATIVE_LOGS:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_protobuf_deprecations():
    """Hide protobuf 6's "label() is deprecated" warnings raised while mediapipe 0.10.14 builds a
    graph (harmless; the replacement API does not exist in the protobuf 4 it was built for)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"label\(\) is deprecated", category=DeprecationWarning)
        yield


def as_rgb_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0-255), got dtype {img.dtype}")
    return np.ascontiguousarray(img)


def body_from_blazepose(landmarks, width: int, height: int, visibility_threshold: float = 0.5) -> np.ndarray:
    """BlazePose-33 landmark list (normalised x, y, visibility) -> OpenPose-18 (18, 3) pixels."""
    lm = landmarks.landmark if hasattr(landmarks, "landmark") else landmarks
    body = np.zeros((NUM_BODY, 3), dtype=np.float32)

    def point(i):
        p = lm[i]
        return p.x * width, p.y * height, float(p.visibility)

    for op, bp in enumerate(BLAZEPOSE_TO_OPENPOSE18):
        if bp is None:
            continue
        x, y, v = point(bp)
        if v > visibility_threshold:
            body[op] = (x, y, v)
    xl, yl, vl = point(BLAZEPOSE_LEFT_SHOULDER)
    xr, yr, vr = point(BLAZEPOSE_RIGHT_SHOULDER)
    if vl > visibility_threshold and vr > visibility_threshold:
        body[1] = ((xl + xr) / 2, (yl + yr) / 2, min(vl, vr))
    return body
