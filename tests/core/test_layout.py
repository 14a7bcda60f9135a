"""Memory layout inside the networks: no channels-last tensor leaks out of a spatial transformer.

A permuted (channels-last) tensor leaving the transformer made every following convolution run
channels-last (CPU speed effect 0.97-1.23x depending on size and load, bench/RESULTS.md) and
changed the convolution kernels' summation order. With the layout of the official code (diffusers'
`.contiguous()` before `proj_out`) our ControlNet is bit-identical to diffusers' ControlNetModel.
"""
import pytest
import torch

from xdyna_core.models import ControlNetConfig, ControlNetModel
from xdyna_core.models.attention import SpatialTransformer


def _tiny_pose_controlnet(golden):
    meta, sd = golden("tiny_controlnet_pose")
    model = ControlNetModel(ControlNetConfig.from_diffusers_config(meta["config"]))
    model.load_state_dict(sd, strict=True)
    return model.eval(), meta["config"], sd


@torch.no_grad()
def test_spatial_transformer_outputs_are_contiguous(golden):
    model, _, _ = _tiny_pose_controlnet(golden)
    seen = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.is_contiguous()))
               for m in model.modules() if isinstance(m, SpatialTransformer)]
    t = golden("controlnets")[1]
    try:
        downs, mid = model(t["latents"], t["timestep"], t["encoder_hidden_states"], t["cond_pose"])
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 7 and all(seen), f"spatial transformer outputs contiguous: {seen}"
    assert all(r.is_contiguous() for r in downs + [mid])


@torch.no_grad()
def test_controlnet_is_bit_identical_to_diffusers(golden):
    """The official ControlNet is diffusers' ControlNetModel: same weights, same inputs, same bits."""
    diffusers = pytest.importorskip("diffusers")
    model, cfg, sd = _tiny_pose_controlnet(golden)
    ref_net = diffusers.ControlNetModel.from_config(dict(cfg))
    ref_net.load_state_dict(sd, strict=True)
    ref_net.eval()
    t = golden("controlnets")[1]
    args = (t["latents"], t["timestep"], t["encoder_hidden_states"])
    ref_down, ref_mid = ref_net(*args, controlnet_cond=t["cond_pose"], return_dict=False)
    downs, mid = model(*args, t["cond_pose"])
    for i, (a, b) in enumerate(zip(downs + [mid], list(ref_down) + [ref_mid])):
        assert torch.equal(a, b), f"residual {i}: max |Δ| {(a - b).abs().max().item():.3g} vs diffusers"
