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


# ------------------------------------------------------------------ as comfyui_controlnet_aux writes and reads

W, H = 512, 896


def standin_frames(n=3):
    """Pixel PoseFrames of the stand-in person of tests/real_comfyui/standins.py (body, both hands, a
    68-point face), one arm swinging."""
    from tests.real_comfyui.standins import CROP_H, CROP_W, SCORE, wholebody133
    from xdyna_core.preprocess.dwpose import wholebody_to_person

    base = np.array(wholebody133(), np.float64) * (W / CROP_W, H / CROP_H)
    out = []
    for i in range(n):
        pts = base.copy()
        pts[[7, 9], 0] += 20 * i
        pts[91:112, 0] += 20 * i
        out.append(PoseFrame(W, H, [wholebody_to_person(pts, np.full(133, SCORE))]))
    return out


def controlnet_aux_json(frames):
    """POSE_KEYPOINT as controlnet_aux's DWPose node writes it: x / width and y / height as full floats,
    confidence 1.0 or the all-zero triple, null for a part without points, the face followed by the
    body's two eye points."""
    def part(a, width, height):
        if a is None or not (a[:, 2] > 0).any():
            return None
        return [v for x, y, c in a.astype(np.float64)
                for v in ([x / width, y / height, 1.0] if c > 0 else [0.0, 0.0, 0.0])]

    out = []
    for f in frames:
        people = []
        for p in f.people:
            face = None if p.face is None else np.concatenate([p.face, p.body[[14, 15]]])
            body = part(p.body, f.width, f.height) or [0.0] * 54
            people.append({"pose_keypoints_2d": body, "face_keypoints_2d": part(face, f.width, f.height),
                           "hand_left_keypoints_2d": part(p.left_hand, f.width, f.height),
                           "hand_right_keypoints_2d": part(p.right_hand, f.width, f.height)})
        out.append({"people": people, "canvas_height": f.height, "canvas_width": f.width})
    return out


def touching_the_border(frames):
    """The person reaches the canvas edges: a wrist 2.5 px left of it (x / width = -0.005), a hand
    point on the right edge (x / width = 1.0), an ankle on the bottom edge."""
    p = frames[0].people[0]
    p.body[4, 0] = -2.5  # right wrist
    p.right_hand[0, :2] = (-2.5, p.body[4, 1])
    p.left_hand[8, 0] = float(W)
    p.body[10, 1] = float(H)  # right ankle
    return frames


def assert_same_points(got, want, atol):
    assert [(f.width, f.height, len(f.people)) for f in got] == [(f.width, f.height, len(f.people)) for f in want]
    for fg, fw in zip(got, want):
        for pg, pw in zip(fg.people, fw.people):
            for name in ("body", "left_hand", "right_hand", "face"):
                a, b = getattr(pw, name), getattr(pg, name)
                assert (a is None) == (b is None), name
                if a is None:
                    continue
                seen = a[:, 2] > 0
                np.testing.assert_array_equal(b[:, 2] > 0, seen, err_msg=name)
                np.testing.assert_allclose(b[seen, :2], a[seen, :2], atol=atol, err_msg=name)


def test_controlnet_aux_normalised_person_touching_the_border_round_trips():
    """28 of 34 such frames were read as pixels (up to 1,020 px off) when the rule was per frame and
    0..1: controlnet_aux decides per part and accepts |v| <= 1."""
    frames = touching_the_border(standin_frames())
    js = controlnet_aux_json(frames)
    xs = js[0]["people"][0]["pose_keypoints_2d"][0::3]
    assert min(xs) < 0 and max(js[0]["people"][0]["hand_left_keypoints_2d"][0::3]) == 1.0
    assert_same_points(from_pose_keypoint_json(js), frames, atol=0.5)
    # our writer's normalised output reads back as closely
    assert_same_points(from_pose_keypoint_json(to_pose_keypoint_json(frames, normalized=True)), frames, atol=0.5)


def test_normalised_or_pixels_is_decided_per_part():
    frames = standin_frames(1)
    js = controlnet_aux_json(frames)
    p = frames[0].people[0]
    # an editor put the right hand back in pixels: the body, face and left hand stay normalised
    js[0]["people"][0]["hand_right_keypoints_2d"] = [v for x, y, c in p.right_hand.astype(float) for v in (x, y, 1.0)]
    assert_same_points(from_pose_keypoint_json(js), frames, atol=0.5)
    # a part of pixels that includes one value beyond 1 is pixels, as for controlnet_aux
    from xdyna_core.preprocess.keypoints import is_normalized

    assert is_normalized(np.array([[-0.02, 0.5], [1.0, 1.0]])) and not is_normalized(np.array([[0.5, 1.01]]))
    assert not is_normalized(np.zeros((0, 2)))


