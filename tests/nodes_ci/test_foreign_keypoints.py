"""POSE_KEYPOINT from other ComfyUI pose nodes as X-Dyna's pose source: the list
comfyui_controlnet_aux's DWPose / OpenPose nodes emit (one dict per frame; people with
pose_keypoints_2d (18 x 3), face_keypoints_2d (70 x 3: iBUG-68 plus both eyes), hands or None;
coordinates normalised to the canvas, missing points [0, 0, 0]), rendered by XDynaPoseFromKeypoints
and used for S-Face by XDynaExtractExpression, exactly like the same keypoints in pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.nodes_ci.test_pose_nodes import isolate_detector_search
from tests.real_comfyui.standins import write_keypoints_json

W, H = 512, 896


@pytest.fixture
def nodes(comfy, monkeypatch, tmp_path):
    isolate_detector_search(monkeypatch, tmp_path)
    from nodes import expression, pose

    return pose, expression


def controlnet_aux_style(pixel_frames):
    """The same frames as a DWPose node of comfyui_controlnet_aux writes them: normalised floats,
    confidence 1.0 or the all-zero triple, None for an absent part; a second, smaller person
    (body only) after the first."""
    out = []
    for f in pixel_frames:
        p = f["people"][0]

        def norm(values):
            if values is None:
                return None
            a = np.asarray(values, np.float64).reshape(-1, 3).copy()
            seen = a[:, 2] > 0
            a[seen, 0] /= W
            a[seen, 1] /= H
            a[~seen] = 0.0
            return a.ravel().tolist()

        first = {"pose_keypoints_2d": norm(p["pose_keypoints_2d"]), "face_keypoints_2d": norm(p["face_keypoints_2d"]),
                 "hand_left_keypoints_2d": norm(p["hand_left_keypoints_2d"]), "hand_right_keypoints_2d": None}
        second = dict(first, face_keypoints_2d=None,
                      pose_keypoints_2d=(np.asarray(first["pose_keypoints_2d"]).reshape(-1, 3) * [0.3, 0.3, 1]).ravel().tolist())
        out.append({"people": [first, second], "canvas_height": H, "canvas_width": W})
    return out


def test_controlnet_aux_pose_keypoint_renders_and_drives_sface(nodes, tmp_path):
    import json

    pose, expression = nodes
    pixel = json.loads(write_keypoints_json(tmp_path / "kp.json", 3, W, H).read_text())
    for f in pixel:
        f["people"][0]["hand_right_keypoints_2d"] = None  # as when a hand is not found
    foreign = controlnet_aux_style(pixel)
    assert len(foreign[0]["people"][0]["face_keypoints_2d"]) == 70 * 3

    render = pose.XDynaPoseFromKeypoints().render
    first_only = [dict(f, people=f["people"][:1]) for f in foreign]
    img_foreign = render(first_only, W, H, "stretch")[0]
    img_pixel = render(pixel, W, H, "stretch")[0]
    assert img_foreign.shape == (3, H, W, 3) and img_foreign.max() > 0.5
    # drawn from normalised coordinates as from the same points in pixels (rounding at line ends)
    assert (img_foreign != img_pixel).any(dim=-1).float().mean() < 0.002
    lit = lambda img: img.max(dim=-1).values.gt(0).sum()
    assert lit(render(foreign, W, H, "stretch")[0]) > lit(img_foreign)  # the second person is drawn too

    frames = torch.rand(3, H, W, 3)
    face_foreign, _ = expression.XDynaExtractExpression().extract(frames, "pose_keypoint", foreign)
    face_pixel, _ = expression.XDynaExtractExpression().extract(frames, "pose_keypoint", pixel)
    assert face_foreign["has_face"] == [True, True, True] and face_foreign["source"] == "pose_keypoint"
    assert (face_foreign["local"] - face_pixel["local"]).abs().mean() < 0.01
    assert face_foreign["local"].sum() > 0


def sdpose_style(pixel_frames, seed=0):
    """The same frames as ComfyUI 0.33's SDPose Keypoint Extractor writes them (comfy_extras/nodes_sdpose.py
    _to_openpose_frames): absolute pixels, every part of every person present with a score per point (a
    point the model is unsure of keeps some position and a low score), 6 foot points, 70 face points
    (68 landmarks + both eyes)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in pixel_frames:
        people = []
        for p in f["people"]:
            def full(values, n):
                a = np.zeros((n, 3)) if values is None else np.asarray(values, np.float64).reshape(-1, 3).copy()
                unsure = a[:, 2] <= 0
                a[unsure, :2] = rng.uniform(0, [W, H], size=(int(unsure.sum()), 2))
                a[unsure, 2] = rng.uniform(0.0, 0.25, size=int(unsure.sum()))  # below the 0.3 drawing threshold
                a[~unsure, 2] = rng.uniform(0.6, 0.99, size=int((~unsure).sum()))
                return a.ravel().tolist()
            people.append({"pose_keypoints_2d": full(p["pose_keypoints_2d"], 18),
                           "foot_keypoints_2d": full(None, 6),
                           "face_keypoints_2d": full(p["face_keypoints_2d"], 70),
                           "hand_right_keypoints_2d": full(p["hand_right_keypoints_2d"], 21),
                           "hand_left_keypoints_2d": full(p["hand_left_keypoints_2d"], 21)})
        out.append({"canvas_width": W, "canvas_height": H, "people": people})
    return out


def test_sdpose_pose_keypoint_renders_and_drives_sface(nodes, tmp_path):
    """POSE_KEYPOINT of ComfyUI 0.33's native SDPoseKeypointExtractor drives Pose From Keypoints and S-Face
    like the same keypoints in our own format: low-score points are not drawn, foot points are ignored."""
    import json

    pose, expression = nodes
    pixel = json.loads(write_keypoints_json(tmp_path / "kp.json", 3, W, H).read_text())
    for f in pixel:
        f["people"][0]["hand_right_keypoints_2d"] = None  # not found: SDPose still lists 21 unsure points
    native = sdpose_style(pixel)
    assert len(native[0]["people"][0]["face_keypoints_2d"]) == 70 * 3
    render = pose.XDynaPoseFromKeypoints.render
    img_native = render(native, W, H, "stretch")[0]
    img_pixel = render(pixel, W, H, "stretch")[0]
    assert img_native.shape == (3, H, W, 3) and img_native.max() > 0.5
    assert torch.equal(img_native, img_pixel)

    frames = torch.rand(3, H, W, 3)
    face_native, _ = expression.XDynaExtractExpression.extract(frames, "pose_keypoint", native)
    face_pixel, _ = expression.XDynaExtractExpression.extract(frames, "pose_keypoint", pixel)
    assert face_native["has_face"] == [True, True, True] and face_native["source"] == "pose_keypoint"
    assert torch.equal(face_native["local"], face_pixel["local"])
    assert torch.equal(face_native["global"], face_pixel["global"])
