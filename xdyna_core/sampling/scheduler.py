"""DDIM scheduler exactly as the official X-Dyna inference configures it.

The official run uses a diffusers ``DDIMScheduler`` with *linear* betas 0.00085 -> 0.012 (not SD's
"scaled_linear"), 1000 training steps, ``steps_offset=1``, "leading" timestep spacing,
``set_alpha_to_one=True``, epsilon prediction, no sample clipping and ``eta=0``. This module
re-implements exactly that (deterministic DDIM only) with the same float32 operation order, so the
timestep grid is identical and every coefficient matches bit for bit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .settings import NUM_TRAIN_TIMESTEPS


@dataclass(frozen=True)
class DDIMConfig:
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    steps_offset: int = 1
    clip_sample: bool = False
    set_alpha_to_one: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "DDIMConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


class DDIMScheduler:
    """Deterministic DDIM (eta = 0) on an epsilon-predicting model.

    Unlike diffusers' scheduler this object holds no per-run state: the number of inference steps is
    passed to :meth:`step`, because the DDIM jump ``t -> t - T // num_inference_steps`` depends on the
    full step count even when ``strength < 1`` skips the first steps.
    """

    def __init__(self, config: DDIMConfig | None = None):
        self.config = config or DDIMConfig()
        c = self.config
        if c.beta_schedule == "linear":
            betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float32)
        elif c.beta_schedule == "scaled_linear":
            betas = torch.linspace(c.beta_start**0.5, c.beta_end**0.5, c.num_train_timesteps,
                                   dtype=torch.float32) ** 2
        else:
            raise ValueError(f"unsupported beta_schedule {c.beta_schedule!r} (expected 'linear' or 'scaled_linear')")
        if c.clip_sample:
            raise ValueError("clip_sample=True is not supported (the X-Dyna scheduler does not clip)")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        # alpha-bar used for the step that jumps below t = 0
        self.final_alpha_cumprod = torch.tensor(1.0) if c.set_alpha_to_one else self.alphas_cumprod[0]

    # ------------------------------------------------------------------ timesteps
    def step_ratio(self, num_inference_steps: int) -> int:
        return self.config.num_train_timesteps // num_inference_steps

    def timesteps(self, num_inference_steps: int, strength: float = 1.0) -> list[int]:
        """Descending timesteps to iterate.

        "leading" spacing: ``k * (T // steps) + steps_offset`` for k = steps-1 .. 0 (25 steps: 961 ... 1).
        ``strength`` keeps the last ``int(steps * strength)`` of them, as the official img2img rule.
        """
        n = int(num_inference_steps)
        if n < 1 or n > self.config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.config.num_train_timesteps}], got {num_inference_steps}")
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        ratio = self.step_ratio(n)
        full = [k * ratio + self.config.steps_offset for k in range(n - 1, -1, -1)]
        keep = min(int(n * strength), n)
        if keep < 1:
            raise ValueError(
                f"strength {strength} with {n} steps keeps no denoising step (int(steps*strength) = 0); "
                "raise the strength or the number of steps")
        return full[n - keep:]

    # ------------------------------------------------------------------ coefficients
    def alpha_bar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha_cumprod

    def add_noise(self, sample: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Forward diffusion ``sqrt(ab_t) x + sqrt(1 - ab_t) eps`` (coefficients computed in float32)."""
        ab = self.alphas_cumprod[t]
        sqrt_ab = (ab ** 0.5).to(device=sample.device, dtype=sample.dtype)
        sqrt_one_minus = ((1 - ab) ** 0.5).to(device=sample.device, dtype=sample.dtype)
        return sqrt_ab * sample + sqrt_one_minus * noise

    def step_alpha_bars(self, timesteps, num_inference_steps: int, device=None) -> torch.Tensor:
        """``(len(timesteps), 2)`` float32 table of ``(alpha_bar(t), alpha_bar(t_prev))`` per step.

        A sampler moves it to the compute device once before its loop and passes row ``s`` to
        :meth:`step`, so the loop makes no host-to-device copy per step (the values are the same
        float32 numbers :meth:`step` would look up).
        """
        ratio = self.step_ratio(num_inference_steps)
        rows = [torch.stack([self.alpha_bar(int(t)), self.alpha_bar(int(t) - ratio)]) for t in timesteps]
        return torch.stack(rows).to(device)

    def step(self, eps: torch.Tensor, t: int, sample: torch.Tensor, num_inference_steps: int,
             alpha_bars: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step (eta = 0). Returns ``(prev_sample, pred_original_sample)``.

        ``alpha_bars``: this step's row of :meth:`step_alpha_bars` (already on the device); without
        it the coefficients are looked up for ``t`` and copied to the device.
        """
        if alpha_bars is None:
            alpha_bars = self.step_alpha_bars([t], num_inference_steps, sample.device)[0]
        ab_t, ab_prev = alpha_bars[0], alpha_bars[1]
        beta_t = 1 - ab_t
        x0 = (sample - beta_t ** 0.5 * eps) / ab_t ** 0.5
        direction = (1 - ab_prev) ** 0.5 * eps
        prev = ab_prev ** 0.5 * x0 + direction
        return prev, x0
