"""Pose nodes (nodes/pose.py) against the fake ComfyUI: contracts, real MediaPipe runs on a few
frames of the shared driving videos, and exact geometry checks with the DWPose stand-in models
of tests/core/test_dwpose.py placed in models/xdyna/detectors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import assets_dir
from tests.nodes_ci import fake_comfy

W_OUT, H_OUT = 256, 448  # half of the 512x896 assets: same aspect, cheap to render


def to_image(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255.0).round().to(torch.uint8).numpy()


def check_node_contract(cls, node_id: str, mappings: dict, display: dict) -> dict:
    """The V1 attributes ComfyUI reads; returns INPUT_TYPES()."""
    assert node_id.startswith("XDyna") and mappings[node_id] is cls and display[node_id]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, name
            kind = entry[0]
            assert isinstance(kind, (str, list)), name
            opts = entry[1] if len(entry) == 2 else {}
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, list):
                assert opts.get("default", kind[0]) in kind, name
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert callable(getattr(cls(), cls.FUNCTION))
    assert cls.CATEGORY == "X-Dyna/preprocess"
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 80
    return spec


@pytest.fixture
def pose_nodes(comfy):
    from nodes import pose

    return pose


def isolate_detector_search(monkeypatch, tmp_path):
    """Keep a developer's own DWPose / insightface folders out of the search."""
    from xdyna_core.preprocess import dwpose

    for var in ("XDYNA_DWPOSE_DIR", "XDYNA_MODELS_DIR", "AUX_ANNOTATOR_CKPTS_PATH", "XDYNA_INSIGHTFACE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dwpose, "EXTENSION_ROOT", tmp_path / "isolated" / "ComfyUI-XDyna")


def refuse_mediapipe(monkeypatch):
    """Make MediaPipe (legacy or Tasks) look uninstalled."""
    from xdyna_core.preprocess import mediapipe_backend

    def refuse():
        raise ImportError("No module named 'mediapipe'")

    monkeypatch.setattr(mediapipe_backend, "import_mediapipe", refuse)
    monkeypatch.setattr(mediapipe_backend, "installed_mediapipe", lambda: None)


def load_real_clip(n=3) -> np.ndarray:
    """The first n frames (512x896) of an official driving video; skips without mediapipe."""
    pytest.importorskip("mediapipe")
    video = assets_dir() / "driving_video" / "example_1_driving_1.mp4"
    from xdyna_core.preprocess.video import read_video

    return read_video(video, frame_count=n)[0]


@pytest.fixture
def no_dwpose_files(monkeypatch, tmp_path):
    isolate_detector_search(monkeypatch, tmp_path)


@pytest.fixture
def no_mediapipe(monkeypatch):
    refuse_mediapipe(monkeypatch)


@pytest.fixture(scope="module")
def real_clip():
    return load_real_clip()


# ------------------------------------------------------------------------ contracts


def test_node_contracts(pose_nodes):
    m, d = pose_nodes.NODE_CLASS_MAPPINGS, pose_nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert set(m) == set(d) == {"XDynaLoadPoseKeypoints", "XDynaPoseExtract", "XDynaPoseFromKeypoints", "XDynaPoseAlign"}

    spec = check_node_contract(m["XDynaPoseExtract"], "XDynaPoseExtract", m, d)
    req, opt = spec["required"], spec["optional"]
    assert list(req) == ["images", "width", "height", "fit", "backend"] and list(opt) == ["reference", "align",
                                                                                            "encoded_reference"]
    assert req["images"][0] == "IMAGE" and opt["reference"][0] == "IMAGE"
    assert req["width"][0] == "INT" and {k: req["width"][1][k] for k in ("default", "min", "max", "step")} == \
        {"default": 512, "min": 64, "max": 2048, "step": 8}  # the one size rule: multiples of 8
    assert req["height"][1]["default"] == 896 and req["height"][1]["step"] == 8
    assert req["fit"][0] == ["crop", "stretch"] and req["backend"][0] == ["auto", "dwpose", "mediapipe"]
    assert opt["align"][0] == "BOOLEAN" and opt["align"][1]["default"] is False
    cls = m["XDynaPoseExtract"]
    assert cls.RETURN_TYPES == ("POSE_KEYPOINT", "IMAGE", "IMAGE", "STRING")
    assert cls.RETURN_NAMES == ("pose_keypoint", "pose_images", "driving_images", "alignment")

    spec = check_node_contract(m["XDynaPoseFromKeypoints"], "XDynaPoseFromKeypoints", m, d)
    assert list(spec["required"]) == ["pose_keypoint", "width", "height", "fit"]
    assert spec["required"]["pose_keypoint"][0] == "POSE_KEYPOINT"
    assert spec["required"]["fit"][0] == ["stretch", "crop"]
    assert m["XDynaPoseFromKeypoints"].RETURN_TYPES == ("IMAGE",)

    spec = check_node_contract(m["XDynaPoseAlign"], "XDynaPoseAlign", m, d)
    assert list(spec["required"]) == ["pose_keypoint", "reference", "width", "height", "backend"]
    assert spec["optional"]["align_frame"][0] == "INT" and spec["optional"]["align_frame"][1]["default"] == -1
    assert m["XDynaPoseAlign"].RETURN_TYPES == ("POSE_KEYPOINT", "IMAGE", "STRING")
    assert m["XDynaPoseAlign"].RETURN_NAMES == ("pose_keypoint", "pose_images", "alignment")


# ------------------------------------------------------------------------ real frames (MediaPipe)


def test_extract_real_frames_and_keypoint_round_trip(pose_nodes, comfy, real_clip):
    from xdyna_core.preprocess.face_patches import crop_resize

    n = len(real_clip)
    kp, pose_images, driving, note = pose_nodes.XDynaPoseExtract().extract(
        to_image(real_clip), W_OUT, H_OUT, "crop", "mediapipe")
    assert pose_images.shape == driving.shape == (n, H_OUT, W_OUT, 3)
    assert pose_images.dtype == driving.dtype == torch.float32
    assert 0.0 <= float(pose_images.min()) and float(pose_images.max()) <= 1.0
    assert note.startswith("backend mediapipe") and "crop" in note and "512x896 -> 256x448" in note
    assert comfy.progress[-1] == (n, n)  # one progress step per frame

    assert isinstance(kp, list) and len(kp) == n
    for frame, img in zip(kp, pose_images):
        assert (frame["canvas_width"], frame["canvas_height"]) == (W_OUT, H_OUT)
        person = frame["people"][0]
        assert len(person["pose_keypoints_2d"]) == 18 * 3 and len(person["face_keypoints_2d"]) == 70 * 3
        xs = person["pose_keypoints_2d"][0::3]
        assert max(xs) <= W_OUT and set(person["pose_keypoints_2d"][2::3]) <= {0.0, 1.0}
        assert (img.amax(dim=2) > 0.2).sum() > 500  # a drawn skeleton, not a black frame

    # Driving frames in the output geometry: X-Dyna's crop2ratio + bilinear resize of each frame.
    expected = np.stack([crop_resize(f, H_OUT, W_OUT, "linear") for f in real_clip])
    assert torch.equal(driving, to_image(expected))

    # The keypoints, even after a trip through JSON text, render to exactly the same pose images.
    again, = pose_nodes.XDynaPoseFromKeypoints().render(json.loads(json.dumps(kp)), W_OUT, H_OUT, "stretch")
    assert (again != pose_images).any(dim=-1).float().mean() < 1e-3  # same skeletons (up to float noise)


def test_frames_without_person_are_black_and_all_black_is_an_error(pose_nodes, comfy, real_clip):
    black = np.zeros_like(real_clip[0])
    frames = np.stack([real_clip[0], black, real_clip[1]])
    kp, pose_images, driving, note = pose_nodes.XDynaPoseExtract().extract(
        to_image(frames), W_OUT, H_OUT, "stretch", "mediapipe")
    assert [len(f["people"]) for f in kp] == [1, 0, 1]
    assert float(pose_images[1].max()) == 0.0 and float(pose_images[0].max()) > 0.5
    assert float(driving[1].max()) == 0.0
    assert "1/3 frames without a person" in note

    with pytest.raises(ValueError, match="no person found in any of the 2 frames"):
        pose_nodes.XDynaPoseExtract().extract(to_image(np.stack([black, black])), W_OUT, H_OUT, "crop",
                                              "mediapipe")


def test_alignment_to_a_real_reference(pose_nodes, comfy, real_clip):
    ref_path = assets_dir() / "reference_image" / "example_2.jpg"
    from xdyna_core.preprocess.video import read_video

    ref = read_video(ref_path, frame_count=1)[0]
    kp, pose_images, driving, note = pose_nodes.XDynaPoseExtract().extract(
        to_image(real_clip[:2]), W_OUT, H_OUT, "crop", "mediapipe", reference=to_image(ref), align=True)
    assert "alignment on driving frame 0: scale" in note and "WARNING" not in note
    assert pose_images.shape == driving.shape == (2, H_OUT, W_OUT, 3)
    # Aligning the aligned clip again onto the same reference is the identity (the fit is
    # idempotent: median segment ratio 1, anchors already on top of each other).
    _, again, note2 = pose_nodes.XDynaPoseAlign().align(kp, to_image(ref), W_OUT, H_OUT, "mediapipe")
    assert "scale 1.0000" in note2
    assert (again != pose_images).any(dim=-1).float().mean() < 1e-3  # same skeletons (up to float noise)


# ------------------------------------------------------------------------ errors


def test_size_and_input_errors(pose_nodes, comfy):
    img = torch.zeros(2, 64, 64, 3)
    kp = [{"people": [], "canvas_width": 64, "canvas_height": 64}]
    with pytest.raises(ValueError, match="multiples of 8"):
        pose_nodes.XDynaPoseExtract().extract(img, 260, 448, "crop", "auto")
    with pytest.raises(ValueError, match="multiples of 8"):
        pose_nodes.XDynaPoseFromKeypoints().render(kp, 256, 452, "stretch")
    with pytest.raises(ValueError, match="multiples of 8"):
        pose_nodes.XDynaPoseAlign().align(kp, img, 100, 448, "auto")
    with pytest.raises(ValueError, match="no frames"):
        pose_nodes.XDynaPoseExtract().extract(torch.zeros(0, 64, 64, 3), 256, 448, "crop", "auto")
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        pose_nodes.XDynaPoseExtract().extract(torch.zeros(64, 64), 256, 448, "crop", "auto")
    with pytest.raises(ValueError, match="no reference image"):
        pose_nodes.XDynaPoseExtract().extract(img, 256, 448, "crop", "auto", align=True)
    with pytest.raises(ValueError, match="no person found in any of the 1 frames"):
        pose_nodes.XDynaPoseFromKeypoints().render(kp, 256, 448, "stretch")
    with pytest.raises(ValueError, match="frame 0.*people"):
        pose_nodes.XDynaPoseFromKeypoints().render([{"canvas_width": 64, "canvas_height": 64}], 256, 448, "crop")


def test_backend_unavailable_says_how_to_install(pose_nodes, comfy, no_dwpose_files, no_mediapipe):
    img = torch.zeros(1, 64, 64, 3)
    detectors = str(comfy.models_dir / "xdyna" / "detectors")
    with pytest.raises(ValueError) as e:
        pose_nodes.XDynaPoseExtract().extract(img, 256, 448, "crop", "dwpose")
    assert "yolox_l.onnx" in str(e.value) and detectors in str(e.value) and "pip install" not in str(e.value)
    with pytest.raises(ValueError) as e:
        pose_nodes.XDynaPoseExtract().extract(img, 256, 448, "crop", "mediapipe")
    assert "python install.py" in str(e.value) and "yolox" not in str(e.value)
    with pytest.raises(ValueError) as e:
        pose_nodes.XDynaPoseAlign().align(nose_only(0.5, 0.5), img, 256, 448, "auto")
    assert "python install.py" in str(e.value) and detectors in str(e.value)


# ------------------------------------------------------------------------ exact geometry (DWPose stand-in)


def install_standin_detectors(models_dir):
    """DWPose stand-ins (a fixed skeleton with face whenever the frame has a bright pixel) in
    models/xdyna/detectors, where bridge.detector_dirs() looks."""
    pytest.importorskip("onnx")
    from tests.core.test_dwpose import make_const_pose_onnx, standard_detector
    from tests.core.test_preprocess_cli import _const_layout

    d = models_dir / "xdyna" / "detectors"
    d.mkdir(parents=True)
    standard_detector(d / "yolox_l.onnx")
    make_const_pose_onnx(d / "dw-ll_ucoco_384.onnx", *_const_layout())
    return d


@pytest.fixture
def standin_detectors(comfy, no_dwpose_files):
    return install_standin_detectors(comfy.models_dir)


def dot_frames(n=2, background=0):
    """512x896 frames with one white dot: the stand-in detector "sees" a person."""
    from tests.core.test_dwpose import DOT

    f = np.full((896, 512, 3), background, np.uint8)
    f[DOT] = 255
    return np.stack([f] * n)


def body_xy(frame: dict) -> np.ndarray:
    a = np.asarray(frame["people"][0]["pose_keypoints_2d"], np.float64).reshape(-1, 3)
    return a[:, :2], a[:, 2] > 0


def test_alignment_with_standin_detector(pose_nodes, comfy, standin_detectors):
    frames = to_image(dot_frames())
    kp_plain, _, drv_plain, note = pose_nodes.XDynaPoseExtract().extract(frames, 512, 896, "crop", "dwpose")
    assert note.startswith("backend dwpose") and "kept at 512x896" in note
    assert drv_plain is frames  # same geometry: the input batch is passed through, not copied
    plain, present = body_xy(kp_plain[0])
    assert present.sum() >= 12

    # The reference is the same picture; prepared at 256x448 it is the frame at half size, so the
    # fitted alignment is scale 0.5 with no shift and the driving skeleton lands at half size.
    kp, _, drv_al, note = pose_nodes.XDynaPoseExtract().extract(
        frames, 256, 448, "crop", "dwpose", reference=frames[:1], align=True)
    assert "alignment on driving frame 0: scale 0.5000" in note
    xy, present2 = body_xy(kp[0])
    assert (present2 == present).all()
    np.testing.assert_allclose(xy[present], plain[present] / 2, atol=0.5)
    # The driving frames are warped the same way: the white dot moves to half its position.
    ys, xs = np.nonzero(to_uint8(drv_al[0]).max(axis=2) > 100)
    assert abs(xs.mean() - 251.5 / 2) < 1.5 and abs(ys.mean() - 401.5 / 2) < 1.5

    # XDynaPoseAlign does the same from the plain keypoints, and renders what its keypoints say.
    kp2, imgs2, note2 = pose_nodes.XDynaPoseAlign().align(kp_plain, frames[:1], 256, 448, "dwpose")
    assert "scale 0.5000" in note2
    np.testing.assert_allclose(body_xy(kp2[0])[0][present], xy[present], atol=0.01)
    rendered, = pose_nodes.XDynaPoseFromKeypoints().render(kp2, 256, 448, "stretch")
    assert torch.equal(rendered, imgs2)

    with pytest.raises(ValueError, match="align_frame 5 is outside the 2"):
        pose_nodes.XDynaPoseAlign().align(kp_plain, frames[:1], 256, 448, "dwpose", align_frame=5)
    with pytest.raises(ValueError, match="no person found in the reference"):
        pose_nodes.XDynaPoseAlign().align(kp_plain, torch.zeros(1, 896, 512, 3), 256, 448, "dwpose")
    with pytest.raises(ValueError, match="no person found in the reference"):
        pose_nodes.XDynaPoseExtract().extract(frames, 256, 448, "crop", "dwpose",
                                              reference=torch.zeros(1, 896, 512, 3), align=True)


def test_nan_frames_and_interrupt(pose_nodes, comfy, standin_detectors):
    bad = to_image(dot_frames())
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="frame 1 contains NaN"):
        pose_nodes.XDynaPoseExtract().extract(bad, 256, 448, "crop", "dwpose")

    comfy.progress.clear()
    comfy.interrupt = True
    with pytest.raises(fake_comfy.InterruptProcessingException):
        pose_nodes.XDynaPoseExtract().extract(to_image(dot_frames(3)), 256, 448, "crop", "dwpose")
    assert comfy.progress == []  # stopped at the first frame


