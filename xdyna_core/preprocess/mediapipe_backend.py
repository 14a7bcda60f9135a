"""Zero-download pose backend: MediaPipe, in one of two forms (:func:`open_pose_detector` picks):

* the Tasks runtime (mediapipe 1.2.3, any CPython 3.10-3.13) with bundles that install.py builds
  from the 0.10.14 wheel's models: :mod:`mediapipe_tasks` (what install.py sets up);
* legacy ``mediapipe==0.10.14`` (Python 3.10-3.12), used when it is the installed mediapipe: this
  module (it is also the reference the Tasks form is tested against).

Legacy: only ``mediapipe==0.10.14`` is supported: it is the newest release that ships the legacy
``mp.solutions`` graphs *with* their ``.tflite`` files and works with numpy 2 (spec
PREPROCESSING.md §6). Only ``model_complexity=1`` is used: complexities 0 and 2 download their
pose model on first use, which this project never does.

Output: one :class:`PoseFrame` per image with at most one person (BlazePose tracks a single
subject; X-Dyna drives one):
  body   BlazePose-33 -> OpenPose-18 (table below, spec §4.1), a point is kept when its
         visibility > ``visibility_threshold`` (0.5); the neck is the shoulder mid-point and needs
         both shoulders; confidence = visibility.
  hands  Holistic's hand landmarks (same 21-point order as OpenPose), confidence 1.
  face   Holistic's 468-point face mesh (it crops the head from the pose internally, which finds
         the ~50 px faces of full-body videos that FaceMesh on the whole frame misses), mapped to
         iBUG-68 with :data:`facemesh.FACEMESH_TO_IBUG68`, confidence 1.
With ``with_hands=False, with_face=False`` the lighter Pose graph runs instead (about 2x faster).

Install (the wheel's declared deps pull jax, opencv-contrib and sounddevice, none needed)::

    pip install mediapipe==0.10.14 --no-deps
    pip install absl-py attrs matplotlib "protobuf>=6.31.1,<7"

mediapipe 0.10.14 was built against protobuf 4.25 (``protobuf<5`` in its metadata, so pip
reports a conflict that is harmless here). :func:`import_mediapipe` adds back the one method
(``GetPrototype``) that newer protobuf removed, so it runs with protobuf 6.31-6.33 (tested 6.31.1
and 6.33.6), which onnx also accepts (onnx 1.23 needs protobuf >= 6.31.1). protobuf 5.x breaks
FaceMesh (graph text parse error) and 7.x removed ``FieldDescriptor.label``: both are refused
with an ImportError. protobuf 4.25.x works too (without onnx >= 1.23).
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Optional

import numpy as np

from .keypoints import NUM_BODY, Person, PoseFrame

#: OpenPose-18 index -> BlazePose-33 index (None: neck, synthesised from both shoulders).
BLAZEPOSE_TO_OPENPOSE18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
BLAZEPOSE_LEFT_SHOULDER, BLAZEPOSE_RIGHT_SHOULDER = 11, 12

INSTALL_HINT = (
    "pip install mediapipe==0.10.14 --no-deps && "
    'pip install absl-py attrs matplotlib "protobuf>=6.31.1,<7"'
)

#: What to do when no MediaPipe is usable: one sentence, right on every supported Python.
SETUP_HINT = ("run `python install.py` in the ComfyUI-XDyna folder (it installs the MediaPipe Tasks "
              "runtime and builds its models from the mediapipe 0.10.14 wheel; needs PyPI access once)")

_mp = None


def installed_mediapipe() -> Optional[str]:
    """Version of the installed mediapipe distribution, or None (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mediapipe")
    except PackageNotFoundError:
        return None


def is_legacy(v: Optional[str]) -> bool:
    return v is not None and v.startswith("0.10.") and int(v.split(".")[2].split("rc")[0] or 0) < 30


def unavailable_reason() -> Optional[str]:
    """None when a MediaPipe extractor can be opened here, else a few words saying why not (package
    metadata and files only: nothing is imported or opened). The fix is always :data:`SETUP_HINT`."""
    v = installed_mediapipe()
    if is_legacy(v):
        return None if v == "0.10.14" else f"mediapipe {v} is installed, which has no bundled models"
    from .mediapipe_tasks import tasks_available

    return tasks_available()


def open_pose_detector(static_image_mode: bool = False, **kwargs):
    """The MediaPipe pose detector this environment has: legacy 0.10.14 when that is installed,
    else the Tasks one; ImportError/FileNotFoundError (one sentence) when neither can be opened."""
    if is_legacy(installed_mediapipe()):
        return MediaPipePoseDetector(static_image_mode=static_image_mode, **kwargs)
    from .mediapipe_tasks import TasksPoseDetector

    return TasksPoseDetector(static_image_mode=static_image_mode, **kwargs)


def face_mesh_engine(min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5):
    """(crop RGB uint8 -> (468, 2) face mesh in crop pixels or None, close()): FaceMesh of legacy
    0.10.14 when installed, else the Tasks face landmarker."""
    if not is_legacy(installed_mediapipe()):
        from .mediapipe_tasks import face_mesh_engine as tasks_engine

        return tasks_engine(min_detection_confidence, min_presence_confidence)
    mp = import_mediapipe()
    with quiet_protobuf_deprecations(), quiet_native_logs():
        fm = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
            # In static mode this is the landmark model's face-presence threshold.
            min_tracking_confidence=min_presence_confidence,
        )

    def mesh(crop: np.ndarray) -> Optional[np.ndarray]:
        with quiet_native_logs():
            res = fm.process(crop)
        if not res.multi_face_landmarks:
            return None
        h, w = crop.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], dtype=np.float64)

    return mesh, fm.close


