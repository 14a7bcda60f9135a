"""Phase-wise model placement: the low-memory ("8 GB budget") mode of the standalone runner.

An X-Dyna job has three phases that use disjoint networks: encoding (CLIP vision + Resampler, the
VAE encoder, the text encoder), sampling (UNet + ControlNets) and decoding (the VAE decoder). In
fp16 the sampling networks hold 3.8 GiB of weights (UNet 2.46, ControlNets 0.67 each) and the
encoders another 1.6 GiB (CLIP ViT-H 1.18, text 0.23, VAE 0.16, Resampler 0.06); keeping only the
current phase's networks on the GPU (the rest in CPU memory) is the 8 GB budget mode.
Moves are lazy: a network already where it should be is not touched, so ``high`` mode (everything
resident) goes through the same calls at no cost. Inside ComfyUI, ComfyUI's own model management
does this job instead.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch

MEMORY_MODES = ("auto", "high", "low")
LOW_MEMORY_BELOW_GIB = 12.0   # "auto" picks "low" on GPUs with less total memory than this


def resolve_memory_mode(mode: str, device: torch.device) -> str:
    """'auto' -> 'low' on CUDA devices under LOW_MEMORY_BELOW_GIB of total memory, else 'high'."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {MEMORY_MODES}, got {mode!r}")
    device = torch.device(device)
    if device.type != "cuda":
        return "high"        # nothing to gain: offloading would move weights from CPU memory to itself
    if mode != "auto":
        return mode
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return "low" if total < LOW_MEMORY_BELOW_GIB else "high"


class PhasePlacement:
    """Moves registered networks between the compute device and an offload device per phase."""

    def __init__(self, device, offload_device="cpu", low_memory: bool = True):
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.low_memory = low_memory
        self.modules: Dict[str, torch.nn.Module] = {}
        self.where: Dict[str, torch.device] = {}
        self.moves = []      # (module name, device) in order: what a test or a log can inspect
        self.absent = set()  # registered as None (e.g. no S-Face ControlNet): ignored by use()

    def register(self, name: str, module: Optional[torch.nn.Module]) -> None:
        if module is None:
            self.absent.add(name)
            return
        self.modules[name] = module
        self.where[name] = _device_of(module)

    def use(self, names: Iterable[str]) -> None:
        """Make the named networks resident on the compute device; in low-memory mode move every
        other registered network to the offload device first (so the peak never holds both)."""
        names = list(names)
        unknown = [n for n in names if n not in self.modules and n not in self.absent]
        if unknown:
            raise KeyError(f"networks {unknown} are not registered (known: {sorted(self.modules)})")
        wanted = [n for n in names if n in self.modules]
        if self.low_memory:
            for name in self.modules:
                if name not in wanted:
                    self._move(name, self.offload_device)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()      # hand freed blocks back before the next phase allocates
        for name in wanted:
            self._move(name, self.device)

    def resident(self):
        return sorted(n for n, d in self.where.items() if d == self.device)

    def _move(self, name: str, device: torch.device) -> None:
        if self.where[name] == device:
            return
        self.modules[name].to(device)
        self.where[name] = device
        self.moves.append((name, str(device)))


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")
