"""POSE_KEYPOINT JSON (comfyui_controlnet_aux format) <-> PoseFrame."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xdyna_core.preprocess.keypoints import (
    KeypointFormatError,
    Person,
    PoseFrame,
    from_pose_keypoint_json,
    load_keypoints,
    save_keypoints,
    to_pose_keypoint_json,
)


def make_person(rng, missing=()):
    def part(n):
        a = np.concatenate([rng.uniform(5, 500, (n, 2)), rng.uniform(0.4, 1.0, (n, 1))], axis=1)
        return a.astype(np.float32)

    p = Person(part(18), part(21), part(21), part(68))
    for name, idx in missing:
        getattr(p, name)[idx] = (123.0, 45.0, 0.0)  # conf 0: missing, coordinates must not leak
    return p


@pytest.fixture
def frames():
    rng = np.random.default_rng(1)
    p0 = make_person(rng, missing=[("body", 3), ("face", 10), ("left_hand", 0)])
    p1 = make_person(rng)
    p1.face = None
    p1.right_hand = None
    return [PoseFrame(512, 896, [p0, p1]), PoseFrame(512, 896, [])]


def test_json_structure_matches_controlnet_aux(frames):
    js = to_pose_keypoint_json(frames)
    assert isinstance(js, list) and len(js) == 2
    f0 = js[0]
    assert set(f0) == {"people", "canvas_height", "canvas_width"}
    assert (f0["canvas_width"], f0["canvas_height"]) == (512, 896)
    p0 = f0["people"][0]
    assert set(p0) == {"pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                       "hand_right_keypoints_2d"}
    assert len(p0["pose_keypoints_2d"]) == 54 and len(p0["face_keypoints_2d"]) == 210
    assert len(p0["hand_left_keypoints_2d"]) == 63 and len(p0["hand_right_keypoints_2d"]) == 63
    assert p0["pose_keypoints_2d"][9:12] == [0.0, 0.0, 0.0]  # missing point
    assert p0["face_keypoints_2d"][30:33] == [0.0, 0.0, 0.0]
    assert p0["pose_keypoints_2d"][2] == 1.0  # binary confidence, as controlnet_aux writes it
    # points 68, 69 of the face are the body's right and left eye (OpenPose-18 14, 15)
    body = frames[0].people[0].body
    np.testing.assert_allclose(p0["face_keypoints_2d"][204:206], body[14, :2], atol=1e-3)
    np.testing.assert_allclose(p0["face_keypoints_2d"][207:209], body[15, :2], atol=1e-3)
    p1 = f0["people"][1]
    assert p1["face_keypoints_2d"] is None and p1["hand_right_keypoints_2d"] is None
    assert js[1]["people"] == []
    json.dumps(js)  # plain JSON types only


def test_roundtrip(frames):
    back = from_pose_keypoint_json(to_pose_keypoint_json(frames, binary_confidence=False))
    assert [(f.width, f.height, len(f.people)) for f in back] == [(512, 896, 2), (512, 896, 0)]
    for src, dst in zip(frames[0].people, back[0].people):
        for name in ("body", "left_hand", "right_hand", "face"):
            a, b = getattr(src, name), getattr(dst, name)
            if a is None:
                assert b is None, name
                continue
            assert b.shape == a.shape and b.dtype == np.float32
            present = a[:, 2] > 0
            np.testing.assert_allclose(b[present], a[present], atol=1e-3)
            assert np.all(b[~present] == 0)


def test_binary_confidence_roundtrip_sets_one(frames):
    back = from_pose_keypoint_json(to_pose_keypoint_json(frames))
    c = back[0].people[0].body[:, 2]
    assert set(np.unique(c)) == {0.0, 1.0} and c[3] == 0.0


def test_normalised_coordinates_are_detected_and_scaled(frames):
    js = to_pose_keypoint_json(frames, normalized=True)
    assert max(v for v in js[0]["people"][0]["pose_keypoints_2d"]) <= 1.0
    back = from_pose_keypoint_json(js)
    a, b = frames[0].people[0].body, back[0].people[0].body
    present = a[:, 2] > 0
    np.testing.assert_allclose(b[present, :2], a[present, :2], atol=0.6)  # 3-decimal rounding x 896
    # forcing pixels keeps the values as they are
    raw = from_pose_keypoint_json(js, normalized=False)
    assert raw[0].people[0].body[present, :2].max() <= 1.0


def test_pixel_coordinates_are_not_rescaled():
    js = [{"people": [{"pose_keypoints_2d": [0.5, 0.5, 1.0] + [200.0, 300.0, 1.0] + [0.0] * 48}],
           "canvas_height": 896, "canvas_width": 512}]
    body = from_pose_keypoint_json(js)[0].people[0].body
    np.testing.assert_allclose(body[:2, :2], [[0.5, 0.5], [200, 300]])


def test_body25_null_and_empty_parts():
    body25 = []
    for i in range(25):
        body25 += [float(i), float(100 + i), 1.0]
    js = {"people": [{"pose_keypoints_2d": body25, "face_keypoints_2d": [],
                      "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": [1.0, 2.0, 0.9] * 21,
                      "pose_keypoints_3d": [], "person_id": [-1]}],
          "canvas_height": 720, "canvas_width": 1280}
    p = from_pose_keypoint_json(js)[0].people[0]  # a single dict is one frame
    expected = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # mid-hip 8 dropped
    np.testing.assert_allclose(p.body[:, 0], expected)
    assert p.face is None and p.left_hand is None and p.right_hand.shape == (21, 3)
    only_hands = from_pose_keypoint_json(
        [{"people": [{"pose_keypoints_2d": None, "hand_left_keypoints_2d": [1.0, 2.0, 1.0] * 21}],
          "canvas_height": 10, "canvas_width": 10}], normalized=False)
    assert np.all(only_hands[0].people[0].body == 0)


def test_face_68_points_accepted():
    js = [{"people": [{"pose_keypoints_2d": [1.0, 1.0, 1.0] * 18, "face_keypoints_2d": [5.0, 6.0, 1.0] * 68}],
           "canvas_height": 64, "canvas_width": 64}]
    face = from_pose_keypoint_json(js)[0].people[0].face
    assert face.shape == (68, 3)


@pytest.mark.parametrize("obj,match", [
    ("[1, 2", "not valid JSON"),
    (42, "expected a list of frame dicts"),
    ([{"people": [], "canvas_height": 10}], r"frame 0: missing 'canvas_width'"),
    ([{"people": [], "canvas_height": 10, "canvas_width": -3}], "canvas_width' must be a positive integer"),
    ([{"canvas_height": 10, "canvas_width": 10}], "frame 0: missing 'people'"),
    ([{"people": {}, "canvas_height": 10, "canvas_width": 10}], "'people' must be a list"),
    ([{"people": [], "canvas_height": 10, "canvas_width": 10}, 5], "frame 1: expected a dict"),
    ([{"people": [{"pose_keypoints_2d": [1.0] * 53}], "canvas_height": 10, "canvas_width": 10}],
     r"frame 0, person 0, 'pose_keypoints_2d': expected 54 \(18 points x 3\) or 75"),
    ([{"people": [{"pose_keypoints_2d": [1.0] * 54}, {"hand_left_keypoints_2d": [1.0] * 60}],
       "canvas_height": 10, "canvas_width": 10}], r"person 1, 'hand_left_keypoints_2d': expected 63"),
    ([{"people": [{"pose_keypoints_2d": [1.0] * 53 + ["x"]}], "canvas_height": 10, "canvas_width": 10}],
     "value 53 is 'x'"),
    ([{"people": [{"face_keypoints_2d": [float("nan")] * 210}], "canvas_height": 10, "canvas_width": 10}],
     "NaN"),
    ([{"people": [{"pose_keypoints_2d": "1,2,3"}], "canvas_height": 10, "canvas_width": 10}],
     "expected a list of numbers or null"),
])
def test_malformed_input_says_where(obj, match):
    with pytest.raises(KeypointFormatError, match=match):
        from_pose_keypoint_json(obj)


def test_canvas_size_fallback():
    js = [{"people": [{"pose_keypoints_2d": [0.5, 0.25, 1.0] + [0.0] * 51}]}]
    f = from_pose_keypoint_json(js, canvas_size=(200, 400))[0]
    assert (f.width, f.height) == (200, 400)
    np.testing.assert_allclose(f.people[0].body[0, :2], [100, 100])


def test_save_and_load_file(tmp_path, frames):
    path = tmp_path / "sub" / "kp.json"
    save_keypoints(path, frames)
    assert isinstance(json.loads(path.read_text()), list)
    back = load_keypoints(path)
    assert len(back) == 2 and len(back[0].people) == 2
    assert [p.name for p in path.parent.iterdir()] == ["kp.json"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_keypoints(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KeypointFormatError, match="bad.json.*not valid JSON"):
        load_keypoints(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"people": [{"pose_keypoints_2d": [1]}], "canvas_height": 5, "canvas_width": 5}]))
    with pytest.raises(KeypointFormatError, match=r"wrong.json: POSE_KEYPOINT frame 0, person 0"):
        load_keypoints(wrong)
