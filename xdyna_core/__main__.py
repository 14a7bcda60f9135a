"""`python -m xdyna_core animate | demo | preprocess | convert | tiny | batch`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_ASSETS = HERE / "demo_assets"


def _size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x896, got {text!r}") from None
    return w, h


def _add_job_options(p: argparse.ArgumentParser, steps: int, size: str, length):
    p.add_argument("--size", type=_size, default=_size(size), help="output WxH, multiples of 8 (default %(default)s)")
    p.add_argument("--steps", type=int, default=steps, help="DDIM steps (default %(default)s)")
    p.add_argument("--cfg", type=float, default=7.5, help="guidance scale; <= 1 disables CFG (default %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--length", type=int, default=length, help="frames to animate (after --stride)")
    p.add_argument("--stride", type=int, default=1, help="use every n-th driving frame")
    p.add_argument("--start", type=int, default=0, help="first driving frame")
    p.add_argument("--fps", type=float, default=None, help="output fps (default: driving fps / stride)")
    p.add_argument("--face", choices=["on", "off"], default="on", help="S-Face expression control")
    p.add_argument("--align", action="store_true", help="fit the driving skeleton to the reference person")
    p.add_argument("--backend", choices=["auto", "dwpose", "mediapipe"], default="auto", help="pose extractor")
    p.add_argument("--landmarks", choices=["auto", "dwpose", "insightface", "mediapipe"], default="auto")
    p.add_argument("--prompt", default="")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--context-length", type=int, default=16)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
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
        precision=args.precision, memory=args.memory, detector_dirs=dirs, quiet=args.quiet)


def _load(models_dir, opts, quiet):
    import torch

    from .animate import resolve_device
    from .loading.bundle import find_model_files, load_bundle
    from .offload import resolve_memory_mode

    files = find_model_files(models_dir, face=opts.face)
    device, dtype = resolve_device(opts.device, opts.precision)
    if resolve_memory_mode(opts.memory, device) == "low":
        device = torch.device("cpu")   # weights wait in CPU memory; animate() moves each phase's networks
    return load_bundle(files, device=device, dtype=dtype, log=None if quiet else (lambda s: print(s, file=sys.stderr)))


def cmd_animate(args) -> int:
    from .animate import animate, save

    opts = _options(args)
    bundle = _load(args.models, opts, args.quiet)
    result = animate(args.reference, args.driving, bundle, opts)
    out = save(result, args.out, panels=args.panels)
    print(f"wrote {out} ({len(result.video)} frames, {result.fps:g} fps, {opts.width}x{opts.height}); "
          + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    return 0


def default_models_dir() -> Path:
    env = os.environ.get("XDYNA_MODELS_DIR")
    if env:
        return Path(env)
    comfy = os.environ.get("COMFYUI_DIR")
    return Path(comfy) / "models" if comfy else Path("models")


def cmd_demo(args) -> int:
    from .animate import animate, save
    from .loading.bundle import find_model_files

    opts = _options(args)
    models = Path(args.models) if args.models else default_models_dir()
    try:
        find_model_files(models, face=opts.face)
        real = True
    except FileNotFoundError as e:
        real = False
        reason = str(e)
    if not real:
        from .loading.tiny import write_tiny_set

        models = Path(args.work) / "tiny_models"
        write_tiny_set(models, seed=0)
        banner = ("=" * 78 + "\nNO X-DYNA WEIGHTS FOUND (" + reason + ").\nRunning on a TINY RANDOM model set: "
                  "the result is a PIPELINE CHECK, NOT AN ANIMATION.\nPut the released weights under "
                  "models/ (see README) for a real result.\n" + "=" * 78)
        print(banner, file=sys.stderr)
    bundle = _load(models, opts, args.quiet)
    result = animate(DEMO_ASSETS / "reference.jpg", DEMO_ASSETS / "driving.mp4", bundle, opts)
    out = save(result, args.out, panels=True)
    print(f"wrote {out.resolve()}: reference | driving | pose | face patches | result, "
          f"{len(result.video)} frames at {result.fps:g} fps" + ("" if real else "  [tiny random models: pipeline check]"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xdyna_core", description="X-Dyna human image animation.")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("animate", help="animate a reference image with a driving video")
    a.add_argument("--reference", required=True, help="image of a person")
    a.add_argument("--driving", required=True, help="driving video")
    a.add_argument("--models", required=True, help="ComfyUI-style models/ folder")
    a.add_argument("--out", required=True, help="output .mp4")
    a.add_argument("--pose", help="pre-rendered pose video to use instead of extraction")
    a.add_argument("--keypoints", help="POSE_KEYPOINT JSON to render instead of extraction")
    a.add_argument("--panels", action="store_true", help="write reference|driving|pose|face|result side by side")
    _add_job_options(a, steps=25, size="512x896", length=None)
    a.set_defaults(func=cmd_animate)

    d = sub.add_parser("demo", help="the whole job on a bundled short example")
    d.add_argument("--models", help="models/ folder with real weights (default: $XDYNA_MODELS_DIR, "
                                    "$COMFYUI_DIR/models or ./models); tiny random models if none")
    d.add_argument("--out", default="xdyna_demo.mp4")
    d.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "xdyna_demo"),
                   help="scratch folder for the tiny model set")
    _add_job_options(d, steps=10, size="256x448", length=16)
    d.set_defaults(func=cmd_demo)

    for name, helptext in (("preprocess", "pose / face extraction (python -m xdyna_core preprocess -h)"),
                           ("convert", "convert released .ckpt files to .safetensors"),
                           ("tiny", "write the tiny random model set"),
                           ("batch", "run a job list through a running ComfyUI")):
        s = sub.add_parser(name, help=helptext, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    forward = {"preprocess": "xdyna_core.preprocess.cli", "convert": "xdyna_core.loading.convert",
               "tiny": "xdyna_core.loading.tiny", "batch": "xdyna_core.batch.cli"}
    if argv and argv[0] in forward:
        import importlib

        return importlib.import_module(forward[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line for the user; --debug for the traceback
        if getattr(args, "debug", False):
            raise
        from .animate import AnimateError
        from .loading.checkpoints import CheckpointError
        from .preprocess.cli import CliError
        from .preprocess.video import VideoReadError

        known = (AnimateError, CheckpointError, CliError, VideoReadError, FileNotFoundError, ValueError, ImportError)
        if isinstance(e, known):
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
