"""XDynaExtractExpression (nodes/expression.py) against the fake ComfyUI: contract, real frames
(MediaPipe), equality with the core S-Face cropper, carry_missing, no-face clips and errors."""
from __future__ import annotations

import logging

import pytest
import torch

from tests.nodes_ci import fake_comfy
from tests.nodes_ci.test_pose_nodes import (
    H_OUT,
    W_OUT,
    check_node_contract,
    dot_frames,
    install_standin_detectors,
    isolate_detector_search,
    load_real_clip,
    refuse_mediapipe,
    to_image,
    to_uint8,
)


@pytest.fixture
def no_dwpose_files(monkeypatch, tmp_path):
    isolate_detector_search(monkeypatch, tmp_path)


@pytest.fixture
def no_mediapipe(monkeypatch):
    refuse_mediapipe(monkeypatch)


@pytest.fixture
def expr(comfy):
    from nodes import expression

    return expression


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """XDynaPoseExtract (MediaPipe) on 3 real frames at 256x448: (pose_keypoint, driving_images)."""
    real_clip = load_real_clip()
    fake_comfy.install(str(tmp_path_factory.mktemp("models")))
    try:
        from nodes import comfy_bridge, pose

        comfy_bridge.register_model_folders()
        kp, _, driving, _ = pose.XDynaPoseExtract().extract(to_image(real_clip), W_OUT, H_OUT, "crop", "mediapipe")
    finally:
        fake_comfy.uninstall()
    return kp, driving


def patches_reference(driving, kp, carry):
    """The same patches from the core functions the CLI uses (face_patch_sequence)."""
    from xdyna_core.preprocess.face_landmarks import landmarks_from_pose
    from xdyna_core.preprocess.face_patches import face_patch_sequence
    from xdyna_core.preprocess.keypoints import from_pose_keypoint_json

    lms = [landmarks_from_pose(p) for p in from_pose_keypoint_json(kp)]
    seq = face_patch_sequence(list(to_uint8(driving)), lms, fix_failures=carry)
    return to_image(seq.local_images), to_image(seq.global_images), seq.has_face


def drawn(img: torch.Tensor) -> int:
    return int((img.amax(dim=-1) > 0).sum())


def test_node_contract(expr):
    m, d = expr.NODE_CLASS_MAPPINGS, expr.NODE_DISPLAY_NAME_MAPPINGS
    assert set(m) == set(d) == {"XDynaExtractExpression"}
    spec = check_node_contract(m["XDynaExtractExpression"], "XDynaExtractExpression", m, d)
    assert list(spec["required"]) == ["driving_images", "landmarks"]
    assert list(spec["optional"]) == ["pose_keypoint", "carry_missing"]
    assert spec["required"]["driving_images"][0] == "IMAGE"
    assert spec["required"]["landmarks"][0] == ["auto", "pose_keypoint", "mediapipe", "insightface"]
    assert spec["optional"]["pose_keypoint"][0] == "POSE_KEYPOINT"
    assert spec["optional"]["carry_missing"][0] == "BOOLEAN" and spec["optional"]["carry_missing"][1]["default"] is True
    cls = m["XDynaExtractExpression"]
    assert cls.RETURN_TYPES == ("XDYNA_FACE", "IMAGE") and cls.RETURN_NAMES == ("face", "preview")
    assert "switch" in cls.DESCRIPTION and "has_face" in cls.DESCRIPTION


def test_face_from_pose_keypoint_matches_core(expr, comfy, extracted):
    kp, driving = extracted
    n = driving.shape[0]
    face, preview = expr.XDynaExtractExpression().extract(driving, "auto", kp)
    assert face["source"] == "pose_keypoint"  # auto: the pose already carries 68 face points
    assert face["has_face"] == [True] * n
    assert (face["width"], face["height"]) == (W_OUT, H_OUT)
    for key in ("local", "global"):
        assert face[key].shape == (n, H_OUT, W_OUT, 3) and face[key].dtype == torch.float32
    local, glob, _ = patches_reference(driving, kp, carry=True)
    assert torch.equal(face["local"], local) and torch.equal(face["global"], glob)
    for i in range(n):
        assert 0 < drawn(face["local"][i]) < drawn(face["global"][i]) < H_OUT * W_OUT // 4
    assert torch.equal(preview, torch.maximum(face["local"], face["global"] * 0.5))
    assert comfy.progress[-1] == (n, n)


def test_carry_missing_on_and_off(expr, comfy, extracted):
    kp, driving = extracted
    kp = [dict(f, people=[dict(p) for p in f["people"]]) for f in kp]
    kp[1]["people"][0]["face_keypoints_2d"] = None  # no face found in the middle frame
    carried, _ = expr.XDynaExtractExpression().extract(driving, "pose_keypoint", kp, True)
    plain, _ = expr.XDynaExtractExpression().extract(driving, "pose_keypoint", kp, False)
    assert carried["has_face"] == plain["has_face"] == [True, False, True]
    # off: the reference behaviour, black patches on the miss
    assert drawn(plain["local"][1]) == drawn(plain["global"][1]) == 0
    # on: frame 0's face box and windows, cut from frame 1's own pixels
    assert drawn(carried["global"][1]) > 0
    for mine, (ref_local, ref_global) in ((carried, patches_reference(driving, kp, True)[:2]),
                                          (plain, patches_reference(driving, kp, False)[:2])):
        assert torch.equal(mine["local"], ref_local) and torch.equal(mine["global"], ref_global)


