"""Loader, reference and sampler nodes: contracts and a full run on the tiny set (fake ComfyUI)."""

import inspect

import numpy as np
import pytest
import torch

from tests.conftest import assets_dir
from tests.nodes_ci.fake_comfy import node_classes, options, run_node
from xdyna_core.loading.tiny import write_tiny_set
from xdyna_core.preprocess.video import read_video

W, H = 128, 192


@pytest.fixture
def tiny(comfy):
    paths = write_tiny_set(comfy.models_dir, seed=5)
    from tests.nodes_ci.native_fakes import natives

    vae, clip_vision, cond = natives(comfy.models_dir)
    return paths, vae, clip_vision, cond


def node(name):
    """(node class, a call running it as ComfyUI does (execute) and giving the output tuple)."""
    from nodes import loaders, reference, sampler

    for mod in (loaders, reference, sampler):
        classes = node_classes(mod)
        if name in classes:
            cls = classes[name]
            params = [i.id for i in cls.GET_SCHEMA().inputs]  # execute takes the inputs by name

            def call(*args, **kwargs):
                return run_node(cls, **dict(zip(params, args)), **kwargs).args
            return cls, call
    raise KeyError(name)


@pytest.mark.parametrize("name", ["XDynaModelLoader", "XDynaControlNetLoader", "XDynaIPAdapterLoader",
                                  "XDynaReferenceEncode", "XDynaSampler"])
def test_contracts(comfy, name):
    cls, fn = node(name)
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    assert cls.CATEGORY.startswith("X-Dyna") and cls.DESCRIPTION
    params = set(inspect.signature(cls.execute).parameters)
    declared = set(spec["required"]) | set(spec.get("optional", {}))
    assert declared == params, f"{name}: inputs {declared ^ params} do not match the method"


def test_folders_registered_and_listed(tiny, comfy):
    cls, _ = node("XDynaModelLoader")
    spec = cls.INPUT_TYPES()
    assert "xdyna_unet.safetensors" in options(spec["required"]["unet_name"])
    assert "ip-adapter-plus_sd15.safetensors" in options(spec["optional"]["ipadapter_name"])


def write_broken_files(folder, unet_path):
    """Files a download can leave behind: a UNet cut short, random bytes under a model's name, a
    .ckpt cut short; and two whole pickles that only their names describe."""
    data = unet_path.read_bytes()
    (folder / "truncated_unet.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "random_unet.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "random.ckpt").write_bytes(b"not a checkpoint at all")
    torch.save({"w": torch.zeros(3)}, folder / "mystery.ckpt")
    torch.save({"w": torch.zeros(3)}, folder / "sface_controlnet.ckpt")
    whole = (folder / "mystery.ckpt").read_bytes()
    (folder / "cut_unet.ckpt").write_bytes(whole[: len(whole) - 40])


def test_loader_lists_hold_only_files_that_can_serve(tiny, comfy):
    """Dropdowns filtered by what each file is: safetensors by their whole header (also without our metadata,
    and under any name), zip pickles when whole and by name; truncated or random files are never listed."""
    from safetensors.torch import load_file, save_file

    paths = tiny[0]
    xdyna = paths["unet"].parent
    for role in ("pose_controlnet", "face_controlnet"):  # renamed, metadata dropped: only keys tell
        save_file(load_file(str(paths[role])), str(xdyna / f"model_{role[:4]}.safetensors"))
    write_broken_files(xdyna, paths["unet"])
    unet = options(node("XDynaModelLoader")[0].INPUT_TYPES()["required"]["unet_name"])
    spec = node("XDynaControlNetLoader")[0].INPUT_TYPES()["required"]
    pose, face = options(spec["pose_controlnet"]), options(spec["face_controlnet"])
    assert unet == ["mystery.ckpt", "xdyna_unet.safetensors"]
    assert pose == ["model_pose.safetensors", "mystery.ckpt", "xdyna_pose_controlnet.safetensors"]
    assert face == ["none", "model_face.safetensors", "mystery.ckpt", "sface_controlnet.ckpt",
                    "xdyna_face_controlnet.safetensors"]


