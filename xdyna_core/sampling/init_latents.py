"""Initial latents of the official run: blurred copies of the reference latent, then forward noise.

``R`` = the reference latent repeated over the ``N + 1`` frames (frame 0 = the reference itself).
Each element keeps ``R`` or takes a Gaussian-blurred ``R`` (9x9, sigma 18, reflect padding,
per channel and per frame) according to a random keep-mask (``U[0,1) >= 0.5``); frame 0 is reset to
the clean reference. The mix is then noised to the first timestep and frame 0 reset again: frame 0
stays the clean reference for the whole run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BLUR_KERNEL_SIZE = 9
BLUR_SIGMA = 18.0


def gaussian_kernel2d(kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA,
                      dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Normalised separable Gaussian as a (k, k) matrix: outer(g, g), g_i ~ exp(-(i / sigma)^2 / 2)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma).pow(2))
    g = g / g.sum()
    return torch.mm(g[:, None], g[None, :]).to(device=device, dtype=dtype)


def gaussian_blur_frames(latents: torch.Tensor, kernel_size: int = BLUR_KERNEL_SIZE,
                         sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Depthwise Gaussian blur of every channel of every frame of a (B, C, F, h, w) tensor."""
    if latents.ndim != 5:
        raise ValueError(f"expected latents of shape (B, C, F, h, w), got {tuple(latents.shape)}")
    b, c, f, h, w = latents.shape
    pad = kernel_size // 2
    if h <= pad or w <= pad:
        raise ValueError(
            f"latent size {h}x{w} is too small for the {kernel_size}x{kernel_size} reflect-padded blur "
            f"(needs at least {pad + 1}x{pad + 1} latent pixels, i.e. {8 * (pad + 1)} px images)")
    x = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    kernel = gaussian_kernel2d(kernel_size, sigma, dtype=x.dtype, device=x.device)
    x = F.conv2d(x, kernel.expand(c, 1, kernel_size, kernel_size), groups=c)
    return x.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def blurred_repeated_latents(ref_latent: torch.Tensor, num_frames: int,
                             keep_mask: torch.Tensor) -> torch.Tensor:
    """Mask-mix of the repeated reference and its blur, ``(1, C, num_frames + 1, h, w)``.

    ``keep_mask`` (same shape, bool/0-1): 1 keeps the un-blurred value, 0 takes the blurred one.
    """
    _check_ref(ref_latent)
    repeated = ref_latent.expand(-1, -1, num_frames + 1, -1, -1)
    if tuple(keep_mask.shape) != tuple(repeated.shape):
        raise ValueError(
            f"blur keep-mask must have shape {tuple(repeated.shape)} (1, C, N+1, h, w), got {tuple(keep_mask.shape)}")
    blurred = gaussian_blur_frames(repeated)
    mask = keep_mask.to(device=repeated.device, dtype=repeated.dtype)
    mixed = repeated * mask + blurred * (1 - mask)
    mixed[:, :, :1] = ref_latent
    return mixed


def draw_blur_keep_mask(shape, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device) >= 0.5


def _check_ref(ref_latent: torch.Tensor) -> None:
    if ref_latent.ndim != 5 or ref_latent.shape[0] != 1 or ref_latent.shape[2] != 1:
        raise ValueError(f"ref_latent must have shape (1, C, 1, h, w), got {tuple(ref_latent.shape)}")


def noised_initial_latents(scheduler, mixed: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
    """``sqrt(ab_t) mix + sqrt(1 - ab_t) noise`` with frame 0 reset to the clean reference."""
    if tuple(noise.shape) != tuple(mixed.shape):
        raise ValueError(f"initial noise must have shape {tuple(mixed.shape)} (1, C, N+1, h, w), "
                         f"got {tuple(noise.shape)}")
    x = scheduler.add_noise(mixed, noise.to(device=mixed.device, dtype=mixed.dtype), t)
    x[:, :, :1] = mixed[:, :, :1]
    return x
