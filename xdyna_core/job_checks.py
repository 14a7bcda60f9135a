"""Everything a standalone job needs, checked before any heavy work (`animate`, `demo`).

A real run loads gigabytes of weights, then preprocesses, then samples for minutes on a GPU: a bad
value or path found at the end throws that away. So:

* option values are checked while parsing (argparse `type=` functions below), and the message uses the
  option's own name (`--steps`, not `num_inference_steps`);
* `check_job` then checks what needs more than one option or a look at the disk, in order of cost:
  option combinations; the output path (never an input, also through links; a folder
  that takes files; an extension we write); the inputs (opened and probed: the reference image
  decoded, the first used driving frame decoded); the step count and the device (torch imported
  here); the model files (found, and each one's header read
  and recognised — no weights are loaded).

Every failure is a `JobCheckError` (or the loaders' CheckpointError) with a one-line message.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import XDynaError


class JobCheckError(XDynaError, ValueError):
    """A job that cannot run as asked; the message names the option or file and what is expected."""

from .arg_types import (DEVICE_PATTERN, device_name, finite_float, frame_size, non_negative_int,  # noqa: F401
                        positive_float, positive_int, seed)


# ------------------------------------------------------------------------------ checks after parsing
def check_options(args) -> None:
    """Combinations of options; raises JobCheckError (no heavy imports: runs first)."""
    if args.context_overlap >= args.context_length:
        raise JobCheckError(f"--context-overlap {args.context_overlap} must be smaller than --context-length "
                            f"{args.context_length} (windows overlap by fewer frames than they hold)")


def check_runtime(args) -> None:
    """What needs torch: the step count against the scheduler, the device."""
    from .sampling.scheduler import DDIMScheduler

    max_steps = DDIMScheduler().config.num_train_timesteps
    if args.steps > max_steps:
        raise JobCheckError(f"--steps {args.steps}: at most {max_steps} (the scheduler's training timesteps)")
    check_device(args.device)


def check_device(device: str) -> None:
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise JobCheckError(f"--device {device}: PyTorch sees no CUDA GPU here (torch {torch.__version__}"
                                f"{'' if torch.version.cuda else ', a CPU-only build'}); use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise JobCheckError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible "
                                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise JobCheckError(f"--device {device}: Apple MPS is not available here; use --device cpu")


def input_paths(args) -> list:
    return [p for p in (getattr(args, "reference", None), getattr(args, "driving", None),
                        getattr(args, "pose", None), getattr(args, "keypoints", None)) if p is not None]


def check_inputs(args) -> None:
    """Open and probe every input: the reference decoded, the first used frame of each video decoded."""
    from .preprocess.keypoints import KeypointFormatError, load_keypoints
    from .preprocess.video import VideoReadError, iter_frames, probe_video

    def first_frame(path, what, start=0):
        try:
            probe_video(path)
            if next(iter(iter_frames(path, start=start, max_frames=1)), None) is None:
                raise JobCheckError(f"--{what} {path}: no frame at --start {start}")
        except VideoReadError as e:
            raise JobCheckError(f"--{what}: {e}") from None

    first_frame(args.reference, "reference")
    first_frame(args.driving, "driving", args.start)
    if getattr(args, "pose", None):
        first_frame(args.pose, "pose", args.start)
    if getattr(args, "keypoints", None):
        try:
            load_keypoints(args.keypoints)
        except (KeypointFormatError, FileNotFoundError) as e:
            raise JobCheckError(f"--keypoints: {e}") from None


def check_models(models_dir, face: bool, prompts=()):
    """Find the model files and recognise each from its header; returns the ModelFiles."""
    from .loading.bundle import check_model_files, find_model_files
    from .models.tokenizer import find_tokenizer_dir

    files = find_model_files(models_dir, face=face)
    check_model_files(files)
    if any(prompts) and find_tokenizer_dir(files.tokenizer_dir) is None:
        raise JobCheckError("--prompt/--negative-prompt need the CLIP tokenizer files (vocab.json, merges.txt): "
                            "use a diffusers SD1.5 folder in models/checkpoints, put them in models/xdyna/tokenizer, "
                            "or set XDYNA_TOKENIZER_DIR")
    return files


@dataclass
class CheckedJob:
    out: Path
    files: Optional[object] = None   # loading.bundle.ModelFiles


def check_job(args, models_dir=None, inputs: bool = True) -> CheckedJob:
    """All checks of one `animate` / `demo` job, cheapest first (see the module docstring)."""
    from .outputs import OutputPathError, check_output_path

    check_options(args)
    try:
        out = check_output_path(args.out, input_paths(args) if inputs else [], suffixes=(".mp4",), option="--out")
    except OutputPathError as e:
        raise JobCheckError(str(e)) from None
    if inputs:
        check_inputs(args)
    check_runtime(args)
    files = None
    if models_dir is not None:
        files = check_models(models_dir, args.face == "on", (args.prompt, args.negative_prompt))
    return CheckedJob(out, files)
