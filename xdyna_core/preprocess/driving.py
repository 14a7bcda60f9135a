"""Driving-clip preprocessing on in-memory frame batches: the core behind the ComfyUI nodes.

The one implementation of these steps: the ComfyUI nodes, the preprocessing CLI (:mod:`.cli`) and the
animate job all call it, on decoded frames (a ComfyUI IMAGE batch: float32 [B, H, W, 3] in 0..1, or
uint8 frames), one frame at a time:

* :func:`extract_driving_pose` - detect the pose of every frame, choose the output geometry
  (crop2ratio crop, stretch, or alignment onto a reference person) and map the poses into it;
* :func:`keypoint_round_trip` - the POSE_KEYPOINT list of the output and the poses exactly as that
  list reads back, so that rendering the list elsewhere gives identical pose images;
* :func:`fit_keypoints` / :func:`align_keypoints` - foreign POSE_KEYPOINT to the output size,
  or onto a reference person;
* :func:`face_landmarks` + :func:`face_patch_batches` - the S-Face inputs of a clip.

Conventions: frames are uint8 (H, W, 3) RGB numpy arrays (:class:`ImageBatchFrames` makes them
from a float batch on demand); sizes are (width, height); ``on_frame(i)`` is called after frame
``i`` of a loop (progress bars, cancellation). Problems the user can fix raise ValueError (or a
subclass) with a message that says what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import XDynaError
from ..pixels import to_uint8
from ..working_size import SIZE_MULTIPLE, SIZE_RULE, check_output_size, check_same_size  # noqa: F401 (nodes import them here)
from .keypoints import Person, PoseFrame, from_pose_keypoint_json, to_pose_keypoint_json

FITS = ("crop", "stretch")
POSE_BACKENDS = ("auto", "dwpose", "mediapipe")
LANDMARK_SOURCES = ("auto", "pose_keypoint", "mediapipe", "insightface")
DWPOSE_FILES = ("yolox_l.onnx (or yolox_l.torchscript.pt) and dw-ll_ucoco_384.onnx (or "
                "dw-ll_ucoco_384_bs5.torchscript.pt)")

OnFrame = Optional[Callable[[int], None]]


class BackendUnavailable(XDynaError, ValueError):
    """No usable detector for the requested backend; the message says how to install one."""


def _tick(on_frame: OnFrame, i: int) -> None:
    if on_frame is not None:
        on_frame(i)


def close_quietly(obj) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        close()  # MediaPipe graphs hold native threads


# --------------------------------------------------------------------------- frame batches


class ImageBatchFrames(Sequence):
    """uint8 (H, W, 3) frames of an image batch, converted one at a time on access.

    Accepts a torch tensor or numpy array [B, H, W, C] (or one [H, W, C] image) with C = 3, 4
    (alpha dropped) or 1 (grey); float values are 0..1 (:func:`~xdyna_core.pixels.to_uint8`), uint8 is
    taken as is.
    """

    def __init__(self, images, what: str = "images"):
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{what}: expected an IMAGE batch (tensor [B, H, W, 3]), got {type(images).__name__}")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{what}: expected an IMAGE batch of shape [B, H, W, 3], got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError(f"{what}: the batch holds no frames")
        if images.shape[1] < 1 or images.shape[2] < 1:
            raise ValueError(f"{what}: empty frames of shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"{what}: expected float values in 0..1 (or uint8), got {images.dtype}")
        self.images = images
        self.what = what

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height)."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        x = self.images[i].detach().cpu()
        if x.dtype != torch.uint8:
            if not torch.isfinite(x).all():
                raise ValueError(f"{self.what}: frame {i} contains NaN or infinite values")
            x = to_uint8(x)
        if x.shape[-1] == 1:
            x = x.expand(-1, -1, 3)
        return np.ascontiguousarray(x[..., :3].numpy())

    def as_image_batch(self) -> Optional[torch.Tensor]:
        """The input itself when it already is a plain IMAGE batch (float32 [B, H, W, 3] on the CPU),
        so an unchanged output need not be copied; else None."""
        t = self.images
        if t.dtype == torch.float32 and t.shape[-1] == 3 and t.device.type == "cpu":
            return t
        return None


class ImageBatchWriter:
    """Preallocated float32 [n, height, width, 3] batch filled with uint8 frames one at a time."""

    def __init__(self, n: int, width: int, height: int):
        self.tensor = torch.empty((int(n), int(height), int(width), 3), dtype=torch.float32)

    def __setitem__(self, i: int, frame: np.ndarray) -> None:
        f = np.asarray(frame)
        if f.shape != tuple(self.tensor.shape[1:]) or f.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected uint8 {tuple(self.tensor.shape[1:])}, got {f.dtype} {f.shape}")
        out = self.tensor[i]
        out.copy_(torch.from_numpy(np.ascontiguousarray(f)))
        out.div_(255.0)

    @property
    def data(self) -> torch.Tensor:
        return self.tensor


class Uint8Batch:
    """Preallocated uint8 [n, height, width, 3] numpy batch (the command line's frames: a quarter of
    an IMAGE batch's memory); the same interface as :class:`ImageBatchWriter`."""

    def __init__(self, n: int, width: int, height: int):
        self.data = np.empty((int(n), int(height), int(width), 3), dtype=np.uint8)

    def __setitem__(self, i: int, frame: np.ndarray) -> None:
        f = np.asarray(frame)
        if f.shape != self.data.shape[1:] or f.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected uint8 {self.data.shape[1:]}, got {f.dtype} {f.shape}")
        self.data[i] = f


def map_frames(frames: Sequence[np.ndarray], fn: Callable[[np.ndarray], np.ndarray], size: Tuple[int, int],
               on_frame: OnFrame = None, batch=ImageBatchWriter):
    """Batch of ``fn(frame)`` (each a uint8 frame of ``size``): an IMAGE tensor, or uint8 numpy with
    ``batch=Uint8Batch``."""
    out = batch(len(frames), *size)
    for i in range(len(frames)):
        out[i] = fn(frames[i])
        _tick(on_frame, i)
    return out.data


def render_batch(poses: Sequence[PoseFrame], size: Tuple[int, int], on_frame: OnFrame = None,
                 batch=ImageBatchWriter):
    """Batch of X-Dyna skeleton renders (a frame without a person is black); see :func:`map_frames`."""
    from .render import render_pose

    W, H = size
    out = batch(len(poses), W, H)
    for i, p in enumerate(poses):
        out[i] = render_pose(p, W, H)
        _tick(on_frame, i)
    return out.data


# --------------------------------------------------------------------------- detectors


def _backend_help(backend: str, model_dirs: Sequence[str]) -> str:
    from .mediapipe_backend import INSTALL_HINT

    where = "\n".join(f"    {d}" for d in model_dirs) or "    (no folder configured)"
    lines = []
    if backend in ("auto", "dwpose"):
        lines.append(f"  DWPose: put {DWPOSE_FILES} into one of these folders (nothing is downloaded):\n{where}")
    if backend in ("auto", "mediapipe"):
        lines.append(f"  MediaPipe: install it into ComfyUI's Python: {INSTALL_HINT}")
    return "\n".join(lines)


def open_pose_detector(backend: str, model_dirs: Sequence[str] = (), max_people: Optional[int] = 1):
    """(backend name, detector image -> PoseFrame). 'auto' = DWPose when its ONNX files are found,
    else MediaPipe. Raises :class:`BackendUnavailable` saying how to get the backend."""
    if backend not in POSE_BACKENDS:
        raise ValueError(f"unknown pose backend {backend!r}: expected one of {', '.join(POSE_BACKENDS)}")
    from .detectors import DetectorUnavailable, make_pose_detector

    try:
        return make_pose_detector(backend, list(model_dirs), max_people, static_images=False)
    except (DetectorUnavailable, ImportError, FileNotFoundError) as e:
        raise BackendUnavailable(
            f"pose backend '{backend}' is not available: {str(e).splitlines()[0]}\n"
            f"{_backend_help(backend, model_dirs)}\nDetails: {e}"
        ) from None


def _reset(detector) -> None:
    if hasattr(detector, "reset"):
        detector.reset()  # a tracking backend must not carry one clip's subject into another


def detect_poses(frames: Sequence[np.ndarray], detector, on_frame: OnFrame = None) -> List[PoseFrame]:
    """Pose of every frame (consecutive frames of one clip; tracking is reset first)."""
    _reset(detector)
    poses = []
    for i in range(len(frames)):
        poses.append(detector(frames[i]))
        _tick(on_frame, i)
    return poses


def reference_pose(detector, image: np.ndarray, size: Tuple[int, int]) -> PoseFrame:
    """Pose of the reference picture as the sampler sees it (centre-cropped and resized to
    ``size``); ValueError when it shows no person."""
    from ..reference import prepare_reference_image

    W, H = size
    prepared = prepare_reference_image(image, H, W)
    _reset(detector)
    pose = detector(prepared)
    _reset(detector)
    if pose.main is None:
        raise ValueError("no person found in the reference image: alignment needs a photo of a person "
                         "with the body visible")
    return pose


# --------------------------------------------------------------------------- keypoints


def drawable(frame: PoseFrame, threshold: Optional[float] = None) -> PoseFrame:
    """Copy of ``frame`` keeping only the points the renderer draws (confidence above the
    threshold); the others become missing (0, 0, 0). POSE_KEYPOINT stores binary confidences, so
    this is what makes a written list render exactly like the poses it came from."""
    from .render import CONF_THRESHOLD

    thr = np.float32(CONF_THRESHOLD if threshold is None else threshold)

    def clean(a):
        if a is None:
            return None
        a = np.array(a, dtype=np.float32, copy=True)
        bad = ~((a[:, 2] > thr) & np.isfinite(a[:, :2]).all(axis=1))
        a[bad] = 0.0
        return a

    people = [Person(clean(p.body), clean(p.left_hand), clean(p.right_hand), clean(p.face)) for p in frame.people]
    return PoseFrame(frame.width, frame.height, people)


def keypoint_round_trip(poses: Sequence[PoseFrame]) -> Tuple[List[dict], List[PoseFrame]]:
    """(POSE_KEYPOINT list, the poses as that list reads back). Render the second to get exactly
    the images any consumer of the list renders."""
    data = to_pose_keypoint_json([drawable(p) for p in poses])
    return data, from_pose_keypoint_json(data, normalized=False)


def parse_keypoints(pose_keypoint, what: str = "pose_keypoint") -> List[PoseFrame]:
    """POSE_KEYPOINT (list of frame dicts, one dict or a JSON string) -> PoseFrames, at least one."""
    if pose_keypoint is None:
        raise ValueError(f"{what}: no POSE_KEYPOINT given")
    frames = from_pose_keypoint_json(pose_keypoint)
    if not frames:
        raise ValueError(f"{what}: the POSE_KEYPOINT list holds no frames")
    return frames


def count_without_person(poses: Sequence[PoseFrame]) -> int:
    return sum(1 for p in poses if not p.people)


def require_person(poses: Sequence[PoseFrame], what: str) -> int:
    """Number of frames without a person; ValueError when no frame has one."""
    missing = count_without_person(poses)
    if missing == len(poses):
        raise ValueError(f"no person found in any of the {len(poses)} frames of {what}: X-Dyna needs a "
                         f"driving clip that shows a person")
    return missing


def _geometry(mode: str, src: Tuple[int, int], size: Tuple[int, int], alignment=None):
    from .geometry import Geometry

    return Geometry(mode, tuple(src), tuple(size), alignment)


def plain_geometry(src: Tuple[int, int], size: Tuple[int, int], fit: str):
    """Geometry from (width, height) ``src`` to ``size``: 'crop' (X-Dyna's crop2ratio, centred
    horizontally, top-biased vertically, then resize) or 'stretch'; identity at the same size."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}: expected one of {', '.join(FITS)}")
    if tuple(src) == tuple(size):
        return _geometry("none", src, size)
    return _geometry(fit, src, size)


def describe_geometry(geom) -> str:
    (w, h), (W, H) = geom.src_size, geom.size
    if geom.mode == "none":
        return f"no alignment: frames kept at {W}x{H}"
    what = "crop2ratio crop (top-biased) and resize" if geom.mode == "crop" else "stretch"
    return f"no alignment: {what} {w}x{h} -> {W}x{H}"


def unify_canvas(frames: Sequence[PoseFrame], size: Tuple[int, int]) -> List[PoseFrame]:
    """Stretch frames whose canvas differs from ``size`` onto it (POSE_KEYPOINT from editors may
    mix canvas sizes)."""
    return [f if (f.width, f.height) == tuple(size) else _geometry("stretch", (f.width, f.height), size).pose(f)
            for f in frames]


def alignment_geometry(ref_pose: PoseFrame, poses: Sequence[PoseFrame], align_frame: Optional[int] = None):
    """(Geometry, description) fitting driving frame ``align_frame`` (None or < 0: the first frame
    showing neck, shoulders and hips) onto the reference pose; the output canvas is the
    reference's. A fit without common body segments falls back to crop2ratio and says WARNING."""
    from .align import choose_driving_frame, fit_alignment

    n = len(poses)
    k = choose_driving_frame(poses) if align_frame is None or align_frame < 0 else int(align_frame)
    if not 0 <= k < n:
        raise ValueError(f"align_frame {k} is outside the {n} driving frames (0..{n - 1}; -1 chooses automatically)")
    alignment = fit_alignment(ref_pose, poses[k])
    src = (poses[k].width, poses[k].height)
    geom = _geometry("align", src, (ref_pose.width, ref_pose.height), alignment)
    return geom, f"alignment on driving frame {k}: {alignment.description}"


@dataclass
class DrivingPose:
    """Result of :func:`extract_driving_pose`: poses in the output geometry as the POSE_KEYPOINT
    list reads back (what :func:`render_batch` should draw), the list itself, the geometry for the
    driving frames, and a human-readable description."""

    poses: List[PoseFrame]
    keypoints: List[dict]
    geometry: object
    description: str
    without_person: int

    @property
    def is_fallback(self) -> bool:
        a = getattr(self.geometry, "alignment", None)
        return bool(a is not None and a.is_fallback)


def extract_driving_pose(frames: Sequence[np.ndarray], detector, size: Tuple[int, int], fit: str = "crop",
                         reference: Optional[np.ndarray] = None, on_frame: OnFrame = None,
                         align_frame: Optional[int] = None, multiple: int = SIZE_MULTIPLE) -> DrivingPose:
    """Detect, fit and map the driving poses of a clip.

    ``reference`` (uint8 image) switches on alignment: the driving skeleton is fitted onto the
    person of the reference picture prepared as the sampler prepares it. It is checked before the
    clip is processed; ``align_frame`` picks the driving frame the fit uses (None: the first frame
    showing neck, shoulders and hips). Frames without a person keep ``"people": []`` (black pose
    frames); a clip with no person at all raises ValueError. ``multiple=1`` allows any output size
    (pose videos that do not go to the sampler).
    """
    size = check_output_size(*size, multiple=multiple)
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}: expected one of {', '.join(FITS)}")
    if len(frames) == 0:
        raise ValueError("no driving frames given")
    ref_pose = reference_pose(detector, reference, size) if reference is not None else None
    poses = detect_poses(frames, detector, on_frame)
    missing = require_person(poses, "the driving images")
    src = (poses[0].width, poses[0].height)
    if ref_pose is not None:
        geom, desc = alignment_geometry(ref_pose, poses, align_frame)
    else:
        geom = plain_geometry(src, size, fit)
        desc = describe_geometry(geom)
    keypoints, drawn = keypoint_round_trip([geom.pose(p) for p in poses])
    if missing:
        desc += f"\n{missing}/{len(poses)} frames without a person (black pose frames)"
    return DrivingPose(drawn, keypoints, geom, desc, missing)