@pytest.mark.parametrize("name,why", [
    ("truncated_unet.safetensors", "truncated"),
    ("random_unet.safetensors", "not a .safetensors or PyTorch checkpoint"),
    ("cut_unet.ckpt", "truncated"),
    ("xdyna_pose_controlnet.safetensors", "is the X-Dyna pose ControlNet, not the X-Dyna UNet"),
    ("nope.safetensors", "not found in the 'xdyna' model folder"),
])
def test_queue_time_check_names_the_file_and_the_problem(tiny, comfy, name, why):
    """validate_inputs (run by ComfyUI when the prompt is queued, before any node): one line naming the file."""
    import re

    write_broken_files(tiny[0]["unet"].parent, tiny[0]["unet"])
    cls, _ = node("XDynaModelLoader")
    answer = cls.validate_inputs(unet_name=name)
    assert isinstance(answer, str) and answer.startswith("unet_name: ") and name in answer
    assert re.search(why, answer) and "\n" not in answer
    assert cls.validate_inputs(unet_name="xdyna_unet.safetensors") is True
    cns = node("XDynaControlNetLoader")[0]
    assert cns.validate_inputs("xdyna_pose_controlnet.safetensors", "none") is True
    assert "not the X-Dyna S-Face ControlNet" in cns.validate_inputs("xdyna_pose_controlnet.safetensors",
                                                                   "xdyna_pose_controlnet.safetensors")
    ip = node("XDynaIPAdapterLoader")[0]
    assert ip.validate_inputs("ip-adapter-plus_sd15.safetensors") is True


def test_file_checks_are_cached_by_size_and_time(tiny, comfy, monkeypatch):
    from nodes import model_files
    from xdyna_core.loading import recognise

    path = str(tiny[0]["unet"])
    assert model_files.problem(path, model_files.UNET) is None
    monkeypatch.setattr(recognise, "recognise", lambda p: pytest.fail("header read again"))
    assert model_files.problem(path, model_files.UNET) is None  # cached: listing stays fast
    monkeypatch.undo()
    data = tiny[0]["unet"].read_bytes()
    tiny[0]["unet"].write_bytes(data[:-10])  # the file changed: checked again
    assert "truncated" in model_files.problem(path, model_files.UNET)


def test_missing_file_names_the_folder(tiny, comfy):
    _, load = node("XDynaModelLoader")
    with pytest.raises(FileNotFoundError, match="xdyna"):
        load("nope.safetensors", "auto")


def test_unet_without_motion_modules_takes_them_from_the_ipplus_file(tiny, comfy):
    """As the official loader: SD1.5 + animatediff_v15_v1_ipplus.pth, then the X-Dyna file over them."""
    from xdyna_core.errors import CheckpointError
    from xdyna_core.loading.recognise import IPPLUS_FILE
    from xdyna_core.loading.tiny import write_ipplus_split

    _, load = node("XDynaModelLoader")
    complete = load("xdyna_unet.safetensors", "fp32")[0].patcher.model.state_dict()
    complete_samples, _ = run_graph(tiny)
    xd = comfy.models_dir / "xdyna"
    ipplus = comfy.models_dir / "animatediff_models" / IPPLUS_FILE
    write_ipplus_split(xd / "xdyna_unet.safetensors", xd / "split.safetensors", ipplus)
    (xd / "split.safetensors").replace(xd / "xdyna_unet.safetensors")
    got = load("xdyna_unet.safetensors", "fp32")[0].patcher.model.state_dict()
    assert got.keys() == complete.keys() and all(torch.equal(got[k], v) for k, v in complete.items())
    assert torch.equal(run_graph(tiny)[0], complete_samples)  # one short sampling run, same latents
    ipplus.unlink()
    with pytest.raises(CheckpointError, match=f"{IPPLUS_FILE}.*animatediff_models") as e:
        load("xdyna_unet.safetensors", "fp32")
    assert "xdyna_unet.safetensors" in str(e.value) and str(xd) in str(e.value)


