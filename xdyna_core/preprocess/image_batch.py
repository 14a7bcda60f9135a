"""IMAGE batches one frame at a time: uint8 frames read from a float batch on access, batches filled
frame by frame (a float IMAGE for ComfyUI, uint8 numpy for the command line, a quarter of the memory),
and the per-frame callback every frame loop of preprocessing calls (progress bars, cancellation).

Frames are uint8 (H, W, 3) RGB numpy arrays; sizes are (width, height).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from ..pixels import to_uint8
from .keypoints import PoseFrame
from .render import render_pose

OnFrame = Optional[Callable[[int], None]]


def tick(on_frame: OnFrame, i: int) -> None:
    if on_frame is not None:
        on_frame(i)


class ImageBatchFrames(Sequence):
    """uint8 (H, W, 3) frames of an image batch, converted one at a time on access.

    Accepts a torch tensor or numpy array [B, H, W, C] (or one [H, W, C] image) with C = 3, 4
    (alpha dropped) or 1 (grey); float values are 0..1 (:func:`~xdyna_core.pixels.to_uint8`), uint8 is
    taken as is.
    """

    def __init__(self, images, what: str = "images"):
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{what}: expected an IMAGE batch (tensor [B, H, W, 3]), got {type(images).__name__}")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{what}: expected an IMAGE batch of shape [B, H, W, 3], got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError(f"{what}: the batch holds no frames")
        if images.shape[1] < 1 or images.shape[2] < 1:
            raise ValueError(f"{what}: empty frames of shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"{what}: expected float values in 0..1 (or uint8), got {images.dtype}")
        self.images = images
        self.what = what

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height)."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        x = self.images[i].detach().cpu()
        if x.dtype != torch.uint8:
            if not torch.isfinite(x).all():
                raise ValueError(f"{self.what}: frame {i} contains NaN or infinite values")
            x = to_uint8(x)
        if x.shape[-1] == 1:
            x = x.expand(-1, -1, 3)
        return np.ascontiguousarray(x[..., :3].numpy())

    def as_image_batch(self) -> Optional[torch.Tensor]:
        """The input itself when it already is a plain IMAGE batch (float32 [B, H, W, 3] on the CPU),
        so an unchanged output need not be copied; else None."""
        t = self.images
        if t.dtype == torch.float32 and t.shape[-1] == 3 and t.device.type == "cpu":
            return t
        return None


class ImageBatchWriter:
    """Preallocated float32 [n, height, width, 3] batch filled with uint8 frames one at a time."""

    def __init__(self, n: int, width: int, height: int):
        self.tensor = torch.empty((int(n), int(height), int(width), 3), dtype=torch.float32)

    def __setitem__(self, i: int, frame: np.ndarray) -> None:
        f = np.asarray(frame)
        if f.shape != tuple(self.tensor.shape[1:]) or f.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected uint8 {tuple(self.tensor.shape[1:])}, got {f.dtype} {f.shape}")
        out = self.tensor[i]
        out.copy_(torch.from_numpy(np.ascontiguousarray(f)))
        out.div_(255.0)

    @property
    def data(self) -> torch.Tensor:
        return self.tensor


class Uint8Batch:
    """Preallocated uint8 [n, height, width, 3] numpy batch (the command line's frames: a quarter of
    an IMAGE batch's memory); the same interface as :class:`ImageBatchWriter`."""

    def __init__(self, n: int, width: int, height: int):
        self.data = np.empty((int(n), int(height), int(width), 3), dtype=np.uint8)

    def __setitem__(self, i: int, frame: np.ndarray) -> None:
        f = np.asarray(frame)
        if f.shape != self.data.shape[1:] or f.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected uint8 {self.data.shape[1:]}, got {f.dtype} {f.shape}")
        self.data[i] = f


def map_frames(frames: Sequence[np.ndarray], fn: Callable[[np.ndarray], np.ndarray], size: Tuple[int, int],
               on_frame: OnFrame = None, batch=ImageBatchWriter):
    """Batch of ``fn(frame)`` (each a uint8 frame of ``size``): an IMAGE tensor, or uint8 numpy with
    ``batch=Uint8Batch``."""
    out = batch(len(frames), *size)
    for i in range(len(frames)):
        out[i] = fn(frames[i])
        tick(on_frame, i)
    return out.data


def render_batch(poses: Sequence[PoseFrame], size: Tuple[int, int], on_frame: OnFrame = None,
                 batch=ImageBatchWriter):
    """Batch of X-Dyna skeleton renders (a frame without a person is black); see :func:`map_frames`."""
    W, H = size
    out = batch(len(poses), W, H)
    for i, p in enumerate(poses):
        out[i] = render_pose(p, W, H)
        tick(on_frame, i)
    return out.data
