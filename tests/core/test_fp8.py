"""fp8 weight storage (float8_e4m3fn, per-tensor power-of-two scale) of the UNet and ControlNets."""
import pytest
import torch
from torch import nn

from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig
from xdyna_core.models.fp8 import (FP8_DTYPE, dequantize, quantize_per_tensor, store_weights_fp8,
                                   weight_bytes)


def test_quantize_round_trip_and_scale():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g) * 0.05
    q, scale = quantize_per_tensor(w)
    assert q.dtype == FP8_DTYPE and scale.dtype == torch.float32 and scale.ndim == 0
    assert torch.log2(scale) == torch.round(torch.log2(scale))          # a power of two
    assert 224 <= q.float().abs().max() <= 448                          # the range is used
    deq = dequantize(q, scale, torch.float32)
    # e4m3 keeps 3 mantissa bits: relative rounding error <= 2^-4 for normal values
    big = w.abs() > scale * 2 ** -6 * 4
    assert ((deq - w).abs()[big] <= w.abs()[big] * 2 ** -4 + 1e-12).all()
    # dequantization is exact in every compute dtype: same numbers in fp16, bf16 and fp32
    for dt in (torch.float16, torch.bfloat16):
        assert torch.equal(dequantize(q, scale, dt).float(), deq)
    zero_q, zero_s = quantize_per_tensor(torch.zeros(3, 3))
    assert torch.equal(dequantize(zero_q, zero_s, torch.float32), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_per_tensor(torch.tensor([1.0, float("inf")]))


def _tiny(kind, dtype=torch.float32):
    torch.manual_seed(0)
    if kind == "unet":
        return UNet3DConditionModel(UNet3DConfig(block_out_channels=(32, 32, 64, 64), num_attention_heads=2,
                                                 cross_attention_dim=32), dtype=dtype).eval()
    return ControlNetModel(ControlNetConfig(block_out_channels=(32, 32, 64, 64), num_attention_heads=2,
                                            cross_attention_dim=32,
                                            conditioning_embedding_out_channels=(8, 16, 16, 32)), dtype=dtype).eval()


def _inputs(kind, dtype):
    g = torch.Generator().manual_seed(1)
    t = torch.tensor(501)
    if kind == "unet":
        return (torch.randn(2, 4, 4, 8, 8, generator=g).to(dtype), t, torch.randn(2, 93, 32, generator=g).to(dtype))
    return (torch.randn(3, 4, 8, 8, generator=g).to(dtype), t, torch.randn(3, 77, 32, generator=g).to(dtype),
            torch.rand(3, 3, 64, 64, generator=g).to(dtype))


def _flat(out):
    return torch.cat([o.flatten() for o in out[0] + [out[1]]]) if isinstance(out, tuple) else out.flatten()


def _rms_rel(out, ref):
    return ((out.float() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("kind", ["unet", "controlnet"])
def test_fp8_storage_halves_weights_and_stays_close(kind):
    ref32 = _tiny(kind)
    half = _tiny(kind, torch.bfloat16)
    half.load_state_dict(ref32.state_dict())
    fp8 = _tiny(kind, torch.bfloat16)
    fp8.load_state_dict(ref32.state_dict())
    before = weight_bytes(fp8)
    store_weights_fp8(fp8, torch.bfloat16)
    after = weight_bytes(fp8)
    layers = [m for m in fp8.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert layers and all(m.weight.dtype == FP8_DTYPE and m.weight_scale.ndim == 0 for m in layers)
    assert fp8.compute_dtype == torch.bfloat16
    # every Linear/Conv2d weight went from 2 bytes to 1 (plus a 4-byte scale each)
    assert 1.9 < before / after <= 2.0, (before, after)
    with torch.no_grad():
        ref = _flat(ref32(*_inputs(kind, torch.float32)))
        err_half = _rms_rel(_flat(half(*_inputs(kind, torch.bfloat16))), ref)
        err_fp8 = _rms_rel(_flat(fp8(*_inputs(kind, torch.bfloat16))), ref)
    # e4m3 rounds each weight by up to 2^-4 relative (~3.6 % RMS for spread-out values); with
    # independent errors a layer's output moves by about as much, and the errors of ~20 layers in a
    # row add up in quadrature: ~5-8 % RMS at the output (bf16 alone: ~1 %).
    assert err_fp8 < 0.15 and err_half < err_fp8, (err_fp8, err_half)


def test_fp8_network_equals_full_precision_network_with_rounded_weights():
    """Exactly the rounded-weight network: dequantization adds no error of its own (fp32 compute)."""
    model = _tiny("controlnet")
    rounded = _tiny("controlnet")
    rounded.load_state_dict(model.state_dict())
    store_weights_fp8(model, torch.float32)
    with torch.no_grad():
        for m, r in zip(model.modules(), rounded.modules()):
            if isinstance(r, (nn.Linear, nn.Conv2d)):
                r.weight.copy_(dequantize(*quantize_per_tensor(r.weight), torch.float32))
        x = _inputs("controlnet", torch.float32)
        assert torch.equal(_flat(model(*x)), _flat(rounded(*x)))
    # storing twice is a no-op
    q = model.conv_in.weight.clone()
    store_weights_fp8(model, torch.float32)
    assert torch.equal(model.conv_in.weight.view(torch.uint8), q.view(torch.uint8))


def test_cli_weights_fp8_option(tmp_path):
    """`python -m xdyna_core animate --weights fp8`: the loaded UNet/ControlNets store float8 weights."""
    from xdyna_core.cli import build_parser
    from xdyna_core.cli.animate import _load, _options
    from xdyna_core.loading.tiny import write_tiny_set

    write_tiny_set(tmp_path, seed=3)
    args = build_parser().parse_args(["animate", "--reference", "r.png", "--driving", "d.mp4", "--models",
                                      str(tmp_path), "--out", "o.mp4", "--device", "cpu", "--weights", "fp8"])
    opts = _options(args)
    assert opts.weights == "fp8"
    from xdyna_core.loading.bundle import find_model_files

    bundle = _load(find_model_files(tmp_path, face=opts.face), opts, quiet=True)
    for net in (bundle.unet, bundle.pose_controlnet, bundle.face_controlnet):
        assert net.conv_in.weight.dtype == FP8_DTYPE and net.compute_dtype == torch.float32
    assert bundle.vae.decoder.conv_in.weight.dtype == torch.float32      # the VAE is left alone
