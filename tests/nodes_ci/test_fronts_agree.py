"""The two front ends are one job: the node graph (fake ComfyUI) and the command line's job give
bit-identical latents, and the preprocessing CLI gives the nodes' keypoints, pose frames and patches."""
import json

import numpy as np
import pytest
import torch

from tests.conftest import assets_dir
from tests.nodes_ci.test_pose_nodes import install_standin_detectors
from xdyna_core.loading.tiny import write_tiny_set
from xdyna_core.preprocess.video import iter_frames

# Not multiples of 64: the working-size rule is multiples of 8 (latent 17x25; the UNet's upsamplers
# follow their skips), and this size runs through the whole graph and the CLI alike.
W, H = 136, 200
N = 5


def to_image(frames) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(frames)).astype(np.float32) / 255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


@pytest.fixture
def setup(comfy, monkeypatch, tmp_path):
    from tests.nodes_ci.test_pose_nodes import isolate_detector_search

    isolate_detector_search(monkeypatch, tmp_path)
    write_tiny_set(comfy.models_dir, seed=11)
    detectors = install_standin_detectors(comfy.models_dir)
    driving = assets_dir() / "driving_video" / "example_2_driving_2.mp4"
    reference = assets_dir() / "reference_image" / "example_2.jpg"
    return comfy.models_dir, detectors, driving, reference


def put_in_input_folder(comfy_dir, path):
    """The driving clip as a file in ComfyUI's input folder (what the node's upload button does)."""
    import shutil

    folder = comfy_dir.parent / "input"
    folder.mkdir(exist_ok=True)
    shutil.copy(path, folder / path.name)
    return path.name


def node_graph(models_dir, driving, reference, face: bool, seed: int, steps: int):
    """The shipped workflow's chain of X-Dyna nodes: the size set once on Reference Encode, the driving
    clip decoded by X-Dyna Load Driving Video, its width/height outputs feeding the pose node."""
    from nodes import driving as driving_node, expression, loaders, pose, reference as ref_node, sampler
    from tests.nodes_ci.native_fakes import FakeClipVision, FakeVAE
    from xdyna_core.animate import encode_text, read_reference
    from xdyna_core.loading.bundle import find_model_files, load_bundle

    bundle = load_bundle(find_model_files(models_dir))
    vae, clip_vision = FakeVAE(bundle.vae), FakeClipVision(bundle.clip_vision)
    cond = [[encode_text(bundle, "", torch.device("cpu"), torch.float32), {}]]

    model = loaders.XDynaModelLoader().load("xdyna_unet.safetensors", "fp32")[0]
    cns = loaders.XDynaControlNetLoader().load("xdyna_pose_controlnet.safetensors",
                                               "xdyna_face_controlnet.safetensors" if face else "none", "fp32")[0]
    proj = loaders.XDynaIPAdapterLoader().load("ip-adapter-plus_sd15.safetensors")[0]
    ref, _ = ref_node.XDynaReferenceEncode().encode(to_image(read_reference(reference)[None]), vae, clip_vision, proj,
                                                    W, H, "sample")
    name = put_in_input_folder(models_dir, driving)
    frames, _, _, width, height = driving_node.XDynaLoadDrivingVideo().load(ref, 0, N, 1, 0.0, file=name)
    keypoints, pose_images, driving_images, _ = pose.XDynaPoseExtract().extract(frames, width, height, "crop",
                                                                                "dwpose", encoded_reference=ref)
    face_in = None
    if face:
        face_in, _ = expression.XDynaExtractExpression().extract(driving_images, "auto", keypoints)
    out = sampler.XDynaSampler().sample(model, cns, ref, cond, cond, pose_images, seed, steps, 7.5, 1.0, 1.0, 4, 1,
                                        face=face_in)
    return out[0]["samples"]


def cli_job(models_dir, detectors, driving, reference, face: bool, seed: int, steps: int):
    from xdyna_core.animate import AnimateOptions, animate
    from xdyna_core.loading.bundle import find_model_files, load_bundle
    from xdyna_core.sampling.settings import SamplingSettings

    bundle = load_bundle(find_model_files(models_dir, face=face))
    opts = AnimateOptions(sampling=SamplingSettings(steps=steps, seed=seed, context_length=4, context_overlap=1),
                          width=W, height=H, frame_count=N, face=face, backend="dwpose", detector_dirs=[str(detectors)],
                          quiet=True, device="cpu", precision="fp32")
    result = animate(reference, driving, bundle, opts)
    return result.latents[0].permute(1, 0, 2, 3).float() / 0.18215, result


