"""MediaPipe through the Tasks API (mediapipe 1.2.3, a py3-none wheel: CPython 3.10-3.13) running
the 0.10.14 models, rewritten into ``.task`` bundles at install time (:mod:`mediapipe_models`).

:class:`TasksPoseDetector` gives the same PoseFrame as the legacy Holistic extractor
(:class:`mediapipe_backend.MediaPipePoseDetector`): BlazePose-33 -> OpenPose-18 body, the subject's
left/right hand and a 68-point face. Legacy Holistic crops hands and face from the pose; here the
hand landmarker runs on a square crop around each pose hand (so the hand is the subject's by
construction: the Tasks handedness label, inverted relative to legacy ``mp.solutions.hands``, is
never read) and the face landmarker on a head crop (:class:`face_landmarks.MediaPipeFaceLandmarks`).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from .keypoints import Person, PoseFrame
from .mediapipe_backend import quiet_native_logs

TASKS_VERSION = "1.2.3"

#: BlazePose indices of each side's hand points: wrist, pinky, index, thumb; and the elbow.
HAND_POSE_POINTS = {"left": (15, 17, 19, 21, 13), "right": (16, 18, 20, 22, 14)}
HAND_CROP = 256  # the hand crop is resampled to this square (palm detector input is 192)
#: Palm score needed inside a hand crop: low, because the pose already says a hand is there (legacy
#: Holistic runs no palm detector at all); the hand landmarker's presence score still filters.
HAND_DETECTION_CONFIDENCE = 0.1
FRAME_MS = 33  # timestamp step of VIDEO mode (any increasing value; tracking ignores real time)


def import_tasks():
    """The mediapipe Tasks vision module, or ImportError saying what is missing."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as e:
        raise ImportError(f"the MediaPipe Tasks runtime (mediapipe {TASKS_VERSION}) cannot be imported ({e})") from None
    return mp, BaseOptions, vision


def tasks_available() -> Optional[str]:
    """None when the Tasks runtime and the bundles are here (nothing is imported or opened), else
    a few words saying which is missing."""
    from .mediapipe_backend import installed_mediapipe
    from .mediapipe_models import find_bundles, models_dir

    v = installed_mediapipe()
    if v is None:
        return "mediapipe is not installed"
    if v != TASKS_VERSION:
        return f"mediapipe {v} is installed, not the Tasks runtime {TASKS_VERSION}"
    try:
        find_bundles()
    except FileNotFoundError:
        return f"the MediaPipe models are not built in {models_dir()}"
    return None


class _Landmarkers:
    """Opens the three Tasks landmarkers lazily from the bundles; closes them."""

    def __init__(self, bundles: Optional[Dict[str, str]] = None):
        from .mediapipe_models import find_bundles

        self.mp, self.BaseOptions, self.vision = import_tasks()
        self.bundles = {k: str(v) for k, v in (bundles or find_bundles()).items()}
        self._open = {}

    def image(self, rgb: np.ndarray):
        return self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))

    def detect(self, kind: str, rgb: np.ndarray, timestamp_ms: Optional[int] = None, **options):
        """Run one landmarker (opened on first use) on an RGB uint8 image; VIDEO mode with a timestamp."""
        with quiet_native_logs():
            task = self.get(kind, video=timestamp_ms is not None, **options)
            if timestamp_ms is None:
                return task.detect(self.image(rgb))
            return task.detect_for_video(self.image(rgb), timestamp_ms)

    def get(self, kind: str, video: bool = False, **options):
        key = (kind, video)
        if key not in self._open:
            v = self.vision
            cls, opts, bundle = {
                "pose": (v.PoseLandmarker, v.PoseLandmarkerOptions, "pose_landmarker.task"),
                "hand": (v.HandLandmarker, v.HandLandmarkerOptions, "hand_landmarker.task"),
                "face": (v.FaceLandmarker, v.FaceLandmarkerOptions, "face_landmarker.task"),
            }[kind]
            mode = v.RunningMode.VIDEO if video else v.RunningMode.IMAGE
            self._open[key] = cls.create_from_options(opts(
                base_options=self.BaseOptions(model_asset_path=self.bundles[bundle]), running_mode=mode, **options))
        return self._open[key]

    def close(self, kind: Optional[str] = None, video: Optional[bool] = None) -> None:
        with quiet_native_logs():
            for key in list(self._open):
                if (kind is None or key[0] == kind) and (video is None or key[1] == video):
                    self._open.pop(key).close()


def face_mesh_engine(min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5):
    """(crop RGB uint8 -> (468, 2) mesh in crop pixels or None, close()) through the Tasks face
    landmarker; the first 468 of its 478 points are the 0.10.14 face mesh."""
    lm = _Landmarkers()
    opts = dict(num_faces=1, min_face_detection_confidence=min_detection_confidence,
                min_face_presence_confidence=min_presence_confidence)

    def mesh(crop: np.ndarray) -> Optional[np.ndarray]:
        res = lm.detect("face", crop, **opts)
        if not res.face_landmarks:
            return None
        h, w = crop.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in res.face_landmarks[0][:468]], dtype=np.float64)

    return mesh, lm.close


