"""`xdyna preprocess pose|face|render ...`: the driving video's pose video + POSE_KEYPOINT JSON, S-Face patch
videos, or a pose video rendered from JSON (the work is preprocess/to_files.py; what each step writes is
described there)."""
from __future__ import annotations

from ..arg_types import any_size, non_negative_int, positive_float, positive_int

DEFAULT_RENDER_FPS = 8.0  # X-Dyna's pose videos; JSON carries no frame rate


def _step(name: str):
    def run(args):
        from ..preprocess import to_files

        return getattr(to_files, name)(args)
    return run


def register(commands) -> None:
    from . import common_options

    parser = commands.add_parser("preprocess", help="pose / face extraction and pose rendering of driving videos",
                                 description="X-Dyna driving-video preprocessing.")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    def common(p, video=True):
        if video:
            p.add_argument("video", help="driving video (or a still image)")
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--name", help="output file prefix (default: the input file's stem)")
        p.add_argument("--size", type=any_size, help="output size WxH, e.g. 512x896")
        p.add_argument("--crf", type=int, default=18, help="x264 quality of the output videos (default 18)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if not video:
            return
        p.add_argument("--backend", choices=("dwpose", "mediapipe", "auto"), default="auto",
                       help="pose detector (auto: DWPose if its ONNX files are found, else MediaPipe)")
        p.add_argument("--models", action="append", default=[], metavar="DIR",
                       help="folder with yolox_l.onnx / dw-ll_ucoco_384.onnx (repeatable; searched first)")
        p.add_argument("--stride", type=positive_int, default=1, help="take every N-th frame (default 1)")
        p.add_argument("--start", type=non_negative_int, default=0, help="first frame index (default 0)")
        p.add_argument("--frame-count", "--max-frames", dest="frame_count", type=positive_int,
                       help="at most this many frames (after --stride)")
        p.add_argument("--fit", choices=("crop", "stretch"), default="crop",
                       help="with --size: crop to the aspect first (X-Dyna crop2ratio, default) or stretch")
        p.add_argument("--align-reference", metavar="IMG",
                       help="map the driving pose onto the person in this reference image")
        p.add_argument("--align-frame", type=non_negative_int, metavar="K",
                       help="extracted frame to fit the alignment on (default: first full-torso frame)")

    p = sub.add_parser("pose", parents=[common_options()], help="render the X-Dyna pose video and save POSE_KEYPOINT JSON")
    common(p)
    p.add_argument("--max-people", type=non_negative_int, default=1,
                   help="people per frame for DWPose, best first (0 = all; default 1, X-Dyna drives one)")
    p.set_defaults(func=_step("run_pose"))

    p = sub.add_parser("face", parents=[common_options()], help="S-Face local/global patch videos")
    common(p)
    p.add_argument("--landmarks", choices=("dwpose", "insightface", "mediapipe", "auto"), default="auto",
                   help="68-point face landmark source (auto: DWPose's own face points with the DWPose "
                        "backend, else MediaPipe FaceMesh)")
    p.add_argument("--insightface-dir", action="append", default=[], metavar="DIR",
                   help="insightface root holding models/<pack>/1k3d68.onnx (repeatable)")
    p.add_argument("--no-carry", action="store_true",
                   help="reference behaviour: black patches on frames without a face (default: reuse "
                        "the last good face geometry)")
    p.set_defaults(func=_step("run_face"))

    p = sub.add_parser("render", parents=[common_options()], help="render POSE_KEYPOINT JSON to a pose video")
    p.add_argument("keypoints", help="POSE_KEYPOINT JSON file")
    common(p, video=False)
    p.add_argument("--fps", type=positive_float, default=DEFAULT_RENDER_FPS,
                   help=f"frame rate of the video (default {DEFAULT_RENDER_FPS:g})")
    p.set_defaults(func=_step("run_render"))