def pose_frames(n):
    frames, _ = read_video(assets_dir() / "poses" / "example_1_pose_1.mp4", frame_count=n, size=(W, H))
    return torch.from_numpy(frames.astype(np.float32) / 255)


def run_graph(tiny, n=3, face=None, seed=1, steps=2):
    _, vae, clip_vision, cond = tiny
    model = node("XDynaModelLoader")[1]("xdyna_unet.safetensors", "fp32")[0]
    cns = node("XDynaControlNetLoader")[1]("xdyna_pose_controlnet.safetensors", "xdyna_face_controlnet.safetensors", "fp32")[0]
    proj = node("XDynaIPAdapterLoader")[1]("ip-adapter-plus_sd15.safetensors")[0]
    ref_img, _ = read_video(assets_dir() / "reference_image" / "example_1.png")
    ref, prepared = node("XDynaReferenceEncode")[1](torch.from_numpy(ref_img.astype(np.float32) / 255), vae,
                                                    clip_vision, proj, W, H, "sample")
    assert prepared.shape == (1, H, W, 3) and ref["encoding"].moments.mean.shape == (1, 4, H // 8, W // 8)
    out = node("XDynaSampler")[1](model, cns, ref, cond, cond, pose_frames(n), seed, steps, 7.5, 1.0, 1.0, 16, 4, face=face)
    assert out[0]["xdyna_run"] == {"seed": seed, "steps": steps, "context_length": 16, "context_overlap": 4,
                                   "latent": "sample"}  # for X-Dyna Quality Report
    return out[0]["samples"], vae


def test_full_graph_runs_and_decodes(tiny, comfy):
    samples, vae = run_graph(tiny)
    assert samples.shape == (3, 4, H // 8, W // 8) and torch.isfinite(samples).all()
    with torch.no_grad():
        frames = vae.decode(samples)
    assert frames.shape == (3, H, W, 3) and frames.std() > 0.01
    assert comfy.loaded and any(v == 2 * 1 for v, _ in comfy.progress)  # one progress tick per window
    # the sampler asks ComfyUI to keep a window's activations free (3 frames, CFG batch 2)
    from xdyna_core.sampling.memory import window_activation_bytes
    unet_cfg = node("XDynaModelLoader")[1]("xdyna_unet.safetensors", "fp32")[0].patcher.model.config
    want = window_activation_bytes(unet_cfg, H // 8, W // 8, 3, 2, torch.float32)
    assert want > 0 and want in comfy.memory_required
    again, _ = run_graph(tiny)
    assert torch.equal(samples, again)  # same seed, same video


def test_face_input_is_used(tiny, comfy):
    n = 3
    local = torch.zeros(n, H, W, 3)
    local[:, 40:60, 40:90] = 0.8
    glob = torch.zeros(n, H, W, 3)
    glob[:, 20:100, 30:100] = 0.5
    with_face, _ = run_graph(tiny, face={"local": local, "global": glob, "has_face": [True] * n})
    without, _ = run_graph(tiny)
    assert (with_face - without).abs().max() > 1e-4
    no_face, _ = run_graph(tiny, face={"local": local * 0, "global": glob * 0, "has_face": [False] * n})
    assert torch.equal(no_face, without)  # no face anywhere: the S-Face ControlNet is skipped


def test_mismatched_frame_counts_are_clear(tiny, comfy):
    face = {"local": torch.zeros(2, H, W, 3), "global": torch.zeros(2, H, W, 3), "has_face": [True, True]}
    with pytest.raises(ValueError, match="face local has 2 frames but pose has 3"):
        run_graph(tiny, face=face)


def test_sampler_checks_the_settings_as_the_command_line_does(tiny, comfy):
    """One check of the settings value for both fronts (job_checks.check_sampling), named as the node's
    inputs; the window limit comes from the loaded UNet (its motion modules: 24 in the tiny set)."""
    _, vae, clip_vision, cond = tiny
    model = node("XDynaModelLoader")[1]("xdyna_unet.safetensors", "fp32")[0]
    cns = node("XDynaControlNetLoader")[1]("xdyna_pose_controlnet.safetensors", "none", "fp32")[0]
    proj = node("XDynaIPAdapterLoader")[1]("ip-adapter-plus_sd15.safetensors")[0]
    ref_img, _ = read_video(assets_dir() / "reference_image" / "example_1.png")
    ref, _ = node("XDynaReferenceEncode")[1](torch.from_numpy(ref_img.astype(np.float32) / 255), vae, clip_vision,
                                             proj, W, H, "sample")
    sample = node("XDynaSampler")[1]
    assert model.patcher.model.config.motion_max_len == 24
    with pytest.raises(ValueError, match=r"^context_length 32: at most 24, the motion module's limit"):
        sample(model, cns, ref, cond, cond, pose_frames(3), 1, 1, 7.5, 1.0, 1.0, 32, 4)
    with pytest.raises(ValueError, match=r"^context_overlap 8 must be smaller than context_length 8"):
        sample(model, cns, ref, cond, cond, pose_frames(3), 1, 1, 7.5, 1.0, 1.0, 8, 8)


def test_interrupt_stops_and_frees_only_our_models(tiny, comfy):
    import comfy.model_management as mm

    from tests.nodes_ci.fake_comfy import InterruptProcessingException

    other = object()  # another pack's model, loaded before ours
    mm.load_models_gpu([other])
    comfy.interrupt = True
    with pytest.raises(InterruptProcessingException):
        run_graph(tiny)
    assert comfy.interrupt is False
    # the sampler's load call (the one asking room for activations) holds our UNet and ControlNet(s)
    ours = [m for models, extra in zip(comfy.loaded, comfy.memory_required) if extra > 0 for m in models]
    others = [m for models in comfy.loaded for m in models if not any(m is o for o in ours)]
    still = [lm.model for lm in mm.current_loaded_models]
    assert ours and comfy.freed == len(ours)
    assert not any(m is o for m in still for o in ours)  # ours unloaded
    assert other in still and all(any(m is s for s in still) for m in others)  # every other model stays
    samples, _ = run_graph(tiny)  # the next run works
    assert torch.isfinite(samples).all()


def test_unused_face_controlnet_is_a_warning_on_the_node(tiny, comfy):
    """The face ControlNet is loaded but no face input is connected: the node shows why it ran pose only."""
    from nodes import sampler

    shown = []
    execute = sampler.XDynaSampler.execute
    sampler.XDynaSampler.execute = classmethod(lambda cls, *a, **k: shown.append(execute(*a, **k)) or shown[-1])
    try:
        run_graph(tiny)  # pose + face ControlNets loaded, no face input
    finally:
        sampler.XDynaSampler.execute = execute
    assert shown[0].ui["xdyna_warning"] == [
        "a face ControlNet is loaded but no face patches are given: running pose only"]


def test_every_input_and_output_has_a_tooltip(comfy):
    """Every X-Dyna node: a description, a tooltip on each input and one per output."""
    from tests.nodes_ci.test_package_import import import_pack

    pack = import_pack()
    assert len(pack.NODES) == 12
    for cls in pack.NODES:
        name = cls.GET_SCHEMA().node_id
        assert cls.DESCRIPTION, name
        for section in ("required", "optional"):
            for key, value in cls.INPUT_TYPES().get(section, {}).items():
                assert len(value) > 1 and value[1].get("tooltip"), f"{name}.{key} has no tooltip"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), f"{name} outputs"
        assert all(getattr(cls, "OUTPUT_TOOLTIPS")), name
