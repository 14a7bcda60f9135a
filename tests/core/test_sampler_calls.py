"""Network work per denoising step: ControlNets see every frame once per step (overlapping
windows and the two CFG halves share it), the UNet runs once per window."""
import pytest
import torch

from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig
from xdyna_core.sampling.context_windows import context_windows
from xdyna_core.sampling.pipeline import sample_video
from xdyna_core.sampling.settings import SamplingSettings


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.items = net, 0, 0
        self.eval()

    def forward(self, sample, *a, **k):
        self.calls += 1
        self.items += sample.shape[0]
        return self.net(sample, *a, **k)


@pytest.fixture(scope="module")
def nets(golden):
    meta, sd = golden("tiny_unet")
    cfg = meta["config"]
    unet = UNet3DConditionModel(UNet3DConfig.from_diffusers_config(cfg["sd_config"], cfg.get("unet_additional_kwargs")))
    unet.load_state_dict(sd)
    meta, sd = golden("tiny_controlnet_pose")
    pose = ControlNetModel(ControlNetConfig.from_diffusers_config(meta["config"]))
    pose.load_state_dict(sd)
    return unet.eval(), pose.eval()


@pytest.mark.parametrize("n", [4, 20, 48])
def test_calls_per_step(nets, n):
    unet, pose = Counting(nets[0]), Counting(nets[1])
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, 32, generator=g)
    tokens = torch.randn(1, 16, 32, generator=g)
    frames = (torch.rand(n, 3, 64, 64, generator=g) * 255).to(torch.uint8)
    steps = 2
    sample_video(unet, torch.randn(1, 4, 1, 8, 8, generator=g), text, text.clone(), tokens, tokens * 0.5,
                 SamplingSettings(steps=steps, cfg=7.5), torch.Generator().manual_seed(1), pose_controlnet=pose,
                 pose_cond=frames)
    windows = len(context_windows(n, 16, 4, 0))
    print(f"\nN={n}: per step {unet.calls / steps:g} UNet calls, {pose.calls / steps:g} ControlNet calls "
          f"on {pose.items / steps:g} frames (without sharing: {2 * windows * min(n, 16)} frames)")
    assert unet.calls == steps * windows
    assert pose.items == steps * n  # each frame once per step: no CFG duplicate, no overlap recompute
