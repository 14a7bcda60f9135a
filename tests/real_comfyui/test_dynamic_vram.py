"""Our models as ComfyUI manages its own, with DynamicVRAM's lazy layers (real ComfyUI, its venv).

On NVIDIA, ComfyUI 0.33's main.py turns DynamicVRAM (comfy-aimdo) on: it sets
``comfy.memory_management.aimdo_enabled`` and makes ``comfy.model_patcher.CoreModelPatcher`` the dynamic
patcher. comfy.ops' Linear layers are then built WITHOUT weights and fill them in their own
``_load_from_state_dict``. Here both are done on CPU before any model is built (CoreModelPatcher becomes
a marker subclass: the dynamic patcher itself falls back to ModelPatcher on CPU), then the UNet, both
ControlNets and the Resampler of the tiny set load through the loader nodes with every op set the
loaders use (disable_weight_init; manual_cast with fp16 storage; manual_cast + fp8 storage) and one
sampler call gives finite latents. On 0.8.0 (no DynamicVRAM, no CoreModelPatcher) the same test runs
the normal path with ModelPatcher.

Nodes are called through ``call_node``, which runs V1 nodes (``FUNCTION`` method) and V3 nodes
(``execute`` on the class clone ComfyUI's executor makes, returning ``io.NodeOutput``) alike.
"""
import textwrap

import pytest

from tests.real_comfyui.in_comfy import run_in_comfy
from tests.real_comfyui.support import record

