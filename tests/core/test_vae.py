"""SD1.5 AutoencoderKL: golden decode parity, encoder/posterior, key conversion, operations injection."""
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xdyna_core.loading.vae_keys import convert_ldm_vae_keys, is_ldm_vae_layout
from xdyna_core.models.vae import AutoencoderKL, AutoencoderKLConfig, Upsample2D
from xdyna_core.sampling.pipeline import decode_latents


@pytest.fixture(scope="module")
def tiny_vae(golden):
    meta, weights = golden("tiny_vae")
    vae = AutoencoderKL(AutoencoderKLConfig.from_diffusers_config(meta["config"])).eval()
    vae.load_state_dict(weights, strict=True)
    return vae


def _tol(ref):
    return 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("case", ["pipeline_3steps", "pipeline_long_context", "pipeline_25steps"])
def test_decode_reproduces_pipeline_video(golden, tiny_vae, case):
    _, t = golden(case)
    final = t["latents_history_with_ref"][-1]  # (1, 4, N+1, h, w), frame 0 = reference
    ref = t["video"]  # (1, 3, N, H, W) in [0, 1]
    out = decode_latents(tiny_vae.decode, final[:, :, 1:], chunk=3)  # chunk not dividing N on purpose
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= _tol(ref)


def test_decode_chunking_layouts_and_bad_input(golden, tiny_vae):
    _, t = golden("pipeline_3steps")
    lat = t["latents_history_with_ref"][-1][:, :, 1:]
    a = decode_latents(tiny_vae.decode, lat, chunk=1)
    b = decode_latents(tiny_vae.decode, lat, chunk=8, layout="nhwc")
    assert torch.allclose(a[0].permute(1, 2, 3, 0), b, atol=1e-5)
    assert a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match=r"\(1, C, N, h, w\)"):
        decode_latents(tiny_vae.decode, lat[0])
    with pytest.raises(ValueError, match="chunk"):
        decode_latents(tiny_vae.decode, lat, chunk=0)
    with pytest.raises(ValueError, match="latents"):
        tiny_vae.decode(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_upsample_as_four_phase_convs_equals_upsample_then_conv(dtype, monkeypatch):
    """The decoder's upsampler (four 2x2 convs, one per output parity) against the literal
    nearest-x2-then-3x3-conv on the same weights: odd sizes, a batch, bias, fp32 and bf16."""
    g = torch.Generator().manual_seed(0)
    up = Upsample2D(24)
    with torch.no_grad():
        up.conv.weight.copy_(torch.randn(up.conv.weight.shape, generator=g))
        up.conv.bias.copy_(torch.randn(24, generator=g))
    up = up.to(dtype)
    x = torch.randn(3, 24, 5, 7, generator=g).to(dtype)
    with torch.no_grad():
        literal = up.__class__.forward(SimpleNamespace(subpixel=False, conv=up.conv), x)
        with monkeypatch.context() as m:   # the fast path upsamples nothing
            m.setattr(torch.nn.functional, "interpolate", lambda *a, **k: pytest.fail("upsampled a copy"))
            fast = up(x)
    assert fast.shape == literal.shape == (3, 24, 10, 14) and fast.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 0.02   # bf16: one rounding of the summed taps
    assert (fast.float() - literal.float()).abs().max().item() <= tol * literal.float().abs().max().item()


def test_upsample_folded_kernels_follow_weight_changes():
    """The folded kernels are kept between calls, and never outlive the weights they came from:
    in-place writes, load_state_dict, a swapped ``.data`` and a dtype change each show at once, and
    kernels made under inference_mode never reach autograd."""
    g = torch.Generator().manual_seed(1)
    up = Upsample2D(16)
    x = torch.randn(2, 16, 4, 6, generator=g)

    def literal(inp):
        return Upsample2D.forward(SimpleNamespace(subpixel=False, conv=up.conv), inp)

    def agrees(inp=x):
        with torch.no_grad():
            got, want = up(inp).float(), literal(inp).float()
        return (got - want).abs().max().item() <= 1e-2 * want.abs().max().item()

    assert agrees()
    first = up.__dict__["_folded"][2]
    with torch.no_grad():
        up(x)
    assert up.__dict__["_folded"][2] is first                     # kept: nothing changed
    with torch.no_grad():
        up.conv.weight.mul_(-2)                                    # in place
    assert agrees()
    up.load_state_dict({"conv.weight": torch.randn(16, 16, 3, 3, generator=g), "conv.bias": torch.zeros(16)})
    assert agrees()
    up.conv.weight.data = torch.randn(16, 16, 3, 3, generator=g)   # storage swapped
    assert agrees()
    up.to(torch.bfloat16)
    assert agrees(x.to(torch.bfloat16))
    # kernels made under inference_mode are not reused where autograd records (gradient to the input)
    up.to(torch.float32).requires_grad_(False)
    with torch.inference_mode():
        up(x)
    xg = x.clone().requires_grad_(True)
    up(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_upsample_runs_a_layers_own_forward():
    """A conv with its own forward (ComfyUI's casting ops) is called as it is, not bypassed."""
    calls = []

    class OwnConv(nn.Conv2d):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return super().forward(x)

    up = Upsample2D(8, operations=SimpleNamespace(Conv2d=OwnConv))
    with torch.no_grad():
        out = up(torch.randn(1, 8, 3, 3))
    assert calls == [(1, 8, 6, 6)] and out.shape == (1, 8, 6, 6)


def test_encode_shapes_posterior_and_determinism(tiny_vae):
    x = torch.rand(2, 3, 64, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean, logvar = tiny_vae.encode(x)
    assert mean.shape == logvar.shape == (2, 4, 8, 5)
    assert torch.isfinite(mean).all() and torch.isfinite(logvar).all()
    assert logvar.max() <= 20 and logvar.min() >= -30
    s1 = tiny_vae.sample_posterior(mean, logvar, torch.Generator().manual_seed(7))
    s2 = tiny_vae.sample_posterior(mean, logvar, torch.Generator().manual_seed(7))
    s3 = tiny_vae.sample_posterior(mean, logvar, torch.Generator().manual_seed(8))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    # the sample is mean + exp(logvar / 2) * eps with eps the generator's first normal draw
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(s1, mean + torch.exp(0.5 * logvar) * eps, atol=1e-6)
    with torch.no_grad():
        y = tiny_vae.decode(mean)
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_vae.encode(torch.zeros(1, 3, 60, 40))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_vae.encode(torch.zeros(3, 64, 40))


def test_matches_diffusers_autoencoder(golden, tiny_vae):
    diffusers = pytest.importorskip("diffusers")
    meta, weights = golden("tiny_vae")
    ref = diffusers.AutoencoderKL(**meta["config"]).eval()
    ref.load_state_dict(weights, strict=True)
    x = torch.rand(1, 3, 48, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        post = ref.encode(x).latent_dist
        mean, logvar = tiny_vae.encode(x)
        assert (post.mean - mean).abs().max() <= _tol(post.mean)
        assert (post.logvar - logvar).abs().max() <= _tol(post.logvar)
        a = post.sample(torch.Generator().manual_seed(3))
        b = tiny_vae.sample_posterior(mean, logvar, torch.Generator().manual_seed(3))
        assert (a - b).abs().max() <= _tol(a)
        d = ref.decode(a).sample
        assert (d - tiny_vae.decode(a)).abs().max() <= _tol(d)


def test_sd15_default_layout_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    cfg = dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32,
    )
    with torch.device("meta"):
        ref = diffusers.AutoencoderKL(**cfg)
        ours = AutoencoderKL(AutoencoderKLConfig())
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# LDM layout. The map below is written from the original LDM module names (encoder.down.i.block.j,
# mid.block_1/attn_1/block_2, norm_out, nin_shortcut, decoder levels numbered bottom-up).


def _to_ldm(key, n_levels):
    side, rest = key.split(".", 1)
    if side in ("quant_conv", "post_quant_conv"):
        return key
    rest = rest.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    rest = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m.group(1)) + 1}", rest)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for new, old in attn.items():
        rest = rest.replace(f"mid_block.attentions.0.{new}.", f"mid.attn_1.{old}.")
    rest = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", rest)
    rest = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", rest)
    rest = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{n_levels - 1 - int(m.group(1))}.block.", rest)
    rest = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{n_levels - 1 - int(m.group(1))}.upsample.", rest)
    return f"{side}.{rest}"


def _ldm_state_dict(weights, n_levels):
    out = {}
    for k, v in weights.items():
        lk = _to_ldm(k, n_levels)
        if ".attn_1." in lk and lk.endswith("weight") and ".norm." not in lk:
            v = v[:, :, None, None]  # LDM stores the attention projections as 1x1 convs
        out["first_stage_model." + lk] = v
    return out


def test_convert_ldm_vae_keys_roundtrip(golden, tiny_vae):
    meta, weights = golden("tiny_vae")
    n = len(meta["config"]["block_out_channels"])
    ldm = _ldm_state_dict(weights, n)
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in ldm
    assert "first_stage_model.decoder.up.3.block.1.conv1.weight" in ldm  # top level, layers_per_block + 1 resnets
    ldm["model.diffusion_model.conv_in.weight"] = torch.zeros(1)  # other parts of a full checkpoint
    ldm["first_stage_model.loss.logvar"] = torch.zeros(())  # training-only entries
    assert is_ldm_vae_layout(ldm)
    conv = convert_ldm_vae_keys(ldm)
    assert set(conv) == set(weights)
    for k, v in weights.items():
        assert conv[k].shape == v.shape and torch.equal(conv[k], v), k
    # already-diffusers input passes through
    assert not is_ldm_vae_layout(weights)
    assert set(convert_ldm_vae_keys({"vae." + k: v for k, v in weights.items()})) == set(weights)


def test_convert_ldm_vae_keys_matches_diffusers_converter(golden):
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    meta, weights = golden("tiny_vae")
    ldm = _ldm_state_dict(weights, len(meta["config"]["block_out_channels"]))
    ref = convert_ldm_vae_checkpoint(dict(ldm), meta["config"])
    ours = convert_ldm_vae_keys(ldm)
    assert set(ref) == set(ours)
    for k in ref:
        assert torch.equal(ref[k].reshape(ours[k].shape), ours[k]), k


def test_load_accepts_old_attention_names_and_conv_weights(golden, tiny_vae):
    _, weights = golden("tiny_vae")
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = {}
    for k, v in weights.items():
        for new, o in old.items():
            if f".attentions.0.{new}." in k:
                k = k.replace(f".attentions.0.{new}.", f".attentions.0.{o}.")
                if k.endswith("weight"):
                    v = v[:, :, None, None]
        sd[k] = v
    assert any(".attentions.0.query.weight" in k for k in sd)
    vae = AutoencoderKL(tiny_vae.config)
    vae.load_state_dict(sd, strict=True)
    for k, v in tiny_vae.state_dict().items():
        assert torch.equal(vae.state_dict()[k], v), k


def test_operations_namespace_is_used():
    made = []

    def recorded(base):
        class Op(base):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                made.append(base.__name__)

        return Op

    ops = SimpleNamespace(Conv2d=recorded(nn.Conv2d), Linear=recorded(nn.Linear), GroupNorm=recorded(nn.GroupNorm))
    cfg = AutoencoderKLConfig(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4)
    vae = AutoencoderKL(cfg, operations=ops, dtype=torch.float64)
    leaves = [m for m in vae.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.GroupNorm))]
    assert len(made) == len(leaves) > 0
    assert all(p.dtype == torch.float64 for p in vae.parameters())


def test_config_validation_and_roundtrip():
    cfg = AutoencoderKLConfig()
    assert cfg.block_out_channels == (128, 256, 512, 512) and cfg.scaling_factor == 0.18215
    assert AutoencoderKLConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="act_fn"):
        AutoencoderKLConfig.from_diffusers_config({"act_fn": "gelu"})
    with pytest.raises(ValueError, match="DownEncoderBlock2D"):
        AutoencoderKLConfig.from_diffusers_config({"down_block_types": ["Foo"]})
    with pytest.raises(ValueError, match="divisible"):
        AutoencoderKLConfig(block_out_channels=(30,), norm_num_groups=32)


def test_bf16_decode_is_close(golden, tiny_vae):
    _, t = golden("pipeline_3steps")
    lat = t["latents_history_with_ref"][-1][:, :, 1:3]
    ref = decode_latents(tiny_vae.decode, lat)
    vae16 = AutoencoderKL(tiny_vae.config, dtype=torch.bfloat16)
    vae16.load_state_dict(tiny_vae.state_dict())
    out = decode_latents(vae16.decode, lat, dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1