@pytest.mark.parametrize("face", [False, True], ids=["pose", "pose+sface"])
def test_cli_and_nodes_agree(setup, face):
    models_dir, detectors, driving, reference = setup
    nodes_latents = node_graph(models_dir, driving, reference, face, seed=7, steps=2)
    cli_latents, result = cli_job(models_dir, detectors, driving, reference, face, seed=7, steps=2)
    assert nodes_latents.shape == (N, 4, H // 8, W // 8)
    assert torch.isfinite(nodes_latents).all() and nodes_latents.std() > 0
    assert torch.equal(nodes_latents, cli_latents)
    if face:  # the S-Face ControlNet really took part (the stand-in skeleton has face points)
        assert result.controls.face_local is not None
        pose_only, _ = cli_job(models_dir, detectors, driving, reference, False, seed=7, steps=2)
        assert not torch.equal(pose_only, cli_latents)
    # another seed: other draws in both front ends
    assert not torch.equal(node_graph(models_dir, driving, reference, face, seed=8, steps=2), nodes_latents)


@pytest.mark.parametrize("align", [False, True], ids=["plain", "aligned"])
def test_preprocess_paths_agree(setup, tmp_path, monkeypatch, align):
    """`xdyna preprocess pose|face` and the pose/expression nodes on the same frames."""
    from nodes import expression, pose
    from xdyna_core.cli import main as xdyna_main
    from xdyna_core.preprocess import to_files, video
    from xdyna_core.preprocess.video import read_video

    _, detectors, driving, reference = setup
    written = {}

    class Capture(video.VideoWriter):  # the frames the CLI hands to the encoder (mp4 is lossy)
        def write(self, frame):
            written.setdefault(self.path.name, []).append(np.array(frame))
            super().write(frame)

    monkeypatch.setattr(to_files, "VideoWriter", Capture)
    extra = ["--align-reference", str(reference)] if align else []
    common = ["--out", str(tmp_path), "--size", f"{W}x{H}", "--frame-count", str(N), "--backend", "dwpose",
              "--models", str(detectors), "--quiet"] + extra
    assert xdyna_main(["preprocess", "pose", str(driving)] + common) == 0
    assert xdyna_main(["preprocess", "face", str(driving)] + common) == 0

    frames = to_image(list(iter_frames(driving, frame_count=N, cover=(W, H))))
    ref = to_image(read_video(reference, frame_count=1)[0]) if align else None
    keypoints, pose_images, driving_images, _ = pose.XDynaPoseExtract().extract(frames, W, H, "crop", "dwpose",
                                                                                reference=ref, align=align)
    face, _ = expression.XDynaExtractExpression().extract(driving_images, "auto", keypoints)

    stem = driving.stem
    assert json.loads((tmp_path / f"{stem}_keypoints.json").read_text()) == json.loads(json.dumps(keypoints))
    for name, images in ((f"{stem}_pose.mp4", pose_images), (f"{stem}_face_local.mp4", face["local"]),
                         (f"{stem}_face_global.mp4", face["global"])):
        got = np.stack(written[name])
        assert got.shape == (N, H, W, 3)
        assert np.array_equal(got, to_uint8(images)), name
    assert to_uint8(pose_images).max() > 0 and to_uint8(face["global"]).max() > 0


def test_clip_preprocess_matches_official(comfy, monkeypatch):
    """The CLIP pixel values each front end feeds its CLIP vision model equal the official pipeline's
    (transformers' CLIPImageProcessor: shortest side 224 bicubic, centre crop, CLIP mean/std)."""
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    import xdyna_core.reference as core_ref
    from nodes import reference as ref_node
    from tests.nodes_ci.native_fakes import FakeClipVision, FakeVAE
    from xdyna_core.loading.tiny import write_tiny_set
    from xdyna_core.loading.bundle import find_model_files, load_bundle

    write_tiny_set(comfy.models_dir, seed=3)
    bundle = load_bundle(find_model_files(comfy.models_dir))
    proc = transformers.CLIPImageProcessor()
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (333, 221, 4), dtype=np.uint8)  # odd-sized, with an alpha channel
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((assets_dir() / "reference_image").iterdir())]
    images.append(rgba)

    seen = {"cli": [], "nodes": []}
    original = core_ref.clip_image_hidden

    def spy(model, px):  # the CLI's CLIP call (our model through clip_image_hidden)
        seen["cli"].append(px.clone())
        return original(model, px)

    monkeypatch.setattr(core_ref, "clip_image_hidden", spy)

    class SpyClipVision(FakeClipVision):  # ComfyUI's CLIP_VISION as the node calls it
        def model(self, pixel_values, intermediate_output=-2):
            seen["nodes"].append(pixel_values.clone())
            return super().model(pixel_values, intermediate_output)

    proj = lambda h: h[:, :16]  # noqa: E731  (the Resampler is not what is checked here)
    proj.patcher = type("P", (), {"model": staticmethod(proj)})()
    monkeypatch.setattr(ref_node.bridge, "load_on_device", lambda patchers, memory_required=0: None)
    for img in images:
        # the official pipeline (transformers 4.x) drops alpha like PIL's convert("RGB"); 5.x's processor
        # treats alpha otherwise, so the oracle gets the RGB image explicitly
        official = proc(images=Image.fromarray(img).convert("RGB"), return_tensors="pt").pixel_values
        seen["cli"].clear()
        seen["nodes"].clear()
        core_ref.encode_reference_all(img, 64, 64, bundle.vae, bundle.clip_vision, proj)
        image = torch.from_numpy(img.astype(np.float32) / 255.0)[None]
        ref_node.XDynaReferenceEncode().encode(image, FakeVAE(bundle.vae), SpyClipVision(bundle.clip_vision), proj,
                                               64, 64, "sample")
        for front in ("cli", "nodes"):
            cond, uncond = seen[front]  # the picture, then all-zero pixel values (the negative tokens)
            assert cond.shape == official.shape == (1, 3, 224, 224), front
            assert (cond - official).abs().max() <= 1e-6, front
            assert not uncond.any(), front