def hand_box(lm, width: int, height: int, side_name: str):
    """Square (x0, y0, x1, y1) around one pose hand (BlazePose normalised landmarks), or None when
    its wrist is not in view: centred between the wrist and the finger points, 8x the wrist-finger
    span or the forearm length, whichever is larger (sizes swept against legacy Holistic's hands on
    the shared examples: smaller crops lose hands the palm detector then misses)."""
    wrist, pinky, index, thumb, elbow = HAND_POSE_POINTS[side_name]
    pt = lambda i: np.array([lm[i].x * width, lm[i].y * height])
    if lm[wrist].visibility < 0.1:
        return None
    w = pt(wrist)
    fingers = np.stack([pt(pinky), pt(index), pt(thumb)])
    centre = (w + fingers.mean(axis=0)) / 2
    span = float(np.max(np.linalg.norm(fingers - w, axis=1)))
    side = max(8.0 * span, float(np.linalg.norm(pt(elbow) - w)), 32.0)
    h = side / 2
    return (centre[0] - h, centre[1] - h, centre[0] + h, centre[1] + h), w


def _crop(image: np.ndarray, box, size: int):
    import cv2

    x0, y0, x1, y1 = box
    s = size / (x1 - x0)
    M = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0), s, (x0, y0)


class TasksPoseDetector:
    """``detector(image uint8 HxWx3 RGB) -> PoseFrame`` (at most one person), the interface of
    :class:`mediapipe_backend.MediaPipePoseDetector`.

    ``static_image_mode=False`` tracks the pose from frame to frame (Tasks VIDEO mode); call
    :meth:`reset` before a new video. ``True``: each image is detected from scratch.
    """

    def __init__(self, static_image_mode: bool = False, with_hands: bool = True, with_face: bool = True,
                 visibility_threshold: float = 0.5, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, bundles=None):
        self._lm = _Landmarkers(bundles)
        self.static_image_mode = bool(static_image_mode)
        self.with_hands = bool(with_hands)
        self.with_face = bool(with_face)
        self.visibility_threshold = float(visibility_threshold)
        self._pose_opts = dict(num_poses=1, min_pose_detection_confidence=min_detection_confidence,
                               min_pose_presence_confidence=min_detection_confidence,
                               min_tracking_confidence=min_tracking_confidence)
        self._hand_opts = dict(num_hands=2, min_hand_detection_confidence=HAND_DETECTION_CONFIDENCE,
                               min_hand_presence_confidence=min_detection_confidence)
        self._face = None
        self._t = 0

    def reset(self) -> None:
        """Forget the tracked subject (start of a new video)."""
        self._lm.close("pose", video=True)
        self._t = 0

    def close(self) -> None:
        self._lm.close()
        if self._face is not None:
            self._face.close()
            self._face = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _pose(self, img: np.ndarray):
        if self.static_image_mode:
            return self._lm.detect("pose", img, **self._pose_opts)
        self._t += FRAME_MS
        return self._lm.detect("pose", img, self._t, **self._pose_opts)

    def _hand(self, img: np.ndarray, lm, side_name: str) -> Optional[np.ndarray]:
        h, w = img.shape[:2]
        found = hand_box(lm, w, h, side_name)
        if found is None:
            return None
        box, wrist = found
        crop, s, (x0, y0) = _crop(img, box, HAND_CROP)
        res = self._lm.detect("hand", crop, **self._hand_opts)
        best, best_d = None, (box[2] - box[0]) / 2  # the hand must start within half a crop of the wrist
        for hand in res.hand_landmarks:
            pts = np.array([(p.x * HAND_CROP / s + x0, p.y * HAND_CROP / s + y0) for p in hand])
            d = float(np.linalg.norm(pts[0] - wrist))
            if d < best_d:
                best, best_d = pts, d
        if best is None:
            return None
        out = np.ones((21, 3), dtype=np.float32)
        out[:, :2] = best
        return out

    def __call__(self, image: np.ndarray) -> PoseFrame:
        from .mediapipe_backend import _as_rgb_u8, body_from_blazepose

        img = _as_rgb_u8(image)
        h, w = img.shape[:2]
        res = self._pose(img)
        if not res.pose_landmarks:
            return PoseFrame(w, h, [])
        lm = res.pose_landmarks[0]
        person = Person(body_from_blazepose(lm, w, h, self.visibility_threshold))
        if self.with_hands:
            person.left_hand = self._hand(img, lm, "left")
            person.right_hand = self._hand(img, lm, "right")
        if self.with_face:
            from .face_landmarks import MediaPipeFaceLandmarks

            if self._face is None:
                self._face = MediaPipeFaceLandmarks()
            pts = self._face.from_pose(img, PoseFrame(w, h, [person]))
            if pts is not None:
                face = np.ones((68, 3), dtype=np.float32)
                face[:, :2] = pts
                person.face = face
        return PoseFrame(w, h, [person])

    def detect_sequence(self, frames) -> list:
        """Run on consecutive frames of one video (resets tracking first)."""
        self.reset()
        return [self(f) for f in frames]


__all__ = ["TasksPoseDetector", "import_tasks", "tasks_available", "face_mesh_engine", "hand_box", "TASKS_VERSION"]
