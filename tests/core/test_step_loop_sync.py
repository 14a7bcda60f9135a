"""The sampler's step loop makes no blocking host/device transfer and never reads a value back.

On a GPU either would stall the host until the device catches up (once per step or per window).
There is no GPU here, so the whole sampler runs on the "meta" device (shapes only) under a
TorchDispatchMode that sees every tensor operation of the step loop (`predict_noise` and the
DDIM step) and records:

* any read-back to the host (`.item()`, `.tolist()`, `bool(t)`, `float(t)`: aten._local_scalar_dense);
* any operation touching a host (CPU) tensor: a host tensor made in the loop and used on the
  device is a host-to-device copy.

The one intended host-to-device transfer is the control clip's frames (they stay in host memory
to keep memory flat in video length): inside `ControlClip.window` host operations are allowed, and
the frames' copy to the device must be non-blocking (from pinned memory when the device is CUDA).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig
from xdyna_core.sampling.controls import ControlClip
from xdyna_core.sampling.pipeline import XDynaSampler
from xdyna_core.sampling.settings import SamplingSettings

COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class HostSyncGuard(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.violations = []
        self.in_control_window = False
        self.control_copies = []   # non_blocking flag of each host -> device copy in ControlClip.window

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.violations.append("read-back to the host (.item()/.tolist()/bool())")
            raise RuntimeError("host read-back inside the step loop")
        out = func(*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        on_host = any(t.device.type == "cpu" for t in tensors)
        to_device = any(t.device.type != "cpu" for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        if self.in_control_window:
            if func in COPIES and on_host and to_device:
                self.control_copies.append(bool(kwargs.get("non_blocking", False)))
        elif on_host:
            self.violations.append(f"{func} on a host tensor")
        return out


def _guarded(fn, guard):
    def run(*a, **kw):
        with guard:
            return fn(*a, **kw)
    return run


def _tiny_nets():
    # one layer per block: the meta device runs Python shape functions, ~1 ms per operation
    ucfg = UNet3DConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1, num_attention_heads=2,
                        cross_attention_dim=32)
    ccfg = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, num_attention_heads=2,
                cross_attention_dim=32, conditioning_embedding_out_channels=(8, 16, 16, 32))
    unet = UNet3DConditionModel(ucfg, device="meta").eval()
    pose = ControlNetModel(ControlNetConfig(**ccfg), device="meta").eval()
    face = ControlNetModel(ControlNetConfig(conditioning_channels=6, **ccfg), device="meta").eval()
    return unet, pose, face


def test_guard_catches_syncs():
    """The detector itself: a read-back and a host tensor used on the device are both caught."""
    guard = HostSyncGuard()
    x = torch.zeros(3, device="meta")
    with guard:
        x + torch.tensor([1.0, 2.0, 3.0]).to("meta")
    assert guard.violations
    guard = HostSyncGuard()
    with pytest.raises(RuntimeError), guard:
        torch.ones(2).sum().item()
    assert guard.violations


def test_step_loop_has_no_host_sync(monkeypatch):
    unet, pose, face = _tiny_nets()
    sampler = XDynaSampler(unet, pose, face)
    g = torch.Generator().manual_seed(0)
    n, h, w, dim = 6, 6, 5, 32
    cond = sampler.prepare(
        torch.randn(1, 4, 1, h, w, generator=g), torch.randn(1, 77, dim, generator=g),
        torch.randn(1, 77, dim, generator=g), torch.randn(1, 16, dim, generator=g),
        torch.randn(1, 16, dim, generator=g),
        pose_cond=torch.randint(0, 256, (n, 3, 8 * h, 8 * w), generator=g, dtype=torch.uint8),
        face_cond=torch.randint(0, 256, (n, 6, 8 * h, 8 * w), generator=g, dtype=torch.uint8),
        device="meta")
    guard = HostSyncGuard()
    window = ControlClip.window

    def marked_window(self, *a, **kw):
        guard.in_control_window = True
        try:
            return window(self, *a, **kw)
        finally:
            guard.in_control_window = False

    monkeypatch.setattr(ControlClip, "window", marked_window)
    monkeypatch.setattr(sampler, "predict_noise", _guarded(sampler.predict_noise, guard))
    monkeypatch.setattr(sampler.scheduler, "step", _guarded(sampler.scheduler.step, guard))
    # 2 steps of 2 windows ([0..3], [3, 4, 5, 0] shifted by the step's offset) in one UNet call each
    latents = sampler.sample(cond, SamplingSettings(steps=2, context_length=4, context_overlap=1),
                             torch.Generator().manual_seed(1), window_batch_size=2)
    assert latents.shape == (1, 4, n, h, w) and latents.device.type == "meta"
    assert not guard.violations, guard.violations[:10]
    # every ControlNet frame batch came from the host once per window batch and control, non-blocking
    assert guard.control_copies and all(guard.control_copies)
