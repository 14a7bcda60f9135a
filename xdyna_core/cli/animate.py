"""`xdyna animate` (the whole job) and `xdyna demo` (the whole job on the bundled example)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEMO_ASSETS = Path(__file__).resolve().parents[1] / "demo_assets"
#: The demo clip's poses (POSE_KEYPOINT JSON with faces, in the clip's pixels): used when this
#: environment has no pose extractor. See demo_assets/README.md.
DEMO_KEYPOINTS = DEMO_ASSETS / "driving_keypoints.json"


def _add_job_options(p, steps: int, size: str, frame_count):
    from .. import job_checks as J

    p.add_argument("--size", type=J.frame_size, default=J.frame_size(size),
                   help="output WxH, multiples of 8 (default %(default)s)")
    p.add_argument("--steps", type=J.positive_int, default=steps, help="DDIM steps (default %(default)s)")
    p.add_argument("--cfg", type=J.finite_float, default=7.5, help="guidance scale; <= 1 disables CFG (default %(default)s)")
    p.add_argument("--seed", type=J.seed, default=42, help="0 to 2^64-1, used as given (-1 is refused, not random); "
                   "the same seed gives the same video, here and in ComfyUI")
    p.add_argument("--frame-count", "--length", dest="frame_count", type=J.positive_int, default=frame_count,
                   help="driving frames to animate (after --stride; default: all)")
    p.add_argument("--stride", type=J.positive_int, default=1, help="use every n-th driving frame")
    p.add_argument("--start", type=J.non_negative_int, default=0, help="first driving frame")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=J.positive_float, default=None,
                      help="output fps (default: driving fps / stride); also repairs a clip's broken timestamps")
    rate.add_argument("--target-fps", type=J.positive_float, default=0.0,
                      help="take every n-th driving frame with n chosen to come nearest this rate (as the driving "
                           "node's target_fps; replaces --stride)")
    p.add_argument("--face", choices=["on", "off"], default="on", help="S-Face expression control")
    p.add_argument("--align", action="store_true", help="fit the driving skeleton to the reference person")
    p.add_argument("--backend", choices=["auto", "dwpose", "mediapipe"], default="auto", help="pose extractor")
    p.add_argument("--landmarks", choices=["auto", "dwpose", "insightface", "mediapipe"], default="auto")
    p.add_argument("--prompt", default="")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--context-length", type=J.positive_int, default=16)
    p.add_argument("--context-overlap", type=J.non_negative_int, default=4)
    p.add_argument("--device", type=J.device_name, default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument("--weights", choices=["default", "fp8"], default="default",
                   help="fp8: store the UNet/ControlNet weights as float8 e4m3 (half of fp16's memory), "
                        "computed in --precision")
    p.add_argument("--memory", choices=["auto", "high", "low"], default="auto",
                   help="low: keep only the current phase's networks on the GPU (8 GB cards); "
                        "auto picks low below 12 GB")
    p.add_argument("--quiet", action="store_true")


def _options(args):
    from ..animate import AnimateOptions
    from ..sampling.settings import SamplingSettings

    models = getattr(args, "models", None)
    dirs = [str(Path(models) / "xdyna" / "detectors"), str(Path(models) / "insightface")] if models else []
    sampling = SamplingSettings(steps=args.steps, cfg=args.cfg, seed=args.seed, context_length=args.context_length,
                                context_overlap=args.context_overlap)
    return AnimateOptions(
        sampling=sampling, width=args.size[0], height=args.size[1], frame_count=args.frame_count, stride=args.stride,
        target_fps=args.target_fps,
        start=args.start, fps=args.fps, face=args.face == "on", align=args.align, backend=args.backend,
        landmarks=args.landmarks, pose_video=getattr(args, "pose", None), keypoints=getattr(args, "keypoints", None),
        prompt=args.prompt, negative_prompt=args.negative_prompt, device=args.device, precision=args.precision,
        weights=args.weights, memory=args.memory, detector_dirs=dirs, quiet=args.quiet)


def _load(files, opts, quiet):
    import torch

    from ..animate import resolve_device
    from ..loading.bundle import load_bundle
    from ..models.fp8 import check_weight_format, store_weights_fp8
    from ..offload import resolve_memory_mode

    device, dtype = resolve_device(opts.device, opts.precision)
    if resolve_memory_mode(opts.memory, device) == "low":
        device = torch.device("cpu")   # weights wait in CPU memory; animate() moves each phase's networks
    bundle = load_bundle(files, device=device, dtype=dtype, log=None if quiet else (lambda s: print(s, file=sys.stderr)))
    if check_weight_format(opts.weights) == "fp8":
        for net in (bundle.unet, bundle.pose_controlnet, bundle.face_controlnet):
            if net is not None:
                store_weights_fp8(net, dtype)
    return bundle


def _is_random_set(models_dir) -> bool:
    from ..loading.tiny import MANIFEST_NAME

    return (Path(models_dir) / MANIFEST_NAME).is_file()


def animate_to_file(reference, driving, bundle, opts, out, panels: bool = False, random_set: bool = False):
    """One job with a loaded bundle, written to ``out`` (atomically): what `animate` does after loading,
    and what each `batch --engine ray` actor does per job, so both give the same file."""
    from ..animate import animate, save
    from ..panels import RANDOM_WEIGHTS_BANNER

    result = animate(reference, driving, bundle, opts)
    save(result, out, panels=panels, banner=RANDOM_WEIGHTS_BANNER if random_set else None)
    return result


def add_own_pose(p):
    """--pose / --keypoints: a given pose instead of extraction (animate's options, a batch job's keys)."""
    own_pose = p.add_mutually_exclusive_group()
    own_pose.add_argument("--pose", help="pre-rendered pose video to use instead of extraction")
    own_pose.add_argument("--keypoints", help="POSE_KEYPOINT JSON to render instead of extraction")


def cmd_animate(args) -> int:
    from ..job_checks import check_job

    opts = _options(args)
    job = check_job(opts, args.reference, args.driving, args.out, models_dir=args.models,  # before any weights load
                    panels=args.panels)
    require_extractor_if_used(opts)
    bundle = _load(job.files, opts, args.quiet)
    result = animate_to_file(args.reference, args.driving, bundle, opts, job.out, panels=args.panels,
                             random_set=_is_random_set(args.models))
    out = job.out
    print(f"wrote {out} ({len(result.video)} frames, {result.fps:g} fps, {opts.width}x{opts.height}); "
          + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    return 0


def default_models_dir() -> Path:
    env = os.environ.get("XDYNA_MODELS_DIR")
    if env:
        return Path(env)
    comfy = os.environ.get("COMFYUI_DIR")
    return Path(comfy) / "models" if comfy else Path("models")


def require_extractor_if_used(opts) -> None:
    """The pose extractor's problem, when the job extracts (no given pose) or names a backend."""
    if (opts.pose_video is None and opts.keypoints is None) or opts.backend != "auto":
        _require_extractor(opts)


