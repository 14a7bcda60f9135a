"""The settings of one sampling run: ONE value carried from both front ends (the ComfyUI sampler node,
the command line's ``animate``) through the checks (``job_checks.check_sampling``) to the sampler."""
from __future__ import annotations

from dataclasses import dataclass

from .context_windows import DEFAULT_CONTEXT_LENGTH, DEFAULT_CONTEXT_OVERLAP

LATENT_MODES = ("sample", "mean")
# Seeds are used as given, never "-1 = random": ComfyUI's seed widget range, which
# torch.Generator.manual_seed accepts whole (a negative seed is refused, not reinterpreted).
SEED_MIN, SEED_MAX = 0, 2 ** 64 - 1
SEED_RANGE = "a whole number from 0 to 2^64-1 (used as given: -1 does not mean random)"
NUM_TRAIN_TIMESTEPS = 1000   # the official DDIM scheduler's; at most this many steps (scheduler.DDIMConfig)


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = 25
    cfg: float = 7.5                   # classifier-free guidance scale; <= 1 runs without CFG
    seed: int = 42                     # seeds the run's one generator (job.run_sampling)
    context_length: int = DEFAULT_CONTEXT_LENGTH    # frames per context window (<= motion module limit)
    context_overlap: int = DEFAULT_CONTEXT_OVERLAP
    pose_strength: float = 1.0
    face_strength: float = 1.0
    latent: str = "sample"             # reference latent: "sample" (official posterior sample) or "mean"
