"""torch.compile sees the timestep as a graph input: one compile serves every timestep.

The sampler passes ``t`` as a 0-d tensor on the device. A Python int would be baked into the graph
as a constant (one recompile per timestep; 25 steps exceed dynamo's recompile limit, after which
the network silently runs eager). The networks are traced once with dynamo's ``eager`` backend
(the recompile question is dynamo's, whatever backend generates code; tracing is the slow part on
CPU, so the networks are reduced to one layer per block) and called at 3 timesteps: exactly one
compiled frame, no graph break, and outputs bit-identical to eager (the eager backend replays the
captured ATen operations in the same order, so any difference would be a tracing error).

Inductor's generated code reorders floating-point sums, so its output differs from eager by
rounding: within 2.1e-6 relative for the tiny UNet and ControlNet, the same size as eager's own
distance to an fp64 reference (bench/bench_compile.py, bench/RESULTS.md). It is not run here: an
Inductor CPU compile takes 4-6 minutes per tiny network on the CI machine.
"""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig

SMALL = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, num_attention_heads=2, cross_attention_dim=32)
TIMESTEPS = (961, 501, 1)


def _run_compiled(model, inputs):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(model, backend=counter, dynamic=False)
    outs = []
    with torch.no_grad():
        for t in TIMESTEPS:
            args = inputs(torch.tensor(t))
            outs.append((compiled(*args), model(*args)))
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    torch._dynamo.reset()
    return counter.frame_count, breaks, outs


def _flat(out):
    return torch.cat([o.flatten() for o in out[0] + [out[1]]]) if isinstance(out, tuple) else out.flatten()


@pytest.mark.compile  # one test traces both networks once: the slowest test of the suite on CPU
def test_unet_and_controlnet_compile_once_for_all_timesteps():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    unet = UNet3DConditionModel(UNet3DConfig(**SMALL)).eval()
    sample, ctx = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 77 + 16, 32, generator=g)
    cn = ControlNetModel(ControlNetConfig(conditioning_embedding_out_channels=(8, 16, 16, 32), **SMALL)).eval()
    cn_sample, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    image = torch.rand(2, 3, 64, 64, generator=g)
    for name, model, inputs in (("UNet", unet, lambda t: (sample, t, ctx)),
                                ("ControlNet", cn, lambda t: (cn_sample, t, text, image))):
        frames, breaks, outs = _run_compiled(model, inputs)
        assert frames == 1, f"{name}: {frames} compiled frames for {len(TIMESTEPS)} timesteps (recompiles)"
        assert not breaks, f"{name}: graph breaks {breaks}"
        for t, (compiled, eager) in zip(TIMESTEPS, outs):
            assert torch.equal(_flat(compiled), _flat(eager)), f"{name} t={t}: compiled != eager"
        # the timestep matters: different t, different output (it was not frozen into the graph)
        assert not torch.equal(_flat(outs[0][0]), _flat(outs[1][0]))