def _require_extractor(opts) -> None:
    """Stop with the extractor's one-sentence problem before any model is built or loaded."""
    from ..animate import AnimateError
    from ..preprocess.detectors import pose_extractor_problem

    problem = pose_extractor_problem(opts.backend, opts.detector_dirs)
    if problem is not None:
        raise AnimateError(f"pose backend '{opts.backend}' is not available: {problem}")


def cmd_demo(args) -> int:
    from ..job_checks import check_job, check_model_limits, check_models

    args.reference, args.driving = DEMO_ASSETS / "reference.jpg", DEMO_ASSETS / "driving.mp4"
    opts = _options(args)
    job = check_job(opts, args.reference, args.driving, args.out, panels=True)   # options, --out, the bundled inputs
    from ..animate import animate, save
    from ..panels import RANDOM_WEIGHTS_BANNER
    from ..preprocess.detectors import pose_extractor_problem

    problem = pose_extractor_problem(opts.backend, opts.detector_dirs)   # before any model is built
    if problem is not None and opts.backend == "auto":
        opts.keypoints = str(DEMO_KEYPOINTS)
        print(f"note: {problem[0].upper()}{problem[1:]}; the demo uses the keypoints shipped with its clip "
              f"({DEMO_KEYPOINTS.name}) instead.", file=sys.stderr)
    elif problem is not None:
        _require_extractor(opts)

    prompts = (opts.prompt, opts.negative_prompt)
    if args.models:                             # asked for: incomplete is an error, never a silent fallback
        models = Path(args.models)
        files = check_models(models, opts.face, prompts)
    else:
        models = default_models_dir()
        try:
            files = check_models(models, opts.face, prompts)
        except FileNotFoundError as e:
            from ..loading.tiny import write_tiny_set

            print("=" * 78 + f"\nNO X-DYNA WEIGHTS FOUND ({e}).\nRunning on a TINY RANDOM model set: the result "
                  "is a PIPELINE CHECK, NOT AN ANIMATION.\nPut the released weights under models/ (see README) or "
                  "give --models DIR for a real result.\n" + "=" * 78, file=sys.stderr)
            models = Path(args.work) / "tiny_models"
            write_tiny_set(models, seed=0)
            files = check_models(models, opts.face, prompts)
    check_model_limits(opts, files)
    real = not _is_random_set(models)
    bundle = _load(files, opts, args.quiet)
    result = animate(args.reference, args.driving, bundle, opts)
    out = save(result, job.out, panels=True, banner=None if real else RANDOM_WEIGHTS_BANNER)
    print(f"wrote {out.resolve()}: reference | driving | pose | face patches | result, "
          f"{len(result.video)} frames at {result.fps:g} fps" + ("" if real else "  [random weights: pipeline check]"))
    return 0


def register(commands) -> None:
    from . import common_options

    a = commands.add_parser("animate", parents=[common_options()], help="animate a reference image with a driving video")
    a.add_argument("--reference", required=True, help="image of a person")
    a.add_argument("--driving", required=True, help="driving video")
    a.add_argument("--models", required=True, help="ComfyUI-style models/ folder")
    a.add_argument("--out", required=True, help="output .mp4")
    add_own_pose(a)
    a.add_argument("--panels", action="store_true", help="write reference|driving|pose|face|result side by side")
    _add_job_options(a, steps=25, size="512x896", frame_count=None)
    a.set_defaults(func=cmd_animate)

    d = commands.add_parser("demo", parents=[common_options()], help="the whole job on a bundled short example")
    d.add_argument("--models", help="models/ folder with real weights (default: $XDYNA_MODELS_DIR, "
                                    "$COMFYUI_DIR/models or ./models; tiny random models if those hold none). "
                                    "A given folder must be complete")
    d.add_argument("--out", default="xdyna_demo.mp4")
    d.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "xdyna_demo"),
                   help="scratch folder for the tiny model set")
    _add_job_options(d, steps=10, size="256x448", frame_count=16)
    d.set_defaults(func=cmd_demo)
