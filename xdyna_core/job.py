"""The sampling job both front ends run: the ComfyUI sampler node and ``python -m xdyna_core animate``.

One place decides what a run does with its inputs, so the same reference, driving frames, options
and seed give the same latents in ComfyUI and on the command line:

* :func:`face_control` - whether the S-Face ControlNet takes part (and why not);
* :func:`progress_total` - how many window passes the progress bar counts;
* :func:`run_sampling` - ONE generator seeded by ``seed`` makes every random draw in the official
  order: the reference's VAE posterior sample, the blur keep-mask, the initial noise, the window
  offsets of each step.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Tuple

import torch

from .reference import ReferenceEncoding
from .sampling.context_windows import num_context_windows
from .sampling.settings import LATENT_MODES, SamplingSettings  # noqa: F401  (the run's settings live there)


def face_control(face_given: bool, face_controlnet_loaded: bool, clip_has_face: bool,
                 face_strength: float) -> Tuple[bool, Optional[str]]:
    """(S-Face ControlNet used?, reason when it is not although something asked for it)."""
    if not face_given:
        if face_controlnet_loaded:
            return False, "a face ControlNet is loaded but no face patches are given: running pose only"
        return False, None
    if not face_controlnet_loaded:
        return False, "face patches are given but no face ControlNet is loaded: running pose only"
    if not clip_has_face:
        return False, "no face found in the driving frames: S-Face ControlNet switched off"
    if face_strength == 0.0:
        return False, None
    return True, None


def progress_total(num_frames: int, steps: int, context_length: int, context_overlap: int) -> int:
    """Window passes of a run (what the progress hooks count): steps x windows per step."""
    return int(steps) * num_context_windows(num_frames, context_length, context_overlap)


def run_sampling(unet, reference: ReferenceEncoding, text_cond: torch.Tensor, text_uncond: torch.Tensor,
                 pose_cond: torch.Tensor, settings: SamplingSettings, *, pose_controlnet=None,
                 face_controlnet=None, face_cond: Optional[torch.Tensor] = None, device=None,
                 dtype: torch.dtype = torch.float32, hooks=None,
                 generator_hook: Optional[Callable[[torch.Generator], None]] = None) -> torch.Tensor:
    """Latents (1, 4, N, h, w) of frames 1..N. ``pose_cond`` / ``face_cond``: uint8 (N, 3|6, H, W);
    ``face_controlnet=None`` runs pose only (decide with :func:`face_control`)."""
    from .sampling.pipeline import sample_video

    if settings.latent not in LATENT_MODES:
        raise ValueError(f"latent must be one of {', '.join(LATENT_MODES)}, got {settings.latent!r}")
    generator = torch.Generator("cpu").manual_seed(int(settings.seed))
    ref_latent = reference.latent(generator, settings.latent == "sample")
    if generator_hook is not None:
        generator_hook(generator)
    use_face = face_controlnet is not None and face_cond is not None
    if not use_face:
        settings = replace(settings, face_strength=0.0)
    return sample_video(unet, ref_latent.to(device), text_cond.to(device), text_uncond.to(device),
                        reference.image_tokens_cond.to(device), reference.image_tokens_uncond.to(device),
                        settings, generator, pose_controlnet=pose_controlnet,
                        face_controlnet=face_controlnet if use_face else None, pose_cond=pose_cond,
                        face_cond=face_cond if use_face else None, device=device, dtype=dtype, hooks=hooks)
