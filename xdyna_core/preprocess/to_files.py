"""Preprocessing to files, the work of `xdyna preprocess pose|face|render ...` (cli/preprocess.py).

  pose VIDEO --out DIR    rendered X-Dyna pose video <name>_pose.mp4 + <name>_keypoints.json
                          (POSE_KEYPOINT JSON, in the pixels of the rendered video)
  face VIDEO --out DIR    S-Face patch videos <name>_face_local.mp4 and <name>_face_global.mp4
  render JSON --out DIR   re-render (edited / foreign) POSE_KEYPOINT JSON to <name>_pose.mp4

Geometry, the same for pose and face so that their outputs line up frame for frame:
  * no --size, no alignment: the video's own size;
  * --size WxH: --fit crop (default) crops each frame to the W:H aspect the way X-Dyna's S-Face
    path does (crop2ratio: centred horizontally, top-biased vertically) and resizes;
    --fit stretch resizes without cropping (X-Dyna's plain pose path);
  * --align-reference IMG: the driving pose is fitted onto the reference picture's pose
    (align.fit_alignment on driving frame --align-frame, default: the first frame showing
    neck, shoulders and hips) and every frame is mapped into the reference picture, which is
    first centre-cropped/resized to --size if given (as the sampler prepares it).
A thin front over the functions the ComfyUI preprocessing nodes call, so the
same video and options give the same keypoints, pose frames and face patches here and in a graph.
With --size, frames are shrunk while they stream to the smallest size that covers the output, and
detection runs on those; points are mapped into the output afterwards. Frames are taken every
--stride frames from --start, at most --frame-count; outputs play at fps / stride. Face landmarks
come from the output-geometry frames ('auto': DWPose's own face points when the poses have them,
else insightface's 1k3d68 when found, else MediaPipe FaceMesh).

Documented results: a frame without a person renders black and has "people": [] in the JSON;
a frame without a face gets the last good face geometry (pixels of the current frame), or black
patches with --no-carry (the reference) or when the clip has no face at all; a still image is a
one-frame video. User errors (unreadable video, missing model files, bad JSON) print one
"error:" message on stderr and exit with status 2 (--debug shows the traceback).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import XDynaError
from ..progress import Progress
from .driving_pose import extract_driving_pose
from .image_batch import Uint8Batch, map_frames, render_batch
from .keypoint_checks import check_keypoints
from .keypoints import KeypointFormatError, load_keypoints, save_keypoints
from .pose_detection import close_quietly, open_pose_detector
from .sface_inputs import face_landmarks, face_patch_batches
from .span import DrivingClip, plan_clip
from .video import VideoReadError, VideoWriteError, VideoWriter, read_video



class CliError(XDynaError):
    """A user-facing problem: printed as one error message, exit status 2."""


def _clip(args) -> DrivingClip:
    """The input video's plan (span.plan_clip, as animate and the driving node make it); what the reader
    repaired (broken timestamps) is printed as a note."""
    clip = plan_clip(args.video, args.start, args.frame_count, args.stride)
    for note in clip.notes:
        print(f"note: {note}", file=sys.stderr)
    return clip


def _read_frames(clip: DrivingClip, size: Optional[Tuple[int, int]]) -> List[np.ndarray]:
    """The planned frames, shrunk while they stream to what covers the output size."""
    frames = list(clip.frames(cover=size))
    if not frames:
        s = clip.span
        raise CliError(f"no frames read from {clip.source} (start={s.start}, stride={s.stride}, "
                       f"the video has {clip.info.frame_count} frames)")
    return frames


def _reference(args) -> Optional[np.ndarray]:
    if args.align_reference is None:
        return None
    return read_video(args.align_reference, frame_count=1)[0][0]


def _output_size(args, frames, reference) -> Tuple[Tuple[int, int], int]:
    """(output size, size multiple to check): --size, else the reference's size when aligning, else
    the video's own size (any size: these videos need not go to the sampler)."""
    if args.size is not None:
        return tuple(args.size), 1
    if reference is not None:
        return (reference.shape[1], reference.shape[0]), 1
    return (frames[0].shape[1], frames[0].shape[0]), 1


def extract(args, clip: DrivingClip, detector, quiet: bool):
    """(DrivingPose, frames in the output geometry (uint8), output size) - the nodes' core path."""
    frames = _read_frames(clip, tuple(args.size) if args.size else None)
    reference = _reference(args)
    if reference is not None and args.align_frame is not None and not 0 <= args.align_frame < len(frames):
        raise CliError(f"--align-frame {args.align_frame} is outside the {len(frames)} extracted frames")
    size, multiple = _output_size(args, frames, reference)
    bar = Progress(len(frames), "detect", enabled=not quiet)
    try:
        dp = extract_driving_pose(frames, detector, size, args.fit, reference, on_frame=lambda i: bar.update(),
                                      align_frame=args.align_frame, multiple=multiple)
    finally:
        bar.close()
    if reference is not None:
        print(("warning: " if dp.is_fallback else "") + dp.description.splitlines()[0], file=sys.stderr)
    return dp, frames, size


