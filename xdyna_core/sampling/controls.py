"""Control-image clips (pose, S-Face) and the official clip-wide min-max normalisation.

Officially every control clip goes ``uint8 -> /255 -> 2x-1`` and is then min-max normalised over the
**whole clip** (all frames, channels and pixels together): ``(x - min) / (max - min)``. S-Face is two
clips, the local (eyes + mouth patches) and the global (face crop) images, normalised separately and
concatenated on channels (local first) into 6 channels.

To keep memory flat in video length, a :class:`ControlClip` keeps the raw frames where they are
(normally CPU, uint8) and only normalises the frames of one context window at a time, on the compute
device. The per-element arithmetic is the official one, and the clip minimum / maximum are those of the
transformed values (the transform is monotonic, so they are the transformed raw min / max), hence a
window slice is bit-identical to slicing the fully normalised clip.

Constant clips (the official code divides 0 by 0 and produces NaN):

* pose: a constant pose clip (typically all black: no person was detected in any frame) carries no
  motion to transfer, so it is rejected with a ``ValueError``;
* S-Face: a constant half (typically all black: no face detected anywhere, or no eye/mouth patch in
  any frame) is mapped to zeros, i.e. exactly the value a black pixel gets inside any normal clip, and
  a ``UserWarning`` is emitted. The face ControlNet then sees "no face" frames, as it does for the
  face-less frames of an ordinary clip.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import XDynaError


class ConstantControlClipError(XDynaError, ValueError):
    """A control clip has the same value everywhere, so min-max normalisation is undefined."""


def _to_unit(frames: torch.Tensor) -> torch.Tensor:
    """Raw frames -> official ``x/255*2-1`` range, in float32 (uint8) or as given (float in [0,1])."""
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32) / 255.0 * 2.0 - 1.0
    return frames * 2.0 - 1.0


class ControlClip:
    """A control clip of N frames, ``(N, C, H, W)`` raw pixels, normalised lazily per window.

    ``frames``: uint8 in [0, 255] or floating in [0, 1] (pixel / 255), channels first.
    ``groups``: channel group sizes normalised independently (pose ``(3,)``, S-Face ``(3, 3)``).
    ``constant``: what to do with a constant group: ``"error"`` (raise) or ``"zeros"`` (warn, use 0).
    """

    def __init__(self, frames: torch.Tensor, groups=(3,), name: str = "control", constant: str = "error"):
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
            raise ValueError(f"{name} frames must be a tensor of shape (N, C, H, W), got "
                             f"{type(frames).__name__} {tuple(getattr(frames, 'shape', ()))}")
        if frames.shape[1] != sum(groups):
            raise ValueError(f"{name} frames must have {sum(groups)} channels (N, {sum(groups)}, H, W), "
                             f"got shape {tuple(frames.shape)}")
        if frames.shape[0] < 1:
            raise ValueError(f"{name} clip has no frames")
        if not (frames.dtype == torch.uint8 or frames.is_floating_point()):
            raise ValueError(f"{name} frames must be uint8 (0..255) or float (0..1), got {frames.dtype}")
        if frames.is_floating_point():
            if not torch.isfinite(frames).all():
                raise ValueError(f"{name} frames contain NaN or inf")
            lo, hi = float(frames.min()), float(frames.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"float {name} frames must be in [0, 1] (pixel/255), got range [{lo}, {hi}]")
        if constant not in ("error", "zeros"):
            raise ValueError(f"constant must be 'error' or 'zeros', got {constant!r}")
        self.frames = frames
        self.name = name
        self.groups = tuple(int(g) for g in groups)
        # per group: (min, max) of the transformed clip, or None for a constant group (-> zeros)
        self._ranges: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self._device_ranges: dict = {}  # device -> self._ranges there (see prepare_device)
        start = 0
        for gi, g in enumerate(self.groups):
            part = frames[:, start:start + g]
            lo, hi = _to_unit(part.min().reshape(1)), _to_unit(part.max().reshape(1))
            if torch.equal(lo, hi):
                what = f"{name} clip" if len(self.groups) == 1 else f"{name} clip channel group {gi}"
                msg = (f"{what} is constant (every pixel = {float(part.flatten()[0])}), e.g. all black because "
                       "nothing was detected in any frame; clip-wide min-max normalisation is undefined")
                if constant == "error":
                    raise ConstantControlClipError(msg)
                warnings.warn(msg + "; using an all-zero (black) control for it", UserWarning, stacklevel=3)
                self._ranges.append(None)
            else:
                self._ranges.append((lo, hi))
            start += g

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.frames.shape[-2:])

    def prepare_device(self, device) -> None:
        """Copy the clip-wide min/max to ``device`` once (a sampler calls this before its loop)."""
        device = torch.device(device) if device is not None else self.frames.device
        if device not in self._device_ranges:
            self._device_ranges[device] = [None if r is None else tuple(v.to(device) for v in r)
                                           for r in self._ranges]

    def window(self, indices, device=None, dtype=torch.float32) -> torch.Tensor:
        """Normalised frames ``indices`` as ``(len(indices), C, H, W)`` in [0, 1] on ``device``."""
        device = torch.device(device) if device is not None else self.frames.device
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        raw = self.frames.index_select(0, idx.to(self.frames.device))
        if raw.device != device:
            # host frames -> GPU from pinned memory: the copy is queued, the host does not wait
            if device.type == "cuda" and raw.device.type == "cpu":
                raw = raw.pin_memory()
            raw = raw.to(device, non_blocking=True)
        self.prepare_device(device)
        out, start = [], 0
        for g, rng in zip(self.groups, self._device_ranges[device]):
            part = raw[:, start:start + g]
            if rng is None:
                out.append(torch.zeros(part.shape, device=part.device, dtype=torch.float32))
            else:
                lo, hi = rng
                x = _to_unit(part).to(torch.float32)
                out.append((x - lo) / (hi - lo))
            start += g
        x = out[0] if len(out) == 1 else torch.cat(out, dim=1)
        return x.to(dtype)

    def normalized(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The whole normalised clip (for inspection and tests; the sampler uses :meth:`window`)."""
        return self.window(range(self.num_frames), device=device, dtype=dtype)


def pose_clip(frames: torch.Tensor) -> ControlClip:
    """Pose clip ``(N, 3, H, W)``; a constant clip raises :class:`ConstantControlClipError`."""
    return ControlClip(frames, groups=(3,), name="pose", constant="error")


def face_clip(frames: torch.Tensor) -> ControlClip:
    """S-Face clip ``(N, 6, H, W)`` = cat(local, global); a constant half becomes zeros (warning)."""
    return ControlClip(frames, groups=(3, 3), name="S-Face", constant="zeros")


def hwc_to_chw(frames) -> torch.Tensor:
    """(N, H, W, C) numpy/tensor frames -> (N, C, H, W) tensor, dtype kept."""
    t = torch.as_tensor(frames)
    if t.ndim != 4:
        raise ValueError(f"expected frames of shape (N, H, W, C), got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()