def import_mediapipe():
    """Import mediapipe 0.10.14 (legacy solutions) or raise an ImportError saying how to install it."""
    global _mp
    if _mp is not None:
        return _mp
    try:
        import google.protobuf
        from google.protobuf import message_factory, symbol_database
    except ImportError as e:
        raise ImportError(f"MediaPipe backend needs protobuf and mediapipe: {INSTALL_HINT}") from e
    pb_major = int(str(google.protobuf.__version__).split(".")[0])
    if pb_major not in (4, 6):
        # 5.x fails to parse FaceMesh's graph text; 7.x removed FieldDescriptor.label.
        raise ImportError(
            f"mediapipe 0.10.14 works with protobuf 4.25.x or 6.31-6.33, not {google.protobuf.__version__}. "
            f"Install: {INSTALL_HINT}"
        )
    # mediapipe 0.10.14 (its C++ bindings at import, packet_getter at run time) calls the
    # GetPrototype method that protobuf 5+ removed; GetMessageClass is its replacement.
    if hasattr(message_factory, "GetMessageClass"):
        for cls in (symbol_database.SymbolDatabase, message_factory.MessageFactory):
            if not hasattr(cls, "GetPrototype"):
                cls.GetPrototype = lambda self, descriptor: message_factory.GetMessageClass(descriptor)
    try:
        import mediapipe as mp
    except ImportError as e:
        raise ImportError(
            f"The MediaPipe pose backend needs mediapipe 0.10.14 ({e}). Install it with: {INSTALL_HINT}"
        ) from e
    version = getattr(mp, "__version__", "?")
    if not hasattr(mp, "solutions") or not hasattr(mp.solutions, "holistic"):
        raise ImportError(
            f"mediapipe {version} has no legacy solutions with bundled models "
            f"(removed in 0.10.30+). Install the supported version: {INSTALL_HINT}"
        )
    _mp = mp
    return mp


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


def _as_rgb_u8(image: np.ndarray) -> np.ndarray:
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


def _points(landmarks, width: int, height: int) -> Optional[np.ndarray]:
    if landmarks is None:
        return None
    pts = np.array([(p.x * width, p.y * height, 1.0) for p in landmarks.landmark], dtype=np.float32)
    return pts


class MediaPipePoseDetector:
    """``detector(image uint8 HxWx3 RGB) -> PoseFrame``.

    ``static_image_mode=False`` (default) tracks the subject from frame to frame, which is right
    for consecutive video frames; call :meth:`reset` before a new video. Use ``True`` for
    unrelated images or sparsely sampled frames (every 5th frame etc.): each image is then
    detected from scratch (about 1.5x slower).
    """

    MODEL_COMPLEXITY = 1  # the only bundled pose model; 0 and 2 would be downloaded

    def __init__(
        self,
        static_image_mode: bool = False,
        with_hands: bool = True,
        with_face: bool = True,
        visibility_threshold: float = 0.5,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ):
        self.mp = import_mediapipe()
        self.static_image_mode = bool(static_image_mode)
        self.with_hands = bool(with_hands)
        self.with_face = bool(with_face)
        self.visibility_threshold = float(visibility_threshold)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self._graph = None

    @property
    def uses_holistic(self) -> bool:
        return self.with_hands or self.with_face

    def _make_graph(self):
        kw = dict(
            static_image_mode=self.static_image_mode,
            model_complexity=self.MODEL_COMPLEXITY,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )
        with quiet_protobuf_deprecations(), quiet_native_logs():
            if self.uses_holistic:
                return self.mp.solutions.holistic.Holistic(refine_face_landmarks=False, **kw)
            return self.mp.solutions.pose.Pose(**kw)

    def reset(self) -> None:
        """Forget the tracked subject (start of a new video)."""
        self.close()

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, image: np.ndarray) -> PoseFrame:
        img = _as_rgb_u8(image)
        h, w = img.shape[:2]
        if self._graph is None:
            self._graph = self._make_graph()
        with quiet_native_logs():
            res = self._graph.process(img)
        if res.pose_landmarks is None:
            return PoseFrame(w, h, [])
        body = body_from_blazepose(res.pose_landmarks, w, h, self.visibility_threshold)
        person = Person(body)
        if self.uses_holistic:
            if self.with_hands:
                person.left_hand = _points(res.left_hand_landmarks, w, h)
                person.right_hand = _points(res.right_hand_landmarks, w, h)
            if self.with_face and res.face_landmarks is not None:
                from .facemesh import facemesh_to_ibug68

                mesh = np.array([(p.x * w, p.y * h) for p in res.face_landmarks.landmark], dtype=np.float32)
                face = np.ones((68, 3), dtype=np.float32)
                face[:, :2] = facemesh_to_ibug68(mesh)
                person.face = face
        return PoseFrame(w, h, [person])

    def detect_sequence(self, frames) -> list:
        """Run on consecutive frames of one video (resets tracking first)."""
        self.reset()
        return [self(f) for f in frames]


__all__ = ["MediaPipePoseDetector", "import_mediapipe", "open_pose_detector", "face_mesh_engine",
           "unavailable_reason", "installed_mediapipe", "SETUP_HINT", "body_from_blazepose", "BLAZEPOSE_TO_OPENPOSE18", "INSTALL_HINT"]