def fit_keypoints(frames: Sequence[PoseFrame], size: Tuple[int, int], fit: str = "stretch") -> List[PoseFrame]:
    """Map each frame from its own canvas to ``size`` ('stretch' or 'crop' as crop2ratio)."""
    size = check_output_size(*size)
    return [plain_geometry((f.width, f.height), size, fit).pose(f) for f in frames]


def align_keypoints(frames: Sequence[PoseFrame], ref_pose: PoseFrame, align_frame: Optional[int] = None):
    """(aligned frames on the reference canvas, Alignment, description). Frames whose canvas
    differs from the fitted frame's are stretched onto it first."""
    require_person(frames, "pose_keypoint")
    n = len(frames)
    k = None if align_frame is None or align_frame < 0 else int(align_frame)
    if k is not None and not 0 <= k < n:
        raise ValueError(f"align_frame {k} is outside the {n} pose frames (0..{n - 1}; -1 chooses automatically)")
    base = frames[0] if k is None else frames[k]
    frames = unify_canvas(frames, (base.width, base.height))
    geom, desc = alignment_geometry(ref_pose, frames, k)
    return [geom.pose(f) for f in frames], geom.alignment, desc


# --------------------------------------------------------------------------- S-Face


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
    from .face_landmarks import find_insightface_landmark_model

    try:
        find_insightface_landmark_model(model_dirs)
        return "insightface"
    except FileNotFoundError:
        return "mediapipe"


