"""fp8 weights through ComfyUI's own cast layers (comfy.ops.manual_cast), in ComfyUI's venv.

The loaders' weight_dtype=fp8_e4m3fn builds the networks from comfy.ops.manual_cast and swaps each
Linear/Conv2d for nodes.comfy_bridge.fp8_layer_class(cls): ComfyUI casts the float8 weight (and
streams it under partial loading), our layer applies the per-tensor scale. Its output must equal
the core fp8 layers' bit for bit. Runs in a subprocess: ComfyUI's modules are imported there only.
"""
import os
import subprocess
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path[:0] = [REPO, COMFY]  # our nodes package before ComfyUI's nodes.py
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.ops
    from nodes import comfy_bridge as bridge
    from xdyna_core.models import ControlNetConfig, ControlNetModel
    from xdyna_core.models.fp8 import FP8_DTYPE, store_weights_fp8
    cfg = ControlNetConfig(block_out_channels=(32, 32, 64, 64), num_attention_heads=2, cross_attention_dim=32,
                           conditioning_embedding_out_channels=(8, 16, 16, 32))
    torch.manual_seed(0)
    core = ControlNetModel(cfg).eval()
    comfy_net = ControlNetModel(cfg, operations=comfy.ops.manual_cast).eval()
    comfy_net.load_state_dict(core.state_dict())
    store_weights_fp8(core, torch.float32)
    store_weights_fp8(comfy_net, torch.float32, layer_class=bridge.fp8_layer_class)
    assert isinstance(comfy_net.conv_in, comfy.ops.manual_cast.Conv2d) and comfy_net.conv_in.weight.dtype == FP8_DTYPE
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 4, 8, 8, generator=g), torch.tensor(501), torch.randn(2, 77, 32, generator=g),
         torch.rand(2, 3, 64, 64, generator=g))
    with torch.no_grad():
        a, b = comfy_net(*x), core(*x)
    assert all(torch.equal(p, q) for p, q in zip(a[0] + [a[1]], b[0] + [b[1]])), "ComfyUI cast path differs"
    print("ok")
""")


def test_fp8_through_comfy_manual_cast(tmp_path):
    script = tmp_path / "fp8_cast.py"
    script.write_text(f"COMFY = {os.environ['COMFYUI_DIR']!r}\nREPO = {str(REPO)!r}\n" + SCRIPT)
    python = Path(os.environ["COMFY_VENV"]) / "bin" / "python"
    r = subprocess.run([str(python), str(script)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]
