"""The driving poses of a clip in the output geometry: detect, then crop2ratio-crop, stretch or align
onto the reference person, and map every pose into it; foreign POSE_KEYPOINT fitted or aligned the
same way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..working_size import SIZE_MULTIPLE, check_output_size
from .align import choose_driving_frame, fit_alignment
from .geometry import Geometry
from .image_batch import OnFrame
from .keypoint_checks import check_keypoints, count_without_person
from .keypoint_lists import keypoint_round_trip, require_person
from .keypoints import PoseFrame
from .pose_detection import detect_poses, reference_pose

FITS = ("crop", "stretch")


def _geometry(mode: str, src: Tuple[int, int], size: Tuple[int, int], alignment=None):
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
    notes = check_keypoints(poses, "the driving images")  # the one check every pose source goes through
    missing = count_without_person(poses)
    src = (poses[0].width, poses[0].height)
    if ref_pose is not None:
        geom, desc = alignment_geometry(ref_pose, poses, align_frame)
    else:
        geom = plain_geometry(src, size, fit)
        desc = describe_geometry(geom)
    keypoints, drawn = keypoint_round_trip([geom.pose(p) for p in poses])
    if missing:
        desc += f"\n{missing}/{len(poses)} frames without a person (black pose frames)"
    desc += "".join(f"\n{note}" for note in notes)
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
