"""`python -m xdyna_core animate | demo | preprocess | convert | tiny | batch | report`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_ASSETS = HERE / "demo_assets"
#: The demo clip's poses (POSE_KEYPOINT JSON with faces, in the clip's pixels): used when this
#: environment has no pose extractor. See demo_assets/README.md.
DEMO_KEYPOINTS = DEMO_ASSETS / "driving_keypoints.json"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command line."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_job_options(p: argparse.ArgumentParser, steps: int, size: str, length):
    from . import job_checks as J

    p.add_argument("--size", type=J.frame_size, default=J.frame_size(size),
                   help="output WxH, multiples of 8 (default %(default)s)")
    p.add_argument("--steps", type=J.positive_int, default=steps, help="DDIM steps (default %(default)s)")
    p.add_argument("--cfg", type=J.finite_float, default=7.5, help="guidance scale; <= 1 disables CFG (default %(default)s)")
    p.add_argument("--seed", type=J.seed, default=42)
    p.add_argument("--length", type=J.positive_int, default=length, help="frames to animate (after --stride)")
    p.add_argument("--stride", type=J.positive_int, default=1, help="use every n-th driving frame")
    p.add_argument("--start", type=J.non_negative_int, default=0, help="first driving frame")
    p.add_argument("--fps", type=J.positive_float, default=None, help="output fps (default: driving fps / stride)")
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
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _options(args):
    from .animate import AnimateOptions

    models = getattr(args, "models", None)
    dirs = [str(Path(models) / "xdyna" / "detectors"), str(Path(models) / "insightface")] if models else []
    return AnimateOptions(
        width=args.size[0], height=args.size[1], steps=args.steps, cfg=args.cfg, seed=args.seed, length=args.length,
        stride=args.stride, start=args.start, fps=args.fps, face=args.face == "on", align=args.align,
        backend=args.backend, landmarks=args.landmarks, pose_video=getattr(args, "pose", None),
        keypoints=getattr(args, "keypoints", None), prompt=args.prompt, negative_prompt=args.negative_prompt,
        context_frames=args.context_length, context_overlap=args.context_overlap, device=args.device,
        precision=args.precision, weights=args.weights, memory=args.memory, detector_dirs=dirs, quiet=args.quiet)


def _load(files, opts, quiet):
    import torch

    from .animate import resolve_device
    from .loading.bundle import load_bundle
    from .models.fp8 import check_weight_format, store_weights_fp8
    from .offload import resolve_memory_mode

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
    from .loading.tiny import MANIFEST_NAME

    return (Path(models_dir) / MANIFEST_NAME).is_file()


def cmd_animate(args) -> int:
    from .job_checks import check_job

    job = check_job(args, models_dir=args.models)   # everything checked before any weights load
    from .animate import animate, save
    from .panels import RANDOM_WEIGHTS_BANNER

    opts = _options(args)
    if (args.pose is None and args.keypoints is None) or opts.backend != "auto":   # extraction, or asked for
        _require_extractor(opts)
    bundle = _load(job.files, opts, args.quiet)
    result = animate(args.reference, args.driving, bundle, opts)
    out = save(result, job.out, panels=args.panels,
               banner=RANDOM_WEIGHTS_BANNER if _is_random_set(args.models) else None)
    print(f"wrote {out} ({len(result.video)} frames, {result.fps:g} fps, {opts.width}x{opts.height}); "
          + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    return 0


def default_models_dir() -> Path:
    env = os.environ.get("XDYNA_MODELS_DIR")
    if env:
        return Path(env)
    comfy = os.environ.get("COMFYUI_DIR")
    return Path(comfy) / "models" if comfy else Path("models")


def _require_extractor(opts) -> None:
    """Stop with the extractor's one-sentence problem before any model is built or loaded."""
    from .animate import AnimateError
    from .preprocess.detectors import pose_extractor_problem

    problem = pose_extractor_problem(opts.backend, opts.detector_dirs)
    if problem is not None:
        raise AnimateError(f"pose backend '{opts.backend}' is not available: {problem}")


