"""fp8 weights through ComfyUI's own cast layers (comfy.ops.manual_cast), in ComfyUI's venv.

The loaders' weight_dtype=fp8_e4m3fn builds the networks from comfy.ops.manual_cast and swaps each
Linear/Conv2d for nodes.comfy_bridge.fp8_layer_class(cls): ComfyUI casts the float8 weight (and
streams it under partial loading), our layer applies the per-tensor scale. Its output must equal
the core fp8 layers' bit for bit, and every fp8 cast is ComfyUI's offloadable one, released with
uncast_bias_weight (0.8.0 and 0.33 both offer it); a cast_bias_weight without that mode gets the
legacy call and the same numbers. Runs in a subprocess: ComfyUI's modules are imported there only.
"""
import textwrap

from tests.real_comfyui.in_comfy import run_in_comfy

SCRIPT = textwrap.dedent("""
    import torch
    import comfy.ops
    bridge = ours("nodes.comfy_bridge")
    from_core = ours("xdyna_core.models")
    ControlNetConfig, ControlNetModel = from_core.ControlNetConfig, from_core.ControlNetModel
    FP8_DTYPE, store_weights_fp8 = ours("xdyna_core.models.fp8").FP8_DTYPE, ours("xdyna_core.models.fp8").store_weights_fp8
    cfg = ControlNetConfig(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32,
                           conditioning_embedding_out_channels=(8, 16, 16, 32))
    torch.manual_seed(0)
    core = ControlNetModel(cfg).eval()
    weights = {k: v.clone() for k, v in core.state_dict().items()}


    def comfy_fp8_net():
        net = ControlNetModel(cfg, operations=comfy.ops.manual_cast).eval()
        net.load_state_dict(weights)
        return store_weights_fp8(net, torch.float32, layer_class=bridge.fp8_layer_class)


    store_weights_fp8(core, torch.float32)
    comfy_net = comfy_fp8_net()
    assert isinstance(comfy_net.conv_in, comfy.ops.manual_cast.Conv2d) and comfy_net.conv_in.weight.dtype == FP8_DTYPE
    # every cast is offloadable and released (ComfyUI's contract for custom cast layers)
    casts, uncasts = [], []
    cast, uncast = comfy.ops.cast_bias_weight, comfy.ops.uncast_bias_weight
    fp8_layer = lambda s: type(s).__name__.startswith("Fp8")
    comfy.ops.cast_bias_weight = lambda s, *a, **k: (fp8_layer(s) and casts.append(k.get("offloadable"))) or cast(s, *a, **k)
    comfy.ops.uncast_bias_weight = lambda s, *a, **k: (fp8_layer(s) and uncasts.append(s)) or uncast(s, *a, **k)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 4, 8, 8, generator=g), torch.tensor(501), torch.randn(2, 77, 32, generator=g),
         torch.rand(2, 3, 64, 64, generator=g))
    with torch.no_grad():
        a, b = comfy_net(*x), core(*x)
    assert all(torch.equal(p, q) for p, q in zip(a[0] + [a[1]], b[0] + [b[1]])), "ComfyUI cast path differs"
    n_fp8 = sum(1 for m in comfy_net.modules() if fp8_layer(m))
    assert len(casts) == len(uncasts) == n_fp8 and set(casts) == {True}, (len(casts), len(uncasts), n_fp8, set(casts))

    # a cast_bias_weight without the offloadable mode (older ComfyUI) gets the legacy call: same numbers
    def legacy_cast(s, input=None, dtype=None, device=None, bias_dtype=None, **kw):
        assert not (fp8_layer(s) and kw), kw
        return cast(s, input, dtype, device, bias_dtype, **kw)

    comfy.ops.cast_bias_weight = legacy_cast
    casts.clear(), uncasts.clear(), bridge._FP8_CLASSES.clear()
    with torch.no_grad():
        c = comfy_fp8_net()(*x)
    assert all(torch.equal(p, q) for p, q in zip(c[0] + [c[1]], b[0] + [b[1]])), "legacy cast path differs"
    assert not uncasts
    print("ok")
""")


def test_fp8_through_comfy_manual_cast(tmp_path):
    run_in_comfy(SCRIPT, tmp_path, "fp8_cast", timeout=300)
