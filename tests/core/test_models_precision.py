"""Half-precision forwards of the tiny UNet are finite; their deviation from fp32 is measured."""
import pytest
import torch

from xdyna_core.models import UNet3DConditionModel, UNet3DConfig


@pytest.fixture(scope="module")
def unet_and_case(golden):
    meta, sd = golden("tiny_unet")
    cfg = meta["config"]
    model = UNet3DConditionModel(UNet3DConfig.from_diffusers_config(cfg["sd_config"], cfg.get("unet_additional_kwargs")))
    model.load_state_dict(sd, strict=True)
    return model.eval(), golden("unet_forward")[1]


def relative_deviation(model, t, dtype):
    half = UNet3DConditionModel(model.config, dtype=dtype).eval()
    half.load_state_dict(model.state_dict())
    down = [t[f"down_residual_{i:02d}"] for i in range(12)]
    with torch.no_grad():
        ref = model(t["sample"], t["timestep"], t["encoder_hidden_states"], down, t["mid_residual"])
        out = half(t["sample"].to(dtype), t["timestep"], t["encoder_hidden_states"].to(dtype),
                   [d.to(dtype) for d in down], t["mid_residual"].to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all(), f"{dtype} forward produced non-finite values"
    return ((out.float() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("dtype,bound", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_half_precision_forward(unet_and_case, dtype, bound):
    model, t = unet_and_case
    dev = relative_deviation(model, t, dtype)
    print(f"\n{dtype}: max |Δ| / max|fp32| = {dev:.3e}")
    assert dev < bound