def cmd_demo(args) -> int:
    from .job_checks import check_job, check_models

    args.reference, args.driving = DEMO_ASSETS / "reference.jpg", DEMO_ASSETS / "driving.mp4"
    job = check_job(args)                       # options, --out, the bundled inputs
    from .animate import animate, save
    from .panels import RANDOM_WEIGHTS_BANNER
    from .preprocess.detectors import pose_extractor_problem

    opts = _options(args)
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
            from .loading.tiny import write_tiny_set

            print("=" * 78 + f"\nNO X-DYNA WEIGHTS FOUND ({e}).\nRunning on a TINY RANDOM model set: the result "
                  "is a PIPELINE CHECK, NOT AN ANIMATION.\nPut the released weights under models/ (see README) or "
                  "give --models DIR for a real result.\n" + "=" * 78, file=sys.stderr)
            models = Path(args.work) / "tiny_models"
            write_tiny_set(models, seed=0)
            files = check_models(models, opts.face, prompts)
    real = not _is_random_set(models)
    bundle = _load(files, opts, args.quiet)
    result = animate(args.reference, args.driving, bundle, opts)
    out = save(result, job.out, panels=True, banner=None if real else RANDOM_WEIGHTS_BANNER)
    print(f"wrote {out.resolve()}: reference | driving | pose | face patches | result, "
          f"{len(result.video)} frames at {result.fps:g} fps" + ("" if real else "  [random weights: pipeline check]"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    prog = "xdyna" if Path(sys.argv[0]).stem == "xdyna" else "python -m xdyna_core"  # as the user typed it
    p = _Parser(prog=prog, description="X-Dyna human image animation (the `xdyna` command = python -m xdyna_core).")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("animate", help="animate a reference image with a driving video")
    a.add_argument("--reference", required=True, help="image of a person")
    a.add_argument("--driving", required=True, help="driving video")
    a.add_argument("--models", required=True, help="ComfyUI-style models/ folder")
    a.add_argument("--out", required=True, help="output .mp4")
    own_pose = a.add_mutually_exclusive_group()
    own_pose.add_argument("--pose", help="pre-rendered pose video to use instead of extraction")
    own_pose.add_argument("--keypoints", help="POSE_KEYPOINT JSON to render instead of extraction")
    a.add_argument("--panels", action="store_true", help="write reference|driving|pose|face|result side by side")
    _add_job_options(a, steps=25, size="512x896", length=None)
    a.set_defaults(func=cmd_animate)

    d = sub.add_parser("demo", help="the whole job on a bundled short example")
    d.add_argument("--models", help="models/ folder with real weights (default: $XDYNA_MODELS_DIR, "
                                    "$COMFYUI_DIR/models or ./models; tiny random models if those hold none). "
                                    "A given folder must be complete")
    d.add_argument("--out", default="xdyna_demo.mp4")
    d.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "xdyna_demo"),
                   help="scratch folder for the tiny model set")
    _add_job_options(d, steps=10, size="256x448", length=16)
    d.set_defaults(func=cmd_demo)

    for name, helptext in (("preprocess", "pose / face extraction (python -m xdyna_core preprocess -h)"),
                           ("convert", "convert released .ckpt files to .safetensors"),
                           ("tiny", "write the tiny random model set"),
                           ("batch", "run a job list through one or several running ComfyUI servers"),
                           ("report", "quality report of a result: pose agreement, identity, seams")):
        s = sub.add_parser(name, help=helptext, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _is_user_error(e: Exception) -> bool:
    """Errors the user can act on, beyond ValueError & co (job checks, checkpoints, videos are those)."""
    mods = sys.modules  # only classes already imported can have been raised: no import just to test
    kinds = [getattr(mods.get(m), n, None) for m, n in (
        ("xdyna_core.animate", "AnimateError"), ("xdyna_core.preprocess.cli", "CliError"),
        ("xdyna_core.preprocess.video", "VideoWriteError"), ("xdyna_core.sampling.pipeline", "NonFiniteLatents"))]
    return any(k is not None and isinstance(e, k) for k in kinds)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "batch":  # batch handles Ctrl-C itself (it stops the ComfyUI job first)
        import threading

        from .interrupt import install

        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            install()
        if not os.environ.get("XDYNA_NATIVE_LOGS"):   # MediaPipe's C++ log lines (set it to see them)
            from .preprocess import mediapipe_backend

            mediapipe_backend.QUIET_NATIVE_LOGS = True
    forward = {"preprocess": "xdyna_core.preprocess.cli", "convert": "xdyna_core.loading.convert",
               "tiny": "xdyna_core.loading.tiny", "batch": "xdyna_core.batch.cli",
               "report": "xdyna_core.quality.cli"}
    if argv and argv[0] in forward:
        import importlib

        return importlib.import_module(forward[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # only if the handler was not installed (e.g. main() called off the main thread)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line for the user; --debug for the traceback
        if getattr(args, "debug", False):
            raise
        if isinstance(e, (ValueError, FileNotFoundError, ImportError)) or _is_user_error(e):
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def run() -> None:
    """Entry of `xdyna` and `python -m xdyna_core`: main(), then (except for batch, which exits
    normally) leave without interpreter teardown, so Ctrl-C is exit 130 up to the last moment
    (see interrupt.py)."""
    if sys.argv[1:2] == ["batch"]:
        sys.exit(main())
    from .interrupt import leave

    try:
        code = main()
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # --debug: the traceback, as the interpreter would print it
        import traceback

        traceback.print_exc()
        code = 1
    leave(code)


if __name__ == "__main__":
    run()