def test_null_parts_stay_absent_and_a_face_without_points_stays_empty():
    frames = standin_frames(1)
    p = frames[0].people[0]
    p.left_hand[:] = 0.0  # present as an array, but no point found
    p.face[:, 2] = 0.0  # no face point (the body's eyes are still there)
    p.right_hand = None
    js = to_pose_keypoint_json(frames)[0]["people"][0]
    assert js["hand_left_keypoints_2d"] is None and js["hand_right_keypoints_2d"] is None
    assert js["face_keypoints_2d"] is None  # not the two eye points
    assert len(js["pose_keypoints_2d"]) == 54
    back = from_pose_keypoint_json(to_pose_keypoint_json(frames))[0].people[0]
    assert back.left_hand is None and back.right_hand is None and back.face is None
    # written by others: zero-filled lists and a 70-point face holding only the eyes read as absent too
    eyes_only = [0.0] * 204 + [200.0, 100.0, 1.0, 220.0, 100.0, 1.0]
    other = {"people": [{"pose_keypoints_2d": [100.0, 100.0, 1.0] * 18, "face_keypoints_2d": eyes_only,
                         "hand_left_keypoints_2d": [0.0] * 63, "hand_right_keypoints_2d": None}],
             "canvas_width": W, "canvas_height": H}
    q = from_pose_keypoint_json(other)[0].people[0]
    assert q.face is None and q.left_hand is None and q.right_hand is None


# ------------------------------------------------------------------ the one sanity check

def bad_keypoints(case):
    """POSE_KEYPOINT JSON of the stand-in person broken one way (the five cases of issue 22)."""
    js = to_pose_keypoint_json(standin_frames(4))
    if case == "no person":
        for f in js:
            f["people"] = []
    elif case == "off canvas":
        for f in js:
            for p in f["people"]:
                for key, vals in p.items():
                    if vals:
                        p[key] = [v + 2000.0 if j % 3 == 0 and vals[j + 2] > 0 else v for j, v in enumerate(vals)]
    elif case == "absurd":
        js[1]["people"][0]["pose_keypoints_2d"][0] = 1e30
        js[2]["people"][0]["pose_keypoints_2d"][3] = -1e30
    elif case == "nan":
        js[3]["people"][0]["pose_keypoints_2d"][0] = float("nan")
    elif case == "canvas":
        for f in js:
            f["canvas_width"], f["canvas_height"] = 100, 50
    return js


BAD_CASES = {  # case -> (error class name, what the message must say)
    "no person": ("KeypointCheckError", r"no person found in any of the 4 frames of bad\.json"),
    "off canvas": ("KeypointCheckError", r"bad\.json: frames 0-3: every keypoint lies off the 512x896 canvas"),
    "absurd": ("KeypointCheckError", r"bad\.json: frames 1-2: coordinates that cannot be pixels: values up to 1e\+30"),
    "nan": ("KeypointFormatError", r"frame 3, person 0, 'pose_keypoints_2d': contains NaN"),
    "canvas": ("KeypointCheckError", r"bad\.json: frames 0-3: the canvas 100x50 does not match the coordinates"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_keypoints_are_refused_naming_the_frames(tmp_path, case):
    from xdyna_core.errors import XDynaError
    from xdyna_core.preprocess.keypoint_checks import check_keypoints

    kind, match = BAD_CASES[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad_keypoints(case)))
    with pytest.raises(XDynaError, match=match) as ei:
        check_keypoints(load_keypoints(path), "bad.json")
    assert type(ei.value).__name__ == kind and "\n" not in str(ei.value)


def test_bad_pose_keypoint_from_another_node_is_refused_too():
    from xdyna_core.preprocess.driving import parse_keypoints
    from xdyna_core.preprocess.keypoint_checks import KeypointCheckError

    with pytest.raises(KeypointCheckError, match=r"pose_keypoint: frames 1-2: coordinates that cannot be pixels"):
        parse_keypoints(bad_keypoints("absurd"))
    frames = [PoseFrame(W, H, [Person(np.full((18, 3), np.nan, np.float32))])]  # e.g. an extractor's NaN
    frames[0].people[0].body[:, 2] = 1.0
    from xdyna_core.preprocess.keypoint_checks import check_keypoints

    with pytest.raises(KeypointCheckError, match="frame 0: coordinates that cannot be pixels: NaN or infinite"):
        check_keypoints(frames, "the driving images")


def test_several_people_give_one_note_naming_the_person_used():
    from xdyna_core.preprocess.keypoint_checks import check_keypoints

    frames = standin_frames(6)
    for f in frames[2:5]:
        f.people += [f.people[0].copy() for _ in range(4)]
    notes = check_keypoints(frames, "dance.json")
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "frames 2-4 hold up to 5 people" in notes[0] and "X-Dyna animates one person" in notes[0]
    assert "person 0" in notes[0]
    assert check_keypoints(standin_frames(2), "dance.json") == []


def test_partly_off_canvas_and_frames_without_a_person_are_fine():
    from xdyna_core.preprocess.keypoint_checks import check_keypoints

    frames = standin_frames(3)
    frames[0].people[0].body[[9, 10, 12, 13], 1] += 400  # legs below the picture (a close-up)
    frames[1].people = []
    assert check_keypoints(frames, "clip") == []
