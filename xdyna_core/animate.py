"""The whole X-Dyna job outside ComfyUI: reference + driving video -> animated video.

preprocess (pose + S-Face from the driving video, or a given pose video / keypoints) ->
reference encoding (VAE latent, CLIP image tokens) -> text encoding -> temporal sampler ->
chunked VAE decode -> mp4. The same core functions back the ComfyUI nodes.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch

from .errors import XDynaError
from .panels import PANEL_NAMES, burn_banner, label_panels
from .pixels import to_uint8
from .progress import Progress
from .sampling.settings import SamplingSettings
from .preprocess.driving_pose import DrivingPose, extract_driving_pose, fit_keypoints, plain_geometry
from .preprocess.image_batch import Uint8Batch, map_frames, render_batch
from .preprocess.keypoint_lists import keypoint_notes
from .preprocess.keypoints import load_keypoints
from .preprocess.pose_detection import close_quietly, open_pose_detector, reference_pose
from .preprocess.sface_inputs import face_landmarks, face_patch_batches
from .preprocess.span import DrivingClip, plan_clip
from .preprocess.video import VideoReadError, iter_frames, read_first_frame, write_video


class AnimateError(XDynaError):
    """A problem the user can fix; the CLI prints it as one line."""


@dataclass
class AnimateOptions:
    sampling: SamplingSettings = field(default_factory=SamplingSettings)   # steps, cfg, seed, windows, ...
    width: int = 512
    height: int = 896
    frame_count: Optional[int] = None   # driving frames to animate (after stride); None = whole video
    stride: int = 1
    start: int = 0
    fps: Optional[float] = None         # output fps; default: driving fps / stride
    target_fps: float = 0.0             # > 0: the stride nearest to this rate (as the driving node's target_fps)
    face: bool = True                   # S-Face ControlNet on/off
    align: bool = False                 # fit the driving skeleton to the reference person
    backend: str = "auto"               # pose extractor: auto | dwpose | mediapipe
    landmarks: str = "auto"             # face landmarks: auto | dwpose | insightface | mediapipe
    pose_video: Optional[str] = None    # pre-rendered pose video (skips extraction)
    keypoints: Optional[str] = None     # POSE_KEYPOINT JSON (rendered with the X-Dyna rules)
    prompt: str = ""
    negative_prompt: str = ""
    device: str = "auto"
    precision: str = "auto"             # auto | fp32 | fp16 | bf16
    weights: str = "default"            # default | fp8 (UNet/ControlNet weights stored in float8, computed in precision)
    memory: str = "auto"                # auto | high | low (only the current phase's networks on the GPU)
    detector_dirs: List[str] = field(default_factory=list)
    quiet: bool = False


@dataclass
class DrivingControls:
    pose: np.ndarray                     # (N, H, W, 3) uint8 rendered skeletons
    face_local: Optional[np.ndarray]     # (N, H, W, 3) uint8 or None
    face_global: Optional[np.ndarray]
    driving: np.ndarray                  # (N, H, W, 3) uint8 driving frames in output geometry
    fps: float
    notes: List[str]
    has_face: bool = False               # the clip shows a face somewhere
    clip: Optional[DrivingClip] = None   # the driving clip's plan (its sound goes into the result)


def resolve_device(device: str, precision: str):
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    elif precision in table:
        dtype = table[precision]
    else:
        raise AnimateError(f"precision must be auto, fp32, fp16 or bf16, not {precision!r}")
    return dev, dtype


def read_reference(path, working=None) -> np.ndarray:
    """The reference picture; a large still image shrunk on read for ``working`` = (w, h)."""
    try:
        return read_first_frame(path, working)
    except VideoReadError as e:
        raise AnimateError(f"cannot read the reference image: {e}") from None


def _check_size(opts: AnimateOptions):
    from .working_size import check_output_size

    try:
        check_output_size(opts.width, opts.height)  # the one working-size rule of both front ends
    except ValueError as e:
        raise AnimateError(f"--size: {e}") from None


def _extract(frames, detector, reference, opts: AnimateOptions, driving_path):
    bar = Progress(len(frames), "extract", enabled=not opts.quiet)
    try:
        return extract_driving_pose(frames, detector, (opts.width, opts.height), "crop", reference,
                                        on_frame=lambda i: bar.update())
    except ValueError as e:
        raise AnimateError(f"{driving_path}: {e}") from None
    finally:
        bar.close()


def prepare_driving(reference: np.ndarray, driving_path: str, opts: AnimateOptions,
                    reference_path: Optional[str] = None) -> DrivingControls:
    """Pose frames (and S-Face patches) for the driving video, in the output geometry W×H, made by
    the same core functions the ComfyUI preprocessing nodes call (preprocess/driving.py), as uint8.

    Frames are shrunk while they stream (video.iter_frames ``cover``): memory follows the frames used
    at the working size, not the source resolution."""
    W, H = opts.width, opts.height
    try:  # --fps (the output's rate) replaces the file's, broken timestamps and all
        clip = plan_clip(driving_path, opts.start, opts.frame_count, opts.stride, opts.target_fps, opts.fps)
        frames = list(clip.frames(cover=(W, H)))
    except VideoReadError as e:
        raise AnimateError(f"cannot read the driving video: {e}") from None
    notes: List[str] = [f"{n} (--fps sets another)" for n in clip.notes]
    if not frames:
        raise AnimateError(f"no frames read from {driving_path} (start {opts.start}, stride {clip.span.stride})")
    fps = clip.fps
    n = len(frames)

    own_pose = opts.pose_video is not None or opts.keypoints is not None
    try:
        _, detector = open_pose_detector(opts.backend, opts.detector_dirs)
    except ValueError as e:
        if not own_pose or opts.backend != "auto":   # extraction needs it / the user asked for this one
            raise AnimateError(str(e).splitlines()[0]) from None
        detector = None
        skipped = "the reference person check and --align were" if opts.align else "the reference person check was"
        given = "pose video" if opts.pose_video is not None else "keypoints"
        notes.append(f"no pose extractor here, so {skipped} skipped (the pose comes from the given {given})")
    # A given pose needs the driving clip's own poses only to align it or for the S-Face landmarks.
    extract = detector is not None and (not own_pose or opts.align or opts.face)
    if not extract:
        # The driving frames get the plain crop2ratio geometry.
        dp = DrivingPose([], [], plain_geometry(frames[0].shape[1::-1], (W, H), "crop"), "", 0)
    if detector is not None:
        try:
            # The reference must show a person: X-Dyna animates a human, and alignment needs its pose.
            try:
                reference_pose(detector, reference, (W, H))
            except ValueError:
                where = f" {reference_path}" if reference_path else ""
                raise AnimateError(f"no person found in the reference image{where}: X-Dyna needs a photo of "
                                   f"a person (body visible)") from None
            if extract:
                dp = _extract(frames, detector, reference if opts.align else None, opts, driving_path)
        finally:
            close_quietly(detector)
        if opts.align:
            notes.append(f"alignment: {dp.description}")
        elif dp.without_person:
            notes.append(f"{dp.without_person}/{n} driving frames without a person (black pose frames)")

    driving = map_frames(frames, dp.geometry.image, (W, H), batch=Uint8Batch)
    del frames
    if opts.pose_video is not None:
        try:
            pose_frames = list(iter_frames(opts.pose_video, stride=clip.span.stride, start=opts.start, frame_count=n))
        except VideoReadError as e:
            raise AnimateError(f"cannot read the pose video: {e}") from None
        if len(pose_frames) < n:
            raise AnimateError(f"the pose video gives {len(pose_frames)} frames, the driving video {n}")
        pose = map_frames(pose_frames, plain_geometry((pose_frames[0].shape[1], pose_frames[0].shape[0]),
                                                              (W, H), "stretch").image, (W, H), batch=Uint8Batch)
    elif opts.keypoints is not None:
        kp = load_keypoints(opts.keypoints)
        notes += keypoint_notes(kp[:n], str(opts.keypoints))  # refused ones stopped in job_checks
        if len(kp) < n:
            raise AnimateError(f"{opts.keypoints} holds {len(kp)} frames, the driving video gives {n}")
        own = fit_keypoints(kp[:n], (W, H), "stretch")
        pose = render_batch(own, (W, H), batch=Uint8Batch)
        if detector is None:
            dp.poses = own  # their face points serve the 'auto' face landmarks
    else:
        pose = render_batch(dp.poses, (W, H), batch=Uint8Batch)

    local = glob = None
    has_face = False
    if opts.face:
        kind = {"dwpose": "pose_keypoint"}.get(opts.landmarks, opts.landmarks)
        try:
            landmarks, source = face_landmarks(driving, kind, dp.poses or None, opts.detector_dirs)
        except ValueError as e:
            raise AnimateError(str(e).splitlines()[0]) from None
        faces = face_patch_batches(driving, landmarks, carry_missing=True, batch=Uint8Batch)
        has_face = any(faces.has_face)
        if has_face:
            local, glob = faces.local, faces.global_
            notes.append(f"face landmarks ({source}) in {sum(faces.has_face)}/{n} frames")
    return DrivingControls(pose, local, glob, driving, fps, notes, has_face, clip)


def _chw(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


@torch.no_grad()
def encode_text(bundle, prompt: str, device, dtype) -> torch.Tensor:
    from .models.tokenizer import tokenize

    ids = tokenize(prompt, bundle.tokenizer_dir).to(device)
    return bundle.text_encoder(input_ids=ids).last_hidden_state.to(dtype)  # transformers' CLIPTextModel


@dataclass
class AnimateResult:
    video: np.ndarray            # (N, H, W, 3) uint8
    fps: float
    controls: DrivingControls
    reference: np.ndarray        # prepared W×H reference
    seconds: dict
    latents: Optional[torch.Tensor] = None  # (1, 4, N, h, w) sampled latents


def animate(reference_path, driving_path, bundle, opts: AnimateOptions,
            should_cancel: Optional[Callable[[], bool]] = None) -> AnimateResult:
    """Run the whole job with loaded networks (see loading.bundle.load_bundle)."""
    from .job import face_control, progress_total, run_sampling
    from .offload import PhasePlacement, resolve_memory_mode
    from .reference import encode_reference_all
    from .sampling.pipeline import SamplerHooks, check_decoded, decode_chunk, decode_latents

    _check_size(opts)
    device, dtype = resolve_device(opts.device, opts.precision)
    place = PhasePlacement(device, low_memory=resolve_memory_mode(opts.memory, device) == "low")
    for name in ("unet", "pose_controlnet", "face_controlnet", "resampler", "vae", "text_encoder", "clip_vision"):
        place.register(name, getattr(bundle, name))
    times = {}
    t0 = time.perf_counter()
    reference = read_reference(reference_path, (opts.width, opts.height))
    controls = prepare_driving(reference, str(driving_path), opts, str(reference_path))
    times["preprocess"] = time.perf_counter() - t0
    n = len(controls.pose)
    use_face, why = face_control(opts.face, bundle.face_controlnet is not None, controls.has_face,
                                 opts.sampling.face_strength)
    for note in controls.notes + ([why] if why and opts.face else []):
        print(f"note: {note}", file=sys.stderr)

    t0 = time.perf_counter()
    place.use(["vae", "clip_vision", "resampler", "text_encoder"])
    with torch.no_grad():
        enc = encode_reference_all(reference, opts.height, opts.width, bundle.vae, bundle.clip_vision,
                                   bundle.resampler)
        text_c = encode_text(bundle, opts.prompt, device, dtype)
        text_u = encode_text(bundle, opts.negative_prompt, device, dtype)
    times["encode"] = time.perf_counter() - t0

    settings = opts.sampling
    face_cond = torch.cat([_chw(controls.face_local), _chw(controls.face_global)], dim=1) if use_face else None
    bar = Progress(progress_total(n, settings.steps, settings.context_length, settings.context_overlap), "sample",
                   enabled=not opts.quiet, unit="window")
    hooks = SamplerHooks(progress=lambda *a: bar.update(), should_cancel=should_cancel)
    place.use(["unet", "pose_controlnet"] + (["face_controlnet"] if use_face else []))
    t0 = time.perf_counter()
    latents = run_sampling(bundle.unet, enc, text_c, text_u, _chw(controls.pose), settings,
                           pose_controlnet=bundle.pose_controlnet,
                           face_controlnet=bundle.face_controlnet if use_face else None, face_cond=face_cond,
                           device=device, dtype=dtype, hooks=hooks)
    bar.close()
    times["sample"] = time.perf_counter() - t0

    place.use(["vae"])
    t0 = time.perf_counter()
    dbar = Progress(n, "decode", enabled=not opts.quiet)

    def decode(z):
        out = bundle.vae.decode(z.to(device=device, dtype=dtype))
        dbar.update(z.shape[0])
        return out

    frames = decode_latents(decode, latents, chunk=decode_chunk(device), layout="nhwc", should_cancel=should_cancel)
    dbar.close()
    times["decode"] = time.perf_counter() - t0
    check_decoded(frames, latents, dtype, settings.cfg)
    video = to_uint8(frames.numpy())
    return AnimateResult(video, controls.fps, controls, enc.image, times, latents)


def side_by_side(result: AnimateResult) -> np.ndarray:
    """reference | driving | pose | face patches | result, one row per frame, each panel labelled."""
    c = result.controls
    n = len(result.video)
    ref = np.repeat(result.reference[None], n, axis=0)
    if c.face_local is not None:
        face = np.maximum(c.face_local, c.face_global // 2)
    else:
        face = np.zeros_like(c.pose)
    return label_panels(np.concatenate([ref, c.driving, c.pose, face, result.video], axis=2), PANEL_NAMES)


def save(result: AnimateResult, out: Path, panels: bool = False, banner: Optional[str] = None) -> Path:
    """Write the result (or the labelled panels) to `out` (atomically); `banner` is burnt in."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = side_by_side(result) if panels else result.video
    clip = result.controls.clip
    sound = clip.sound(len(frames)) if clip is not None else None   # the driving clip's, under these frames
    write_video(out, burn_banner(frames, banner) if banner else frames, result.fps, audio=sound)
    return out