def _open_landmark_model(source: str, model_dirs: Sequence[str]):
    from . import face_landmarks as fl

    if source == "insightface":
        return fl.InsightFaceLandmarks(fl.find_insightface_landmark_model(model_dirs))
    try:
        return fl.MediaPipeFaceLandmarks()
    except ImportError as e:
        from .mediapipe_backend import INSTALL_HINT

        raise BackendUnavailable(f"face landmarks 'mediapipe' need mediapipe 0.10.14: {INSTALL_HINT}\n"
                                 f"Details: {e}") from None


def face_landmarks(frames: Sequence[np.ndarray], kind: str = "auto", poses: Optional[Sequence[PoseFrame]] = None,
                   model_dirs: Sequence[str] = (), on_frame: OnFrame = None):
    """(68-point landmarks or None per frame, source name) in the pixels of ``frames``.

    ``poses`` (same frames, same pixels) give the face points ('pose_keypoint') or the head boxes
    for the image-based sources; without them a pose detector ('auto' backend) finds the boxes.
    """
    from .face_landmarks import landmarks_from_pose

    source = choose_landmark_source(kind, poses, model_dirs)
    n = len(frames)
    if poses is not None and len(poses) != n:
        raise ValueError(f"{len(poses)} poses for {n} frames")
    out: List[Optional[np.ndarray]] = []
    if source == "pose_keypoint":
        for i, p in enumerate(poses):
            out.append(landmarks_from_pose(p))
            _tick(on_frame, i)
        return out, source

    model = _open_landmark_model(source, model_dirs)
    detector = None
    try:
        if poses is None:
            _, detector = open_pose_detector("auto", model_dirs)
            _reset(detector)
        for i in range(n):
            img = frames[i]
            pose = poses[i] if poses is not None else detector(img)
            out.append(model.from_pose(img, pose))
            _tick(on_frame, i)
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
    from .face_patches import carry_landmarks
    from .face_patches import face_patches

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
        _tick(on_frame, i)
    return FaceBatches(local.data, glob.data, [lm is not None for lm in landmarks])


__all__ = [
    "SIZE_MULTIPLE", "SIZE_RULE", "check_same_size", "FITS", "POSE_BACKENDS", "LANDMARK_SOURCES", "BackendUnavailable", "check_output_size",
    "ImageBatchFrames", "ImageBatchWriter", "Uint8Batch", "map_frames", "render_batch", "open_pose_detector", "detect_poses",
    "reference_pose", "drawable", "keypoint_round_trip", "parse_keypoints", "require_person", "plain_geometry",
    "alignment_geometry", "DrivingPose", "extract_driving_pose", "fit_keypoints", "align_keypoints",
    "poses_for_frames", "choose_landmark_source", "face_landmarks", "FaceBatches", "face_patch_batches",
    "close_quietly",
]
