"""`xdyna report`: score an animation result against its reference and driving video."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..arg_types import non_negative_int, positive_int
from ..outputs import atomic_output, write_atomic


def _offsets(text: str):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(commands) -> None:
    from . import common_options

    p = commands.add_parser("report", parents=[common_options()],
                            help="quality report of a result: pose agreement, identity, seams",
                            description="Pose agreement, identity and window-seam stability of a result.")
    p.add_argument("--reference", required=True, help="the reference image the result was made from")
    p.add_argument("--driving", required=True, help="the driving video")
    p.add_argument("--result", required=True, help="the result video")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--plot", help="write the per-frame plot to this PNG file")
    p.add_argument("--models", help="ComfyUI-style models/ folder (DWPose in xdyna/detectors, ArcFace in "
                                    "insightface/models/<pack>/); default $XDYNA_MODELS_DIR or $COMFYUI_DIR/models")
    p.add_argument("--backend", choices=["auto", "dwpose", "mediapipe"], default="auto",
                   help="pose detector: the one the driving pose came from")
    p.add_argument("--landmarks", choices=["auto", "pose_keypoint", "insightface", "mediapipe"],
                   default="auto", help="face landmarks for the identity crops")
    p.add_argument("--fit", choices=["crop", "stretch"], default="crop", help="how the job fitted the driving frames")
    p.add_argument("--align", action="store_true", help="the job aligned the driving skeleton onto the reference")
    p.add_argument("--start", type=non_negative_int, default=0, help="first driving frame the job used")
    p.add_argument("--stride", type=positive_int, default=1, help="the job's driving frame stride")
    p.add_argument("--context-length", type=positive_int, default=16)
    p.add_argument("--context-overlap", type=non_negative_int, default=4)
    p.add_argument("--seed", type=int, default=None,
                   help="the run's seed: its window offsets are replayed (with --steps and --latent)")
    p.add_argument("--steps", type=positive_int, default=25, help="the run's DDIM steps (default %(default)s)")
    p.add_argument("--latent", choices=["sample", "mean"], default="sample",
                   help="the run's reference latent mode (default %(default)s)")
    p.add_argument("--window-offsets", type=_offsets, default=None,
                   help="the sampler's per-step window offsets (comma list), instead of --seed; "
                        "without both: offset 0")
    p.set_defaults(func=run)


def _models_dir(arg):
    if arg:
        return Path(arg)
    env = os.environ.get("XDYNA_MODELS_DIR") or (os.environ.get("COMFYUI_DIR") and str(Path(os.environ["COMFYUI_DIR"]) / "models"))
    return Path(env) if env else None


def _check_out(path, suffix: str, what: str):
    if path is None:
        return None
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise ValueError(f"--{what} {p}: expected a {suffix} file name")
    if not p.parent.resolve().is_dir():
        raise ValueError(f"--{what} {p}: folder {p.parent} does not exist")
    return p


def _read(option: str, path, **kwargs):
    """(frames, source fps)."""
    from ..preprocess.video import VideoReadError, read_video

    try:
        return read_video(path, **kwargs)
    except VideoReadError as e:
        raise ValueError(f"--{option}: {e}") from None


def _driving(args, frames: int):
    """The driving clip as the job planned it (span.plan_clip): (the first ``frames`` picked frames, the
    rate they play at, how many frames the plan holds in all: the container's count, else counted)."""
    from ..preprocess.span import plan_clip
    from ..preprocess.video import VideoReadError

    try:
        clip = plan_clip(args.driving, args.start, None, args.stride)
        picked = []
        for frame in clip.frames():
            if len(picked) == frames:
                break
            picked.append(frame)
        known = clip.expected_frames()
        total = known if known is not None else sum(1 for _ in clip.frames())
    except VideoReadError as e:
        raise ValueError(f"--driving: {e}") from None
    import numpy as np

    return np.stack(picked) if picked else np.zeros((0, 1, 1, 3), np.uint8), clip.fps, total


def run(args) -> int:
    from ..sampling.context_windows import validate_context
    from ..quality.report import ReportOptions, quality_report, summary

    json_out, plot_out = _check_out(args.json, ".json", "json"), _check_out(args.plot, ".png", "plot")
    try:
        validate_context(args.context_length, args.context_overlap)
    except ValueError as e:
        raise ValueError(f"--context-length/--context-overlap: {e}") from None
    models = _models_dir(args.models)
    model_dirs = [str(models / "xdyna" / "detectors"), str(models / "insightface")] if models else []
    insightface = [str(models / "insightface")] if models else []
    reference = _read("reference", args.reference, frame_count=1)[0][0]
    result, result_fps = _read("result", args.result)
    # only the frames compared are decoded; the clip's length (for the note) comes from its header
    driving, driving_fps, driving_count = _driving(args, len(result))
    opts = ReportOptions(backend=args.backend, fit=args.fit, align=args.align, landmarks=args.landmarks,
                         context_length=args.context_length, context_overlap=args.context_overlap,
                         window_offsets=args.window_offsets, seed=args.seed, steps=args.steps,
                         latent=args.latent, model_dirs=model_dirs, insightface_dirs=insightface,
                         driving_count=driving_count, result_fps=result_fps, driving_fps=driving_fps)
    # the notes are in the summary: printing the log as well would say them twice
    figures, plot = quality_report(reference, driving, result, opts, log=lambda s: None)
    print(summary(figures))
    if json_out:
        write_atomic(json_out, json.dumps(figures, indent=1, allow_nan=False))
        print(f"wrote {json_out}")
    if plot_out:
        from PIL import Image

        with atomic_output(plot_out) as tmp:
            Image.fromarray(plot).save(tmp)
        print(f"wrote {plot_out}")
    return 0

