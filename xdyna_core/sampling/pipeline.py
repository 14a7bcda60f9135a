"""The X-Dyna temporal sampler: DDIM with CFG, ControlNets and closed-loop context windows.

Reproduces the official ``XDynaPipeline.__call__`` path used by ``inference_xdyna.py`` (spec §2-§4):

* the latent video has ``N + 1`` frames; frame 0 is the clean reference latent in every UNet call, is
  never noised and never stepped (the returned latents are frames 1..N only);
* initial latents = blur-mixed repeated reference noised to the first timestep (``init_latents``);
* every step: windows of ``context_length`` driving frames (closed loop, random offset per step), each
  run as one UNet call on ``[reference, window frames]`` with the window's ControlNet residuals (pose +
  face summed, zero at frame 0); predictions are averaged per frame, then classifier-free guidance,
  then a DDIM step on frames 1..N.

Plain tensors and callables in, latents out. The networks are only called, never modified: no hooks,
no ``.eval()``/``.train()``, no parameter changes (the caller puts them in eval mode).

Model call conventions (the ``xdyna_core.models`` classes follow them):

* ``unet(sample (B,4,1+F,h,w), t, context (B,T+K,D), down_block_additional_residuals=[12 x (B,C,1+F,.,.)]
  | None, mid_block_additional_residual=(B,C,1+F,.,.) | None) -> (B,4,1+F,h,w)``
* ``controlnet(sample (n,4,h,w), t, text (n,T,D), controlnet_cond (n,C,8h,8w) in [0,1])
  -> (list of down residuals (n,C_i,.,.), mid residual)``; if it also has
  ``embed_condition(image) -> features`` and accepts ``cond_embedding=features`` instead of the image
  (``xdyna_core.models.ControlNetModel`` does), the image features are computed once for both CFG
  halves.

``t`` is passed as a 0-d int64 tensor on the compute device (a compiled network then sees a graph
input rather than a constant, and no host-to-device copy happens per call).

The step loop makes no blocking host/device transfer: timesteps, DDIM coefficients and window
indices go to the device once before it, control frames are copied from pinned memory without
blocking (CUDA), and nothing is read back to the host (no ``.item()``/``.tolist()``).

Memory is flat in video length: only ``window_batch_size`` windows (default 1) go through the networks
at a time, the ControlNets run on that window's frames only, and control images stay where the caller
keeps them (CPU, uint8) and are normalised per window on the compute device.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ..errors import XDynaError
from ..sd15 import VAE_SCALING_FACTOR
from .context_windows import context_windows, validate_context
from .controls import ControlClip, face_clip, pose_clip
from .init_latents import (blurred_repeated_latents, draw_blur_keep_mask, noised_initial_latents)
from .scheduler import DDIMScheduler
from .settings import SamplingSettings


class SamplingCancelled(RuntimeError):
    """Raised when ``hooks.should_cancel()`` returns True; the run stops between two windows."""


class NonFiniteLatents(XDynaError, RuntimeError):
    """NaN/inf in a step: in a window's noise prediction (raised at the end of that step, naming step and
    window) or in the latents that step produced (guidance and DDIM update), with :func:`non_finite_advice`."""


# Guidance scales past this are far outside what X-Dyna is run with (the official default is 7.5; the
# sampler node's cfg widget stops here too):
# guidance multiplies the cond/uncond difference by the scale, so a huge scale alone gives NaN/inf.
CFG_USUAL_MAX = 30.0


def non_finite_advice(dtype: torch.dtype, guidance_scale: float) -> str:
    """What to change after NaN/inf, from what the run actually used: the compute dtype and the cfg.
    Never "run in fp32" for a run that was in fp32."""
    name = str(dtype).replace("torch.", "")
    advice = []
    if guidance_scale > CFG_USUAL_MAX:
        advice.append(f"the guidance scale {guidance_scale:g} multiplies the cond/uncond difference that many "
                      f"times: use a value near 7.5 (command line: --cfg)")
    if dtype == torch.float16:
        advice.append("float16 overflows past 65504: run in fp32 or bf16 (command line: --precision)")
    elif dtype == torch.bfloat16 and not advice:
        advice.append("computed in bfloat16: try fp32 (command line: --precision); else the weights may be damaged")
    if not advice:
        advice.append(f"computed in {name} with guidance scale {guidance_scale:g}: the weights or inputs "
                      f"are likely damaged")
    return "; ".join(advice)


class _FiniteCheck:
    """One step's per-window finite flags and its new latents' flag, read without stalling the device:
    on CUDA they are copied to pinned host memory without blocking and looked at once that copy is done
    (a step or two later on a busy GPU); the error still names the step (and window) where NaN/inf
    appeared."""

    def __init__(self, flags: torch.Tensor, latents_finite: torch.Tensor, windows, step: int, num_steps: int,
                 advice: str):
        self.windows, self.step, self.num_steps, self.advice = windows, step, num_steps, advice
        self.event = None
        flags = torch.cat([flags, latents_finite.reshape(1)])  # last entry: the step's latents
        if flags.device.type == "cuda":
            self.host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            self.host.copy_(flags, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = flags

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def raise_if_non_finite(self) -> None:
        if self.event is not None:
            self.event.synchronize()
        flags = self.host
        if flags.device.type == "meta" or bool(flags.all()):  # meta: a shape-only run has no values
            return
        w = int((~flags).nonzero()[0])
        at = f"step {self.step + 1}/{self.num_steps}"
        if w < len(self.windows):
            win = self.windows[w]
            where = (f"the denoising produced non-finite values (NaN/inf) at {at}, window {w + 1}/{len(self.windows)} "
                     f"(driving frames {win[0]}..{win[-1]}), in the networks' noise prediction")
        else:
            where = (f"the latents became non-finite (NaN/inf) at {at}, in the guidance and DDIM update "
                     f"(the networks' predictions were finite)")
        raise NonFiniteLatents(f"{where}: {self.advice}")


@dataclass
class SamplerHooks:
    """Optional callbacks, all called from the sampling thread.

    progress(step, num_steps, window, num_windows): after each window (0-based ``step``/``window``).
    preview(step, num_steps, x0, latents): after each step; ``x0`` is the DDIM clean-latent estimate and
        ``latents`` the new latents, both (1, 4, N, h, w) float32 of frames 1..N (do not modify them).
    should_cancel() -> bool: checked before every window (batch); True raises :class:`SamplingCancelled`.
    """
    progress: Optional[Callable[[int, int, int, int], None]] = None
    preview: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None
    should_cancel: Optional[Callable[[], bool]] = None


@dataclass
class InjectedRandomness:
    """Parity mode: replace the sampler's random draws by recorded ones (e.g. the official goldens).

    blur_keep_mask: (1, 4, N+1, h, w) bool/0-1, 1 = keep the un-blurred reference.
    init_noise: (1, 4, N+1, h, w) float; frame 0 is ignored (reset to the reference).
    window_offsets: one context-window offset per executed step.
    Anything left ``None`` is drawn from the run's generator as usual.
    """
    blur_keep_mask: Optional[torch.Tensor] = None
    init_noise: Optional[torch.Tensor] = None
    window_offsets: Optional[Sequence[int]] = None


@dataclass
class Conditioning:
    """Everything constant over a run, validated and laid out for the window calls."""
    ref_latent: torch.Tensor            # (1, 4, 1, h, w) float32 on device
    unet_context: torch.Tensor          # (B, T+K, D): [uncond; cond] (B=2) or [cond] (B=1)
    control_text: torch.Tensor          # (B', T, D): text per ControlNet half; B'=1 when halves are shared
    num_frames: int
    do_cfg: bool
    guidance_scale: float
    controls: list = field(default_factory=list)  # [(controlnet, ControlClip, strength)]
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")

    @property
    def batch(self) -> int:
        return self.unet_context.shape[0]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _warn_if_training(name: str, model) -> None:
    if isinstance(model, torch.nn.Module) and model.training:
        warnings.warn(f"{name} is in training mode (dropout active); call .eval() before sampling. "
                      "The sampler never changes a model's mode.", UserWarning, stacklevel=4)


class _ControlCache:
    """Per-step store of summed ControlNet residuals for frames that later windows use again.
    An entry is dropped after the frame's last use, so it holds at most about two overlaps."""

    def __init__(self, uses: dict):
        self.remaining = dict(uses)
        self.store = {}

    def update(self, fresh: dict, used: Sequence[int]):
        for i in used:
            self.remaining[i] = self.remaining.get(i, 1) - 1
        for i, res in fresh.items():
            if self.remaining.get(i, 0) > 0:
                self.store[i] = res
        for i in [i for i in self.store if self.remaining.get(i, 0) <= 0]:
            del self.store[i]


