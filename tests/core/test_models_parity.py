"""Parity of the core networks with the official code (goldens from tiny random models).

Tolerance from the architecture spec: |Δ| ≤ 1e-4·max(1, max|ref|) in fp32. Every setting is read
from the golden json so the tests hold for any golden set of the same cases.
"""
import pytest
import torch

from xdyna_core.models import (ControlNetConfig, ControlNetModel, Resampler, ResamplerConfig,
                               UNet3DConditionModel, UNet3DConfig)
from xdyna_core.models.unet3d import _unfold


def assert_close(actual, ref, name, tol=1e-4):
    ref = ref.to(actual.dtype)
    bound = tol * max(1.0, ref.abs().max().item())
    err = (actual - ref).abs().max().item()
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} vs golden {tuple(ref.shape)}"
    assert err <= bound, f"{name}: max |Δ| {err:.3g} > {bound:.3g}"


def _weights(golden, name):
    meta, tensors = golden(name)
    return meta["config"], tensors


@pytest.fixture(scope="module")
def tiny_unet(golden):
    cfg, sd = _weights(golden, "tiny_unet")
    model = UNet3DConditionModel(UNet3DConfig.from_diffusers_config(cfg["sd_config"], cfg.get("unet_additional_kwargs")))
    model.load_state_dict(sd, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def unet_case(golden):
    return golden("unet_forward")[1]


def _residuals(t):
    n = len([k for k in t if k.startswith("down_residual_")])
    return [t[f"down_residual_{i:02d}"] for i in range(n)], t["mid_residual"]


@torch.no_grad()
def test_unet_forward_output_and_intermediates(tiny_unet, unet_case):
    t = unet_case
    batch = t["sample"].shape[0]
    seen = {}

    def grab(name, index=None):
        def hook(_mod, _inp, out):
            seen[name] = out if index is None else out[index]
        return hook

    handles = [tiny_unet.conv_in.register_forward_hook(grab("after_conv_in")),
               tiny_unet.mid_block.register_forward_hook(grab("after_mid_block_before_residual"))]
    for i, block in enumerate(tiny_unet.down_blocks):
        handles.append(block.register_forward_hook(grab(f"after_down_block_{i}", 0)))
    for i, block in enumerate(tiny_unet.up_blocks):
        handles.append(block.register_forward_hook(grab(f"after_up_block_{i}")))
    try:
        down, mid = _residuals(t)
        out = tiny_unet(t["sample"], t["timestep"], t["encoder_hidden_states"], down, mid)
    finally:
        for h in handles:
            h.remove()
    assert_close(out, t["out"], "out")
    checked = 0
    for key, ref in t.items():
        if key.startswith("intermediate_"):
            name = key[len("intermediate_"):]
            assert name in seen, f"no hook recorded {name}"
            assert_close(_unfold(seen[name], batch), ref, key)
            checked += 1
    assert checked >= 10


@torch.no_grad()
def test_unet_forward_without_controlnet_residuals(tiny_unet, unet_case):
    t = unet_case
    out = tiny_unet(t["sample"], t["timestep"], t["encoder_hidden_states"])
    assert_close(out, t["out_without_controlnet_residuals"], "out_without_controlnet_residuals")


@torch.no_grad()
def test_unet_probes_reference_frame_coupling(tiny_unet, unet_case):
    """Frame 0's output depends on the noisy frames (5-D GroupNorm) and on t, as in the reference."""
    t = unet_case
    down, mid = _residuals(t)
    other = tiny_unet(t["probe_sample_other_noisy_frames"], t["timestep"], t["encoder_hidden_states"], down, mid)
    assert_close(other, t["probe_out_other_noisy_frames"], "probe_out_other_noisy_frames")
    t_b = tiny_unet(t["sample"], t["probe_timestep_b"], t["encoder_hidden_states"], down, mid)
    assert_close(t_b, t["probe_out_timestep_b"], "probe_out_timestep_b")
    # The coupling is real: frame 0 moved when only frames 1.. changed.
    assert (other[:, :, 0] - t["out"][:, :, 0]).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("kind", ["pose", "face"])
def test_controlnet_forward(golden, kind):
    cfg, sd = _weights(golden, f"tiny_controlnet_{kind}")
    model = ControlNetModel(ControlNetConfig.from_diffusers_config(cfg))
    model.load_state_dict(sd, strict=True)
    t = golden("controlnets")[1]
    downs, mid = model(t["latents"], t["timestep"], t["encoder_hidden_states"], t[f"cond_{kind}"], 1.0)
    n = len([k for k in t if k.startswith(f"{kind}_down_")])
    assert n == len(downs) == 12
    for i in range(n):
        assert_close(downs[i], t[f"{kind}_down_{i:02d}"], f"{kind}_down_{i:02d}")
    assert_close(mid, t[f"{kind}_mid"], f"{kind}_mid")


@torch.no_grad()
def test_resampler_forward(golden):
    cfg, sd = _weights(golden, "tiny_resampler")
    model = Resampler(ResamplerConfig.from_dict(cfg))
    model.load_state_dict(sd, strict=True)
    t = golden("resampler")[1]
    assert_close(model(t["clip_hidden"]), t["image_tokens"], "image_tokens")


@torch.no_grad()
def test_controlnet_precomputed_condition_embedding_is_exact(golden):
    cfg, sd = _weights(golden, "tiny_controlnet_pose")
    model = ControlNetModel(ControlNetConfig.from_diffusers_config(cfg))
    model.load_state_dict(sd, strict=True)
    t = golden("controlnets")[1]
    downs, mid = model(t["latents"], t["timestep"], t["encoder_hidden_states"], t["cond_pose"])
    emb = model.embed_condition(t["cond_pose"])
    downs2, mid2 = model(t["latents"], t["timestep"], t["encoder_hidden_states"], cond_embedding=emb)
    assert torch.equal(mid, mid2) and all(torch.equal(a, b) for a, b in zip(downs, downs2))
