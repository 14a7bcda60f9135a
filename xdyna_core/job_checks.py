"""Everything a standalone job needs, checked before any heavy work (`animate`, `demo`).

A real run loads gigabytes of weights, then preprocesses, then samples for minutes on a GPU: a bad
value or path found at the end throws that away. So:

* option values are checked while parsing (argparse `type=` functions below), and the message uses the
  option's own name (`--steps`, not `num_inference_steps`);
* `check_job` then checks the job VALUE (the options the run uses, `animate.AnimateOptions`, with its
  `SamplingSettings`), what needs more than one option or a look at the disk, in order of cost:
  the sampling settings (`check_sampling`, which the ComfyUI sampler node calls too); the output path (never an input, also through links; a folder
  that takes files; an extension we write); the inputs (opened and probed: the reference image
  decoded, the first used driving frame decoded); the free disk space against the result's estimate; the step count and the device (torch imported
  here); the model files (found, and each one's header read
  and recognised — no weights are loaded) and the settings against the UNet's motion module limit
  (from its header).

Every failure is a `JobCheckError` (or the loaders' CheckpointError) with a one-line message.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import XDynaError


class JobCheckError(XDynaError, ValueError):
    """A job that cannot run as asked; the message names the option or file and what is expected."""

from .arg_types import (DEVICE_PATTERN, device_name, finite_float, frame_size, non_negative_int,  # noqa: F401
                        positive_float, positive_int, seed)


# ------------------------------------------------------------------------------ checks of the job value
def cli_flag(name: str) -> str:
    """How the command line names a setting in a message (`context_length` -> `--context-length`)."""
    return "--" + name.replace("_", "-")


def check_sampling(settings, motion_max_len: Optional[int] = None, flag: Callable[[str], str] = cli_flag) -> None:
    """A run's SamplingSettings against each other, the scheduler and (when known) the UNet's motion
    module limit; raises JobCheckError naming the setting as ``flag`` spells it (the CLI's options, the
    node's inputs). Cheap: no model is loaded; the limit comes from the UNet file's header."""
    from .sampling.settings import LATENT_MODES, NUM_TRAIN_TIMESTEPS, SEED_MAX, SEED_MIN, SEED_RANGE  # no torch

    if not SEED_MIN <= settings.seed <= SEED_MAX:
        raise JobCheckError(f"{flag('seed')} {settings.seed}: {SEED_RANGE}")

    length, overlap = settings.context_length, settings.context_overlap
    if overlap >= length:
        raise JobCheckError(f"{flag('context_overlap')} {overlap} must be smaller than {flag('context_length')} "
                            f"{length} (windows overlap by fewer frames than they hold)")
    if motion_max_len is not None and length > motion_max_len:
        raise JobCheckError(f"{flag('context_length')} {length}: at most {motion_max_len}, the motion module's "
                            f"limit (frames it was trained on, from the UNet file); longer clips are sampled "
                            f"in overlapping windows")
    if settings.latent not in LATENT_MODES:
        raise JobCheckError(f"{flag('latent')} must be one of {', '.join(LATENT_MODES)}, got {settings.latent!r}")
    if not 1 <= settings.steps <= NUM_TRAIN_TIMESTEPS:
        raise JobCheckError(f"{flag('steps')} {settings.steps}: 1 to {NUM_TRAIN_TIMESTEPS} (the scheduler's "
                            f"training timesteps)")


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


def input_paths(reference, driving, opts) -> list:
    return [p for p in (reference, driving, opts.pose_video, opts.keypoints) if p is not None]


def check_inputs(reference, driving, opts) -> None:
    """Open and probe every input: the reference decoded, the first used frame of each video decoded."""
    from .preprocess.keypoint_checks import KeypointCheckError, check_keypoints
    from .preprocess.keypoints import KeypointFormatError, load_keypoints
    from .preprocess.video import VideoReadError, iter_frames, probe_video, read_first_frame

    def first_frame(path, what, role, start=0):
        try:
            probe_video(path, fps=opts.fps)  # --fps stands in for a clip's broken timestamps
            if next(iter(iter_frames(path, start=start, frame_count=1)), None) is None:
                raise JobCheckError(f"--{what} {path}: no frame at --start {start}")
        except VideoReadError as e:  # the reader knows the file, the option's role is said here
            raise JobCheckError(f"--{what} (the {role}): {e}") from None

    try:  # decoded as the run decodes it (a large image shrunk on read)
        read_first_frame(reference, (opts.width, opts.height))
    except VideoReadError as e:
        raise JobCheckError(f"--reference (the reference image): {e}") from None
    first_frame(driving, "driving", "driving video", opts.start)
    if opts.pose_video:
        first_frame(opts.pose_video, "pose", "pose video", opts.start)
    if opts.keypoints:
        try:
            check_keypoints(load_keypoints(opts.keypoints), str(opts.keypoints))
        except (KeypointFormatError, KeypointCheckError, FileNotFoundError) as e:
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


def planned_frames(driving, opts) -> Optional[int]:
    """How many frames the result has at most: --frame-count, else the driving clip's frames from
    --start at --stride (None when the container does not say)."""
    from .preprocess.video import expected_frame_count, probe_video

    if opts.frame_count:
        return int(opts.frame_count)
    return expected_frame_count(probe_video(driving, fps=opts.fps).frame_count, max(1, opts.stride), opts.start)


def check_disk_space(opts, driving, out, panels: bool = False) -> None:
    """The output folder's free space against a generous estimate of the result (all panels side by
    side with ``panels``)."""
    from .outputs import OutputPathError, check_free_space, expected_mp4_bytes
    from .panels import PANEL_NAMES

    frames = planned_frames(driving, opts)
    if frames is None:
        return
    width = opts.width * (len(PANEL_NAMES) if panels else 1)
    try:
        check_free_space(out, expected_mp4_bytes(frames, width, opts.height),
                         f"{frames} frames of {width}x{opts.height}", option="--out")
    except OutputPathError as e:
        raise JobCheckError(str(e)) from None


def check_job(opts, reference, driving, out, models_dir=None, inputs: bool = True, panels: bool = False) -> CheckedJob:
    """All checks of one `animate` / `demo` job (``opts``: animate.AnimateOptions), cheapest first (see
    the module docstring). ``models_dir=None``: the caller finds the models later (``check_models`` and
    ``check_model_limits``). ``panels``: the result is written as side-by-side panels (disk estimate)."""
    from .outputs import OutputPathError, check_output_path

    check_sampling(opts.sampling)
    try:
        out = check_output_path(out, input_paths(reference, driving, opts) if inputs else [], suffixes=(".mp4",),
                                option="--out")
    except OutputPathError as e:
        raise JobCheckError(str(e)) from None
    if inputs:
        check_inputs(reference, driving, opts)
        check_disk_space(opts, driving, out, panels)
    check_device(opts.device)
    files = None
    if models_dir is not None:
        files = check_models(models_dir, opts.face, (opts.prompt, opts.negative_prompt))
        check_model_limits(opts, files)
    return CheckedJob(out, files)


def check_model_limits(opts, files) -> None:
    """The settings against what the model files' headers say (the motion module's window limit)."""
    from .loading.recognise import recognise

    check_sampling(opts.sampling, recognise(files.unet).motion_max_len)