SCRIPT = textwrap.dedent("""
    import asyncio, inspect, time
    import torch
    from safetensors.torch import load_file
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import folder_paths

    try:
        import comfy.memory_management as memory_management
    except ImportError:  # ComfyUI before DynamicVRAM (0.8.0)
        memory_management = None
    AIMDO = memory_management is not None and hasattr(memory_management, "aimdo_enabled")
    if AIMDO:
        memory_management.aimdo_enabled = True  # what main.py sets on NVIDIA, before any model is built


    class CorePatcher(comfy.model_patcher.ModelPatcher):
        pass  # stands for the class main.py puts in CoreModelPatcher


    if hasattr(comfy.model_patcher, "CoreModelPatcher"):
        comfy.model_patcher.CoreModelPatcher = CorePatcher
        PATCHER = CorePatcher
    else:
        PATCHER = comfy.model_patcher.ModelPatcher

    bridge = ours("nodes.comfy_bridge")
    loaders, sampler = ours("nodes.loaders"), ours("nodes.sampler")
    bundle, reference = ours("xdyna_core.loading.bundle"), ours("xdyna_core.reference")
    bridge.register_model_folders()
    for folder in ("xdyna", "ipadapter"):
        folder_paths.add_model_folder_path(folder, f"{MODELS}/{folder}", is_default=True)


    def call_node(cls, **inputs):
        \"\"\"A node's outputs as ComfyUI's executor gets them, for V1 and V3 nodes.\"\"\"
        if hasattr(cls, "PREPARE_CLASS_CLONE"):  # V3: execute on the per-run class clone
            out = cls.PREPARE_CLASS_CLONE(None).execute(**inputs)
        else:  # V1
            out = getattr(cls(), cls.FUNCTION)(**inputs)
        if inspect.iscoroutine(out):
            out = asyncio.run(out)
        if isinstance(out, dict):
            out = out["result"]
        return tuple(getattr(out, "args", out))


    # the non-X-Dyna inputs: the tiny set's own VAE / CLIP vision / text encoder (ComfyUI's native
    # loaders need full-size files)
    files = bundle.find_model_files(MODELS)
    vae, text_encoder = bundle.load_sd15_parts(files.sd15)
    clip_vision = bundle.load_clip_vision(files.clip_vision)
    with torch.no_grad():
        text = text_encoder(input_ids=torch.tensor([[49406] + [49407] * 76])).last_hidden_state
    cond = [[text, {"pooled_output": None}]]
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(96, 80, 3, generator=g) * 255).to(torch.uint8).numpy()
    pose = torch.rand(N_FRAMES, H, W, 3, generator=g)

    proj = call_node(loaders.XDynaIPAdapterLoader, ipadapter_name="ip-adapter-plus_sd15.safetensors")[0]
    assert type(proj.patcher) is PATCHER, type(proj.patcher)
    with torch.no_grad():
        enc = reference.encode_reference_all(image, H, W, vae, clip_vision, proj.patcher.model)
    ref = {"encoding": enc, "latent_mode": "sample", "width": W, "height": H}

    policy = (mm.unet_dtype, mm.unet_manual_cast)
    VARIANTS = {  # op set -> (precision, weight_dtype, ComfyUI's dtype policy or None, ops, storage dtype)
        "disable_weight_init": ("fp32", "default", None, comfy.ops.disable_weight_init, torch.float32),
        # a GPU that stores fp16 and computes fp32
        "manual_cast": ("auto", "default", (torch.float16, torch.float32), comfy.ops.manual_cast, torch.float16),
        "fp8": ("fp32", "fp8_e4m3fn", None, comfy.ops.manual_cast, torch.float8_e4m3fn),
    }
    for name, (precision, weight_dtype, dtypes, ops, storage) in VARIANTS.items():
        t0 = time.perf_counter()
        if dtypes is not None:
            mm.unet_dtype = lambda *a, **k: dtypes[0]
            mm.unet_manual_cast = lambda *a, **k: dtypes[1]
        try:
            model = call_node(loaders.XDynaModelLoader, unet_name="xdyna_unet.safetensors", precision=precision,
                              weight_dtype=weight_dtype)[0]
            cns = call_node(loaders.XDynaControlNetLoader, pose_controlnet="xdyna_pose_controlnet.safetensors",
                            face_controlnet="xdyna_face_controlnet.safetensors", precision=precision,
                            weight_dtype=weight_dtype)[0]
        finally:
            mm.unet_dtype, mm.unet_manual_cast = policy
        for patcher, role in ((model.patcher, "unet"), (cns.pose, "pose_controlnet"), (cns.face, "face_controlnet")):
            net = patcher.model
            assert type(patcher) is PATCHER, (name, role, type(patcher))
            linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
            assert linears and all(isinstance(m, ops.Linear) for m in linears), (name, role)
            assert all(m.weight is not None and not m.weight.is_meta for m in linears), (name, role)
            # DynamicVRAM's lazy layers were the ones built (and loaded through their own loader)
            assert not AIMDO or all(hasattr(m, "comfy_need_lazy_init_bias") for m in linears), (name, role)
            assert net.conv_in.weight.dtype == storage and linears[0].weight.dtype == storage, (name, role)
            if hasattr(mm, "archive_model_dtypes"):  # the storage dtypes DynamicVRAM stages weights in
                assert linears[0].weight_comfy_model_dtype == storage, (name, role)
            if weight_dtype == "default":
                got = net.state_dict()
                for key, value in load_file(f"{MODELS}/xdyna/xdyna_{role}.safetensors").items():
                    want = value.to(storage) if value.is_floating_point() else value
                    assert torch.equal(got[key], want), (name, role, key)
        latent = call_node(sampler.XDynaSampler, model=model, controlnets=cns, reference=ref, positive=cond,
                           negative=cond, pose=pose, seed=1, steps=2, cfg=7.5, pose_strength=1.0,
                           face_strength=1.0, context_length=16, context_overlap=4)[0]["samples"]
        assert latent.shape == (N_FRAMES, 4, H // 8, W // 8) and torch.isfinite(latent).all(), (name, latent.shape)
        assert latent.std() > 0, name
        bridge.free_models([model.patcher, cns.pose, cns.face])
        print(f"{name}: {time.perf_counter() - t0:.2f} s")
    print("aimdo" if AIMDO else "no aimdo", PATCHER.__name__)
    print("ok")
""")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from xdyna_core.loading.tiny import write_tiny_set

    root = tmp_path_factory.mktemp("tiny_models")
    write_tiny_set(root, seed=3)
    return root


def test_models_load_and_sample_with_dynamic_vram_layers(comfy_env, tiny_models, tmp_path):
    """UNet, both ControlNets and the Resampler through the loader nodes with every op set, DynamicVRAM
    on where ComfyUI has it; patchers are CoreModelPatcher where it exists; one sampler call each."""
    out = run_in_comfy(SCRIPT, tmp_path, "dynamic_vram", MODELS=str(tiny_models), W=64, H=64, N_FRAMES=3)
    lines = out.strip().splitlines()
    dynamic = (comfy_env.dir / "comfy" / "memory_management.py").exists()  # 0.33: DynamicVRAM exists
    assert lines[-2] == ("aimdo CorePatcher" if dynamic else "no aimdo ModelPatcher"), lines[-2]
    for line in lines:
        if line.endswith(" s") and ": " in line:
            op_set, seconds = line.split(": ")
            record(f"dynamic VRAM ({comfy_env.version}): {op_set} load + sample", float(seconds[:-2]))
