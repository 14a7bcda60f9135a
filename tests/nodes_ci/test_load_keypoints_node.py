"""XDynaLoadPoseKeypoints: a POSE_KEYPOINT JSON file in ComfyUI's input folder -> POSE_KEYPOINT."""
import json

import numpy as np
import pytest

from tests.nodes_ci.fake_comfy import node_classes, options
from xdyna_core.preprocess.keypoints import Person, PoseFrame, save_keypoints


def node():
    from nodes import pose

    cls = node_classes(pose)["XDynaLoadPoseKeypoints"]
    return cls, cls()


def test_lists_loads_and_renders(comfy):
    inp = comfy.models_dir.parent / "input" / "poses"
    inp.mkdir(parents=True)
    body = np.zeros((18, 3), np.float32)
    body[[1, 2, 5, 8, 11], :2] = [[50, 40], [40, 42], [60, 42], [45, 90], [55, 90]]
    body[[1, 2, 5, 8, 11], 2] = 1.0
    frames = [PoseFrame(100, 160, [Person(body.copy())]), PoseFrame(100, 160, [])]
    save_keypoints(inp / "dance.json", frames)
    (inp / "notes.txt").write_text("x")
    cls, n = node()
    assert options(cls.INPUT_TYPES()["required"]["keypoints_file"]) == ["poses/dance.json"]
    (kp,) = n.load("poses/dance.json")
    assert len(kp) == 2 and kp[1]["people"] == [] and kp[0]["canvas_width"] == 100
    assert np.isfinite(cls.fingerprint_inputs("poses/dance.json"))

    from nodes import pose

    render = node_classes(pose)["XDynaPoseFromKeypoints"]
    (images,) = render.render(kp, 64, 128, "stretch")
    assert images.shape == (2, 128, 64, 3) and images[0].max() > 0 and images[1].max() == 0


def test_bad_names_and_files(comfy):
    inp = comfy.models_dir.parent / "input"
    inp.mkdir()
    (inp / "broken.json").write_text(json.dumps([{"people": [{"pose_keypoints_2d": [1, 2]}]}]))
    _, n = node()
    with pytest.raises(FileNotFoundError, match="input folder"):
        n.load("../models/x.json")
    with pytest.raises(ValueError):
        n.load("broken.json")