def test_mediapipe_landmarks_without_pose_input(expr, comfy, extracted, no_dwpose_files):
    _, driving = extracted
    face, _ = expr.XDynaExtractExpression().extract(driving[:2], "mediapipe")
    assert face["source"] == "mediapipe" and face["has_face"] == [True, True]
    assert drawn(face["global"][0]) > 0


def test_auto_uses_head_boxes_of_a_body_only_pose(expr, comfy, extracted, no_dwpose_files):
    kp, driving = extracted
    body_only = [dict(f, people=[dict(p, face_keypoints_2d=None) for p in f["people"]]) for f in kp[:2]]
    face, _ = expr.XDynaExtractExpression().extract(driving[:2], "auto", body_only)
    assert face["source"] == "mediapipe" and face["has_face"] == [True, True]
    # ... while landmarks=pose_keypoint finds no face in it: documented result, no error
    face, _ = expr.XDynaExtractExpression().extract(driving[:2], "pose_keypoint", body_only)
    assert face["has_face"] == [False, False] and drawn(face["global"]) == 0


def test_no_face_clip_gives_black_patches_and_a_warning(expr, comfy, no_dwpose_files, caplog):
    pytest.importorskip("mediapipe")
    clip = torch.zeros(2, H_OUT, W_OUT, 3)
    clip[:, 300:, :, :] = 0.4  # some content, but nobody in it
    with caplog.at_level(logging.WARNING, logger="ComfyUI-XDyna"):
        face, preview = expr.XDynaExtractExpression().extract(clip, "mediapipe", None, True)
    assert face["has_face"] == [False, False]
    assert drawn(face["local"]) == drawn(face["global"]) == drawn(preview) == 0
    assert face["local"].shape == (2, H_OUT, W_OUT, 3)
    assert any("no face found in any of the 2 frames" in r.getMessage() for r in caplog.records)


def test_errors(expr, comfy, extracted, no_dwpose_files, no_mediapipe):
    kp, driving = extracted
    node = expr.XDynaExtractExpression()
    with pytest.raises(ValueError, match="connect it"):
        node.extract(driving, "pose_keypoint")
    with pytest.raises(ValueError, match="pose_keypoint has 2 frames but driving_images has 3"):
        node.extract(driving, "auto", kp[:2])
    with pytest.raises(FileNotFoundError, match="1k3d68.onnx"):
        node.extract(driving, "insightface", kp)
    with pytest.raises(ValueError, match="python install.py"):
        node.extract(driving, "mediapipe", kp)
    with pytest.raises(ValueError, match="no frames"):
        node.extract(torch.zeros(0, 8, 8, 3), "auto", kp)
    comfy.interrupt = True
    with pytest.raises(fake_comfy.InterruptProcessingException):
        node.extract(driving, "pose_keypoint", kp)


def test_auto_prefers_insightface_when_its_file_is_present(expr, comfy, no_dwpose_files):
    from nodes import comfy_bridge
    from xdyna_core.preprocess.sface_inputs import choose_landmark_source

    dirs = comfy_bridge.detector_dirs()
    assert choose_landmark_source("auto", None, dirs) == "mediapipe"
    f = comfy.models_dir / "insightface" / "models" / "buffalo_l" / "1k3d68.onnx"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"onnx")
    assert choose_landmark_source("auto", None, dirs) == "insightface"


def test_pose_keypoint_on_another_canvas_is_scaled_to_the_frames(expr, comfy, no_dwpose_files):
    """Keypoints at 512x896 used with driving images at 256x448: the face box follows the frames."""
    install_standin_detectors(comfy.models_dir)
    from nodes import pose

    frames = to_image(dot_frames(1, background=100))
    kp_big, _, _, _ = pose.XDynaPoseExtract().extract(frames, 512, 896, "crop", "dwpose")
    kp_small, _, driving, _ = pose.XDynaPoseExtract().extract(frames, 256, 448, "stretch", "dwpose")
    a, _ = expr.XDynaExtractExpression().extract(driving, "auto", kp_small)
    b, _ = expr.XDynaExtractExpression().extract(driving, "auto", kp_big)
    assert a["source"] == b["source"] == "pose_keypoint" and a["has_face"] == b["has_face"] == [True]

    def box(img):
        import numpy as np

        ys, xs = np.nonzero(to_uint8(img).max(axis=-1) > 0)
        return np.array([xs.min(), ys.min(), xs.max(), ys.max()])

    assert 0 < drawn(a["global"]) and abs(box(a["global"][0]) - box(b["global"][0])).max() <= 1