class _DeviceIndices:
    """Window frame indices as long tensors on the compute device, made once per distinct window.

    A host tensor used on a GPU is a host-to-device copy, blocking unless pinned; :meth:`prefetch`
    moves every window of a run in one pinned, non-blocking copy before the step loop."""

    def __init__(self):
        self._store = {}

    def prefetch(self, windows, device) -> None:
        device = torch.device(device)
        todo = [w for w in dict.fromkeys(tuple(w) for w in windows) if (w, device) not in self._store]
        if not todo:
            return
        flat = _to_device(torch.tensor([i for w in todo for i in w], dtype=torch.long), device)
        for w, part in zip(todo, flat.split([len(w) for w in todo])):
            self._store[(w, device)] = part

    def __call__(self, window, device) -> torch.Tensor:
        key = (tuple(window), torch.device(device))
        if key not in self._store:
            self.prefetch([key[0]], key[1])
        return self._store[key]


class XDynaSampler:
    """Runs the official X-Dyna denoising loop with the given networks (see module docstring)."""

    def __init__(self, unet: Callable, pose_controlnet: Optional[Callable] = None,
                 face_controlnet: Optional[Callable] = None, scheduler: Optional[DDIMScheduler] = None):
        self.unet = unet
        self.pose_controlnet = pose_controlnet
        self.face_controlnet = face_controlnet
        self.scheduler = scheduler or DDIMScheduler()
        self._indices = _DeviceIndices()

    # ------------------------------------------------------------------ conditions
    def prepare(self, ref_latent: torch.Tensor, text_cond: torch.Tensor, text_uncond: torch.Tensor,
                image_tokens_cond: torch.Tensor, image_tokens_uncond: torch.Tensor, *,
                pose_cond=None, face_cond=None, num_frames: Optional[int] = None,
                guidance_scale: float = 7.5, pose_strength: float = 1.0, face_strength: float = 1.0,
                device=None, dtype: torch.dtype = torch.float32) -> Conditioning:
        """Validate the inputs and build the run's constant conditioning.

        ``pose_cond`` (N,3,H,W) / ``face_cond`` (N,6,H,W = local then global): raw frames, uint8 or
        float in [0,1], or :class:`ControlClip` objects; ``H, W`` must be 8x the latent size.
        ``num_frames`` is needed only when no control clip is given.
        """
        device = torch.device(device) if device is not None else ref_latent.device
        _check(isinstance(ref_latent, torch.Tensor) and ref_latent.ndim == 5 and ref_latent.shape[0] == 1
               and ref_latent.shape[2] == 1,
               f"ref_latent must have shape (1, C, 1, h, w), got {tuple(getattr(ref_latent, 'shape', ()))}")
        h, w = ref_latent.shape[-2:]
        for name, t in (("text_cond", text_cond), ("text_uncond", text_uncond),
                        ("image_tokens_cond", image_tokens_cond), ("image_tokens_uncond", image_tokens_uncond)):
            _check(isinstance(t, torch.Tensor) and t.ndim == 3 and t.shape[0] == 1,
                   f"{name} must have shape (1, tokens, dim), got {tuple(getattr(t, 'shape', ()))}")
        _check(text_cond.shape == text_uncond.shape,
               f"text_cond {tuple(text_cond.shape)} and text_uncond {tuple(text_uncond.shape)} must match")
        _check(image_tokens_cond.shape == image_tokens_uncond.shape,
               f"image_tokens_cond {tuple(image_tokens_cond.shape)} and image_tokens_uncond "
               f"{tuple(image_tokens_uncond.shape)} must match")
        _check(image_tokens_cond.shape[-1] == text_cond.shape[-1],
               f"image tokens dim {image_tokens_cond.shape[-1]} != text dim {text_cond.shape[-1]}")
        gs = float(guidance_scale)
        _check(gs == gs and abs(gs) != float("inf"), f"guidance_scale must be finite, got {guidance_scale}")

        controls = []
        for name, net, clip, make, strength in (
                ("pose", self.pose_controlnet, pose_cond, pose_clip, pose_strength),
                ("face", self.face_controlnet, face_cond, face_clip, face_strength)):
            if clip is None and net is None:
                continue
            _check(clip is not None, f"a {name} ControlNet was given but no {name}_cond frames")
            _check(net is not None, f"{name}_cond frames were given but no {name} ControlNet")
            clip = clip if isinstance(clip, ControlClip) else make(clip)
            clip.prepare_device(device)  # its min/max on the device now, not inside the step loop
            _check(clip.size == (8 * h, 8 * w),
                   f"{name} control frames are {clip.size[0]}x{clip.size[1]} px but the latents "
                   f"({h}x{w}) need {8 * h}x{8 * w} px")
            strength = float(strength)
            _check(strength == strength and abs(strength) != float("inf"),
                   f"{name}_strength must be finite, got {strength}")
            if strength != 0.0:  # a zero-strength control adds exactly zero: skip its network
                _warn_if_training(f"{name} ControlNet", net)
                controls.append((net, clip, strength))
            if num_frames is None:
                num_frames = clip.num_frames
            _check(clip.num_frames == num_frames,
                   f"{name} control clip has {clip.num_frames} frames, expected {num_frames}")
        _check(num_frames is not None and int(num_frames) == num_frames and num_frames >= 1,
               f"num_frames must be a positive integer (or give a control clip), got {num_frames!r}")
        _warn_if_training("unet", self.unet)

        do_cfg = gs > 1.0
        kw = dict(device=device, dtype=dtype)
        ctx_c = torch.cat([text_cond, image_tokens_cond], dim=1).to(**kw)
        if do_cfg:
            ctx_u = torch.cat([text_uncond, image_tokens_uncond], dim=1).to(**kw)
            unet_context = torch.cat([ctx_u, ctx_c])
            # equal text contexts => identical ControlNet inputs for both halves: run once, reuse (exact)
            shared = torch.equal(text_cond, text_uncond)
            control_text = text_cond.to(**kw) if shared else torch.cat([text_uncond, text_cond]).to(**kw)
        else:
            unet_context = ctx_c
            control_text = text_cond.to(**kw)
        return Conditioning(ref_latent=ref_latent.to(device=device, dtype=torch.float32),
                            unet_context=unet_context, control_text=control_text, num_frames=int(num_frames),
                            do_cfg=do_cfg, guidance_scale=gs, controls=controls, dtype=dtype, device=device)

    # ------------------------------------------------------------------ one step
    def _control_residuals(self, cond: Conditioning, frames: torch.Tensor, windows, t, cache=None):
        """Summed ControlNet residuals for a batch of windows, laid out like the UNet batch.

        ``frames``: (k, 4, F, h, w) noisy window latents (model dtype). Returns (down list, mid), each
        (B*k, C, 1+F, ., .) with a zero frame 0, or (None, None) without controls.

        ``cache`` (a :class:`_ControlCache` for the current step) holds the summed residuals of
        frames that a later window of the same step uses again: a ControlNet sees one frame at a
        time and the latents only change between steps, so each frame is computed once per step.
        """
        if not cond.controls:
            return None, None
        k, c, f, h, w = frames.shape
        flat_idx = [i for win in windows for i in win]
        flat = frames.permute(0, 2, 1, 3, 4).reshape(k * f, c, h, w)
        cache = cache if cache is not None else _ControlCache({})
        first_pos = {}
        for pos, i in enumerate(flat_idx):
            if i not in cache.store and i not in first_pos:
                first_pos[i] = pos
        todo = list(first_pos)
        halves = cond.control_text.shape[0]          # 1 (shared/no CFG) or 2 (uncond, cond)
        fresh = {}
        if todo:
            # basic indexing + stack: a list index would be a host tensor copied to the device
            sample = torch.stack([flat[first_pos[i]] for i in todo]).repeat(halves, 1, 1, 1)
            m = len(todo)
            text = cond.control_text.repeat_interleave(m, dim=0)
            total = None                             # 12 down residuals + mid, summed over controls
            for net, clip, strength in cond.controls:
                image = clip.window(todo, device=cond.device, dtype=cond.dtype)
                if halves == 2 and hasattr(net, "embed_condition"):
                    # both halves see the same images: embed them once (the embedding ignores t and text)
                    emb = net.embed_condition(image)
                    down, mid = net(sample, t, text, cond_embedding=torch.cat([emb, emb]))
                else:
                    down, mid = net(sample, t, text, controlnet_cond=image.repeat(halves, 1, 1, 1))
                res = list(down) + [mid]
                if strength != 1.0:
                    res = [r * strength for r in res]
                total = res if total is None else [a + b for a, b in zip(total, res)]
            # per frame: list of 13 tensors (halves, C, ., .)
            for j, i in enumerate(todo):
                fresh[i] = [r.view(halves, m, *r.shape[1:])[:, j] for r in total]
        per_frame = [fresh[i] if i in fresh else cache.store[i] for i in flat_idx]
        cache.update(fresh, flat_idx)
        out = []
        for level in range(len(per_frame[0])):
            r = torch.stack([pf[level] for pf in per_frame], dim=1)       # (halves, k*F, C, ., .)
            r = r.reshape(halves * k, f, *r.shape[2:]).permute(0, 2, 1, 3, 4)
            r = torch.cat([torch.zeros_like(r[:, :, :1]), r], dim=2)
            if cond.do_cfg and halves == 1:
                r = torch.cat([r, r])                    # the same residuals for uncond and cond
            out.append(r)
        return out[:-1], out[-1]

    def _window_eps(self, cond: Conditioning, latents: torch.Tensor, windows, t, cache=None) -> torch.Tensor:
        """UNet eps for a batch of equally long windows: (B, k, 4, F, h, w) float32."""
        k, f = len(windows), len(windows[0])
        idx = torch.cat([self._indices(win, latents.device) for win in windows])
        frames = latents[0].index_select(1, idx).reshape(latents.shape[1], k, f, *latents.shape[-2:])
        frames = frames.permute(1, 0, 2, 3, 4).to(cond.dtype)                      # (k, 4, F, h, w)
        ref = cond.ref_latent.to(cond.dtype).expand(k, -1, -1, -1, -1)
        sample = torch.cat([ref, frames], dim=2).repeat(cond.batch, 1, 1, 1, 1)    # (B*k, 4, 1+F, h, w)
        context = cond.unet_context.repeat_interleave(k, dim=0)
        down, mid = self._control_residuals(cond, frames, windows, t, cache)
        eps = self.unet(sample, t, context, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid)
        if tuple(eps.shape) != tuple(sample.shape):
            raise RuntimeError(f"unet returned shape {tuple(eps.shape)}, expected {tuple(sample.shape)}")
        return eps[:, :, 1:].float().reshape(cond.batch, k, *eps.shape[1:2], f, *eps.shape[-2:])

    def predict_noise(self, cond: Conditioning, latents: torch.Tensor, t, windows,
                      window_batch_size: int = 1, hooks: Optional[SamplerHooks] = None,
                      step: int = 0, num_steps: int = 1) -> torch.Tensor:
        """Window-averaged, guided eps for latents (1, 4, N, h, w) at timestep ``t`` (an int, or a
        0-d tensor on the latents' device as the step loop passes it)."""
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(int(t), device=latents.device)
        with torch.no_grad():
            return self._predict_noise(cond, latents, t, windows, window_batch_size,
                                       hooks or SamplerHooks(), step, num_steps)

    def _predict_noise(self, cond, latents, t, windows, window_batch_size, hooks, step, num_steps):
        n = cond.num_frames
        _check(tuple(latents.shape) == (1, cond.ref_latent.shape[1], n) + tuple(cond.ref_latent.shape[-2:]),
               f"latents must have shape (1, C, N={n}, h, w) matching the reference latent, "
               f"got {tuple(latents.shape)}")
        acc = torch.zeros((cond.batch,) + tuple(latents.shape[1:]), device=latents.device, dtype=torch.float32)
        # Coverage and per-frame counts are known from the windows alone: no device round trip.
        uses = {}
        for win in windows:
            for i in win:
                uses[i] = uses.get(i, 0) + 1
        missing = [i for i in range(n) if i not in uses]
        if missing:
            raise RuntimeError(f"context windows do not cover frames {missing}")
        # per-frame window counts, made on the device (small integers: exact in float32)
        all_idx = torch.cat([self._indices(win, latents.device) for win in windows])
        count = torch.zeros(n, device=latents.device, dtype=torch.float32).index_add_(
            0, all_idx, torch.ones(all_idx.shape, device=latents.device, dtype=torch.float32))
        cache = _ControlCache(uses)
        finite = []  # per window, kept on the device until the step's end
        for start in range(0, len(windows), window_batch_size):
            if hooks.should_cancel is not None and hooks.should_cancel():
                raise SamplingCancelled(
                    f"sampling cancelled at step {step + 1}/{num_steps}, window {start + 1}/{len(windows)}")
            batch = windows[start:start + window_batch_size]
            eps = self._window_eps(cond, latents, batch, t, cache)
            finite.append(torch.isfinite(eps).transpose(0, 1).reshape(len(batch), -1).all(dim=1))
            for j, win in enumerate(batch):
                # indices inside one window are distinct, so this is a plain (deterministic) add
                idx = self._indices(win, latents.device)
                acc[:, :, idx] += eps[:, j]
                if hooks.progress is not None:
                    hooks.progress(step, num_steps, start + j, len(windows))
        self.finite_flags = torch.cat(finite)  # looked at by sample() without a sync (_FiniteCheck)
        eps = acc / count.view(1, 1, n, 1, 1)
        if not cond.do_cfg:
            return eps
        eps_u, eps_c = eps.chunk(2)
        return eps_u + cond.guidance_scale * (eps_c - eps_u)

    # ------------------------------------------------------------------ full run
    def sample(self, cond: Conditioning, settings: SamplingSettings,
               generator: Optional[torch.Generator] = None, *, strength: float = 1.0,
               window_batch_size: int = 1, hooks: Optional[SamplerHooks] = None,
               injected: Optional[InjectedRandomness] = None) -> torch.Tensor:
        """Denoise and return the latents of frames 1..N, (1, 4, N, h, w) float32 on the cond device.

        Uses ``settings.steps`` and the context window settings; every random draw comes from
        ``generator`` (made from the seed by :func:`xdyna_core.job.run_sampling`)."""
        hooks = hooks or SamplerHooks()
        injected = injected or InjectedRandomness()
        steps, context_length, context_overlap = settings.steps, settings.context_length, settings.context_overlap
        validate_context(context_length, context_overlap)
        _check(int(window_batch_size) == window_batch_size and window_batch_size >= 1,
               f"window_batch_size must be a positive integer, got {window_batch_size!r}")
        timesteps = self.scheduler.timesteps(steps, strength)
        fully_injected = (injected.blur_keep_mask is not None and injected.init_noise is not None
                          and injected.window_offsets is not None)
        _check(generator is not None or fully_injected, "give a torch.Generator (every random draw comes from it)")
        n, ref = cond.num_frames, cond.ref_latent
        shape = (1, ref.shape[1], n + 1) + tuple(ref.shape[-2:])
        dev = cond.device

        # random draws, in a fixed order: blur keep-mask, initial noise, window offsets
        keep = injected.blur_keep_mask
        keep = draw_blur_keep_mask(shape, generator) if keep is None else keep
        noise = injected.init_noise
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        offsets = injected.window_offsets
        if offsets is None:
            offsets = torch.randint(0, context_length, (len(timesteps),), generator=generator,
                                    device=generator.device).tolist()
        offsets = [int(o) for o in offsets]
        _check(len(offsets) == len(timesteps),
               f"window_offsets must have one value per step ({len(timesteps)}), got {len(offsets)}")

        mixed = blurred_repeated_latents(ref, n, keep.to(dev))
        latents = noised_initial_latents(self.scheduler, mixed, noise.to(dev), timesteps[0])[:, :, 1:]
        del keep, noise, mixed

        num_steps = len(timesteps)
        # Everything the loop needs on the device goes there now (one copy each), so the loop itself
        # never waits on a host/device transfer.
        step_windows = [context_windows(n, context_length, context_overlap, o) for o in offsets]
        self._indices.prefetch([w for ws in step_windows for w in ws], dev)
        t_device = _to_device(torch.tensor(timesteps, dtype=torch.long), dev)
        alpha_bars = _to_device(self.scheduler.step_alpha_bars(timesteps, steps), dev)
        checks = []  # NaN/inf flags of finished steps, read once the device has them
        advice = non_finite_advice(cond.dtype, cond.guidance_scale)
        with torch.no_grad():
            for s in range(num_steps):
                windows = step_windows[s]
                eps = self.predict_noise(cond, latents, t_device[s], windows, window_batch_size, hooks, s, num_steps)
                latents, x0 = self.scheduler.step(eps, timesteps[s], latents, steps, alpha_bars=alpha_bars[s])
                checks.append(_FiniteCheck(self.finite_flags, torch.isfinite(latents).all(), windows, s, num_steps,
                                           advice))
                while checks and checks[0].ready():
                    checks.pop(0).raise_if_non_finite()
                if hooks.preview is not None:
                    hooks.preview(s, num_steps, x0, latents)
            for check in checks:
                check.raise_if_non_finite()
        return latents


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    """Host tensor -> device; through pinned memory and without blocking when the device is CUDA."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def sample_video(unet: Callable, ref_latent: torch.Tensor, text_cond: torch.Tensor,
                 text_uncond: torch.Tensor, image_tokens_cond: torch.Tensor,
                 image_tokens_uncond: torch.Tensor, settings: SamplingSettings,
                 generator: Optional[torch.Generator] = None, *, pose_controlnet: Optional[Callable] = None,
                 face_controlnet: Optional[Callable] = None, pose_cond=None, face_cond=None,
                 num_frames: Optional[int] = None, strength: float = 1.0, window_batch_size: int = 1,
                 device=None, dtype: torch.dtype = torch.float32, scheduler: Optional[DDIMScheduler] = None,
                 hooks: Optional[SamplerHooks] = None,
                 injected: Optional[InjectedRandomness] = None) -> torch.Tensor:
    """One-call X-Dyna sampling with ``settings`` taken whole; returns latents (1, 4, N, h, w) of frames
    1..N (float32).

    ``settings.cfg <= 1`` runs without classifier-free guidance (cond only, batch of 1); the official
    code crashes below 1 and at exactly 1.0 computes ``u + 1*(c - u)``, equal up to rounding.
    """
    sampler = XDynaSampler(unet, pose_controlnet, face_controlnet, scheduler)
    cond = sampler.prepare(ref_latent, text_cond, text_uncond, image_tokens_cond, image_tokens_uncond,
                           pose_cond=pose_cond, face_cond=face_cond, num_frames=num_frames,
                           guidance_scale=settings.cfg, pose_strength=settings.pose_strength,
                           face_strength=settings.face_strength, device=device, dtype=dtype)
    return sampler.sample(cond, settings, generator, strength=strength, window_batch_size=window_batch_size,
                          hooks=hooks, injected=injected)


# Scaled SD latents stay within a few units; far past this the VAE decoder was never trained.
LATENT_USUAL_MAX = 100.0


def check_decoded(frames: torch.Tensor, latents: torch.Tensor, dtype: torch.dtype, guidance_scale: float) -> None:
    """NonFiniteLatents naming the first decoded frame with NaN/inf (frames: frame-major, (N, ...)) and
    why, when the sampled latents were finite (a non-finite latent stops the sampler at its step)."""
    bad = ~torch.isfinite(frames.reshape(frames.shape[0], -1)).all(dim=1)
    if not bool(bad.any()):
        return
    first = int(bad.nonzero()[0])
    peak = float(latents.abs().max())
    why = (f"the sampled latents were finite but reach |{peak:.3g}|, far outside what the VAE decodes "
           f"(usually below {LATENT_USUAL_MAX:g}), so the decoder overflowed" if peak > LATENT_USUAL_MAX else
           f"the sampled latents were finite and in range (largest |{peak:.3g}|), so the VAE decoder itself "
           f"overflowed in {str(dtype).replace('torch.', '')}")
    raise NonFiniteLatents(f"the decoded frames are non-finite (NaN/inf) from frame {first + 1}/{frames.shape[0]}: "
                           f"{why}: {non_finite_advice(dtype, guidance_scale)}")


def decode_chunk(device) -> int:
    """Frames per VAE decode call. 1 on the CPU: one frame already keeps every core busy, and a
    batch only pushes the decoder's activations out of the caches (bench/bench_decode.py, 2 cores,
    16 frames 128x128 fp32: 4 frames per call took 1.17x and 8 frames 1.20x the time of 1).
    4 elsewhere: an accelerator needs the batch to fill."""
    return 1 if torch.device(device).type == "cpu" else 4


def decode_latents(vae_decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, *,
                   chunk: int = 1, scaling_factor: float = VAE_SCALING_FACTOR, device=None,
                   dtype: Optional[torch.dtype] = None, output_device="cpu", layout: str = "bcfhw",
                   should_cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """Decode latents (1, 4, N, h, w) a few frames at a time into a float32 video in [0, 1].

    ``vae_decode(z (n, 4, h, w)) -> (n, 3, H, W)`` in [-1, 1] gets ``latents * (1 / scaling_factor)``
    (the official order). ``layout``: ``"bcfhw"`` -> (1, 3, N, H, W) (official), ``"nhwc"`` ->
    (N, H, W, 3) (ComfyUI IMAGE). Only ``chunk`` frames are on the decode device at a time.
    """
    _check(latents.ndim == 5 and latents.shape[0] == 1,
           f"latents must have shape (1, C, N, h, w), got {tuple(latents.shape)}")
    _check(int(chunk) == chunk and chunk >= 1, f"chunk must be a positive integer, got {chunk!r}")
    _check(layout in ("bcfhw", "nhwc"), f"layout must be 'bcfhw' or 'nhwc', got {layout!r}")
    device = torch.device(device) if device is not None else latents.device
    output_device = torch.device(output_device)
    # GPU -> host: the frames land in pinned memory through queued copies, waited for once at the
    # end, so decoding the next chunk never waits for the previous chunk's transfer.
    async_copy = device.type == "cuda" and output_device.type == "cpu"
    n = latents.shape[2]
    out = None  # frame-major: (N, 3, H, W) for "bcfhw" (permuted at the end), (N, H, W, 3) for "nhwc"
    with torch.no_grad():
        for a in range(0, n, chunk):
            if should_cancel is not None and should_cancel():
                raise SamplingCancelled(f"decoding cancelled at frame {a + 1}/{n}")
            z = latents[0, :, a:a + chunk].permute(1, 0, 2, 3).to(device)
            z = (1 / scaling_factor) * z
            if dtype is not None:
                z = z.to(dtype)
            img = vae_decode(z)
            _check(img.ndim == 4 and img.shape[0] == z.shape[0] and img.shape[1] == 3,
                   f"vae_decode must return (n, 3, H, W), got {tuple(img.shape)}")
            img = (img.float() / 2 + 0.5).clamp(0, 1)
            if layout == "nhwc":
                img = img.permute(0, 2, 3, 1)
            if out is None:
                out = torch.empty((n,) + tuple(img.shape[1:]), dtype=torch.float32, device=output_device,
                                  pin_memory=async_copy)
            out[a:a + chunk].copy_(img, non_blocking=async_copy)
        if async_copy:
            torch.cuda.current_stream(device).synchronize()
    return out.permute(1, 0, 2, 3).unsqueeze(0).contiguous() if layout == "bcfhw" else out