# ------------------------------------------------------------------------ keypoints from elsewhere


def red_centre(img: torch.Tensor):
    """Centre of the nose joint (pure red) in a rendered pose image."""
    a = to_uint8(img)
    ys, xs = np.nonzero((a[..., 0] > 200) & (a[..., 1] < 50) & (a[..., 2] < 50))
    assert len(xs), "nose joint not drawn"
    return xs.mean(), ys.mean()


def nose_only(x, y, w=1000, h=1000):
    body = [0.0] * 54
    body[0:3] = [x, y, 1.0]
    return [{"people": [{"pose_keypoints_2d": body}], "canvas_width": w, "canvas_height": h}]


def test_keypoints_from_another_canvas_stretch_and_crop(pose_nodes, comfy):
    node = pose_nodes.XDynaPoseFromKeypoints()
    # stretch: x * 512/1000, y * 896/1000
    cx, cy = red_centre(node.render(nose_only(700, 400), 512, 896, "stretch")[0][0])
    assert abs(cx - 358.4) <= 1.0 and abs(cy - 358.4) <= 1.0
    # crop: a 1000x1000 canvas keeps full height and the centred 571 px wide band (crop2ratio),
    # then scales by 896/1000: x = (700 - 214 + 0.5) * 512/571 - 0.5
    cx, cy = red_centre(node.render(nose_only(700, 400), 512, 896, "crop")[0][0])
    assert abs(cx - 435.7) <= 1.0 and abs(cy - 358.3) <= 1.0
    # normalised coordinates (controlnet_aux can emit them) give the same picture
    a = node.render(nose_only(700, 400), 512, 896, "crop")[0]
    b = node.render(nose_only(0.7, 0.4), 512, 896, "crop")[0]
    assert torch.equal(a, b)
    # any multiple of 8 is accepted
    assert node.render(nose_only(0.5, 0.5), 200, 352, "stretch")[0].shape == (1, 352, 200, 3)
    comfy.interrupt = True
    with pytest.raises(fake_comfy.InterruptProcessingException):
        node.render(nose_only(0.5, 0.5), 256, 448, "stretch")