def _out_name(args, suffix: str) -> Path:
    stem = args.name or Path(args.video).stem
    return Path(args.out) / f"{stem}{suffix}"


def write_frames(frames: Sequence[np.ndarray], path: Path, fps: float, crf: int, quiet: bool, what: str) -> int:
    bar = Progress(len(frames), what, enabled=not quiet)
    with VideoWriter(path, fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
            bar.update()
    bar.close()
    return writer.count


def run_pose(args) -> dict:
    if args.max_people == 0:
        args.max_people = None   # 0 = all
    clip = _clip(args)  # the input first: its error is the one that matters
    name, detector = open_pose_detector(args.backend, args.models, args.max_people)
    try:
        dp, _, size = extract(args, clip, detector, args.quiet)
    finally:
        close_quietly(detector)
    fps = clip.fps
    video_path, json_path = _out_name(args, "_pose.mp4"), _out_name(args, "_keypoints.json")
    save_keypoints(json_path, dp.poses)
    n = write_frames(render_batch(dp.poses, size, batch=Uint8Batch), video_path, fps, args.crf,
                     args.quiet, "render")
    print(f"pose: {n} frames at {fps:g} fps, {size[0]}x{size[1]}, backend {name}, "
          f"{dp.without_person} without a person")
    print(f"wrote {video_path}\nwrote {json_path}")
    return {"video": video_path, "keypoints": json_path, "frames": n, "no_person": dp.without_person,
            "backend": name}


def run_face(args) -> dict:
    clip = _clip(args)
    kind = {"dwpose": "pose_keypoint"}.get(args.landmarks, args.landmarks)
    if kind == "pose_keypoint" and args.backend == "auto":
        args.backend = "dwpose"
    if kind == "pose_keypoint" and args.backend != "dwpose":
        raise CliError("--landmarks dwpose uses DWPose's own face points: it needs --backend dwpose")
    name, detector = open_pose_detector(args.backend, args.models, 1)
    try:
        dp, frames, size = extract(args, clip, detector, args.quiet)
    finally:
        close_quietly(detector)
    driving = map_frames(frames, dp.geometry.image, size, batch=Uint8Batch)
    del frames
    bar = Progress(len(driving), "landmarks", enabled=not args.quiet)
    landmarks, lm_name = face_landmarks(driving, kind, dp.poses, list(args.models) + list(args.insightface_dir),
                                            on_frame=lambda i: bar.update())
    bar.close()
    faces = face_patch_batches(driving, landmarks, carry_missing=not args.no_carry, batch=Uint8Batch)
    found = sum(faces.has_face)
    fps = clip.fps
    local_path, global_path = _out_name(args, "_face_local.mp4"), _out_name(args, "_face_global.mp4")
    n = write_frames(faces.local, local_path, fps, args.crf, args.quiet, "patches")
    write_frames(faces.global_, global_path, fps, args.crf, True, "patches")
    print(f"face: {n} frames at {fps:g} fps, {size[0]}x{size[1]}, backend {name}, "
          f"landmarks {lm_name}, face found in {found}/{n} frames")
    if found == 0:
        print("warning: no face in any frame: the patches are black; switch the S-Face ControlNet off "
              "for this clip", file=sys.stderr)
    print(f"wrote {local_path}\nwrote {global_path}")
    return {"local": local_path, "global": global_path, "frames": n, "faces": found}


def run_render(args) -> dict:
    poses = load_keypoints(args.keypoints)
    if not poses:
        raise CliError(f"{args.keypoints} holds no frames")
    for note in check_keypoints(poses, str(args.keypoints)):
        print(f"note: {note}", file=sys.stderr)
    size = tuple(args.size) if args.size else (poses[0].width, poses[0].height)
    stem = args.name or Path(args.keypoints).stem.removesuffix("_keypoints")
    path = Path(args.out) / f"{stem}_pose.mp4"
    n = write_frames(render_batch(poses, size, batch=Uint8Batch), path, args.fps, args.crf, args.quiet,
                     "render")
    print(f"render: {n} frames at {args.fps:g} fps, {size[0]}x{size[1]}\nwrote {path}")
    return {"video": path, "frames": n}


# --------------------------------------------------------------------------- argument parsing