def test_low_confidence_points_do_not_reappear_in_pose_keypoint():
    """POSE_KEYPOINT stores confidence 1.0 for every present point, so points the renderer skips
    (confidence <= 0.3) must be dropped before writing, or a consumer would draw them."""
    from xdyna_core.preprocess.keypoint_lists import keypoint_round_trip
    from xdyna_core.preprocess.keypoints import Person, PoseFrame
    from xdyna_core.preprocess.render import render_pose

    body = np.zeros((18, 3), np.float32)
    body[1] = (100, 100, 0.9)  # neck
    body[2] = (70, 100, 0.9)  # right shoulder: limb neck-shoulder drawn
    body[5] = (130, 100, 0.2)  # left shoulder below the threshold: not drawn
    frame = PoseFrame(200, 200, [Person(body)])
    data, drawn = keypoint_round_trip([frame])
    assert data[0]["people"][0]["pose_keypoints_2d"][15:18] == [0.0, 0.0, 0.0]
    assert data[0]["people"][0]["pose_keypoints_2d"][3:6] == [100.0, 100.0, 1.0]
    assert np.array_equal(render_pose(drawn[0], 200, 200), render_pose(frame, 200, 200))


def test_image_batch_frames_conversion():
    """IMAGE batches become uint8 frames rounded to the nearest level; RGBA/grey are accepted."""
    from xdyna_core.preprocess.image_batch import ImageBatchFrames

    x = torch.tensor([0.0, 254.6 / 255, 1.2, -0.1]).reshape(1, 1, 4, 1)  # grey, one row of 4 pixels
    frames = ImageBatchFrames(x)
    assert len(frames) == 1 and frames.size == (4, 1)
    assert frames[0].dtype == np.uint8 and frames[0][0, :, 0].tolist() == [0, 255, 255, 0]
    assert frames[0].shape == (1, 4, 3) and frames.as_image_batch() is None  # grey is not a plain IMAGE
    rgba = torch.rand(2, 3, 5, 4)
    assert ImageBatchFrames(rgba)[1].shape == (3, 5, 3)
    u8 = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    assert np.array_equal(ImageBatchFrames(u8)[1], u8[1])
    with pytest.raises(TypeError, match="IMAGE batch"):
        ImageBatchFrames([[0.0]])
