"""68-point face landmark sources: DWPose face points, insightface 1k3d68 (stand-in ONNX), FaceMesh."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from tests.conftest import assets_dir
from xdyna_core.preprocess import face_landmarks as fl
from xdyna_core.preprocess import facemesh
from xdyna_core.preprocess.keypoints import Person, PoseFrame

# --------------------------------------------------------------------------- table and pose source


def test_facemesh_table():
    t = facemesh.FACEMESH_TO_IBUG68
    assert len(t) == 68 and len(set(t)) == 68 and all(0 <= i < 468 for i in t)
    mesh = np.stack([np.arange(468), 1000 + np.arange(468), np.zeros(468)], 1).astype(np.float32)
    out = facemesh.facemesh_to_ibug68(mesh)
    assert out.shape == (68, 2)
    assert out[:, 0].tolist() == list(t) and out[8].tolist() == [152, 1152]  # chin tip = vertex 152
    with pytest.raises(ValueError, match="468"):
        facemesh.facemesh_to_ibug68(np.zeros((100, 2)))


def _face(conf=1.0):
    rng = np.random.default_rng(0)
    f = np.ones((68, 3), np.float32) * conf
    f[:, :2] = rng.uniform(100, 160, (68, 2))
    return f


def test_landmarks_from_pose():
    assert fl.landmarks_from_pose(PoseFrame(512, 896, [])) is None
    body = np.zeros((18, 3), np.float32)
    assert fl.landmarks_from_pose(PoseFrame(512, 896, [Person(body)])) is None
    face = _face()
    out = fl.landmarks_from_pose(PoseFrame(512, 896, [Person(body, face=face)]))
    np.testing.assert_array_equal(out, face[:, :2])
    # A few missing points take the mean of their group's valid points.
    f2 = face.copy()
    f2[[37, 50], 2] = 0
    f2[[37, 50], :2] = -1
    out = fl.landmarks_from_pose(PoseFrame(512, 896, [Person(body, face=f2)]))
    np.testing.assert_allclose(out[37], face[[36, 38, 39, 40, 41], :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(out[50], face[[i for i in range(48, 68) if i != 50], :2].mean(0), rtol=1e-6)
    # A whole eye missing, or too few points -> no face.
    f3 = face.copy()
    f3[42:48, 2] = 0
    assert fl.landmarks_from_pose(PoseFrame(512, 896, [Person(body, face=f3)])) is None
    assert fl.landmarks_from_pose(PoseFrame(512, 896, [Person(body, face=_face(0.2))])) is None


def test_face_box_from_pose():
    b = np.zeros((18, 3), np.float32)
    assert fl.face_box_from_pose(None) is None and fl.face_box_from_pose(Person(b)) is None
    b[[0, 1, 2, 5, 14, 15, 16, 17]] = [
        (250, 220, 1), (250, 300, 1), (210, 300, 1), (290, 300, 1),
        (240, 210, 1), (260, 210, 1), (228, 220, 1), (272, 220, 1),
    ]
    x0, y0, x1, y1 = fl.face_box_from_pose(Person(b))
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(max(1.2 * 44, 2.2 * 20, 0.6 * 80, 0.35 * 80))
    assert (x0 + x1) / 2 == pytest.approx(250) and (y0 + y1) / 2 == pytest.approx(216)


# --------------------------------------------------------------------------- insightface lookup


def test_find_insightface_model(tmp_path, monkeypatch):
    monkeypatch.delenv("XDYNA_INSIGHTFACE_DIR", raising=False)
    root = tmp_path / "insightface"
    (root / "models" / "buffalo_l").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e:
        fl.find_insightface_landmark_model([root])
    msg = str(e.value)
    assert "1k3d68.onnx" in msg and str(root / "models" / "buffalo_l") in msg and str(root / "models" / "antelopev2") in msg
    custom = root / "models" / "mypack"
    custom.mkdir()
    (custom / "1k3d68.onnx").write_bytes(b"x")
    assert fl.find_insightface_landmark_model([root]) == custom / "1k3d68.onnx"
    (root / "models" / "antelopev2").mkdir()
    (root / "models" / "antelopev2" / "1k3d68.onnx").write_bytes(b"x")
    assert fl.find_insightface_landmark_model([root]).parent.name == "antelopev2"  # known packs first
    assert fl.find_insightface_landmark_model([root], pack="mypack").parent.name == "mypack"
    monkeypatch.setenv("XDYNA_INSIGHTFACE_DIR", str(root))
    assert fl.find_insightface_landmark_model().parent.name == "antelopev2"
    with pytest.raises(FileNotFoundError, match="XDYNA_INSIGHTFACE_DIR|Searched"):
        fl.find_insightface_landmark_model([tmp_path / "nowhere"], pack="nopack")


def test_find_insightface_model_one_folder_deeper(tmp_path, monkeypatch):
    """antelopev2.zip unpacked inside models/insightface/models/antelopev2/ nests the files once more."""
    monkeypatch.delenv("XDYNA_INSIGHTFACE_DIR", raising=False)
    root = tmp_path / "insightface"
    nested = root / "models" / "antelopev2" / "antelopev2"
    nested.mkdir(parents=True)
    (nested / "1k3d68.onnx").write_bytes(b"x")
    assert fl.find_insightface_landmark_model([root]) == nested / "1k3d68.onnx"
    # A file directly in the pack folder still wins over the nested copy.
    (nested.parent / "1k3d68.onnx").write_bytes(b"x")
    assert fl.find_insightface_landmark_model([root]) == nested.parent / "1k3d68.onnx"


# --------------------------------------------------------------------------- insightface runner


def _standin(path: Path, internal_norm: bool, out_size: int = 3309):
    """A tiny ONNX "landmark model": every point = (argmax column, argmax row, max value) of input
    channel 0, in insightface's output convention x, y in [-1, 1] (pixel / 96 - 1), z = value / 96."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    S = 192
    names = ("Sub_0", "Mul_1") if internal_norm else ("Identity_a", "Identity_b")
    c = lambda name, vals, dt=TensorProto.INT64: helper.make_tensor(name, dt, [len(vals)], vals)
    nodes = [
        helper.make_node("Sub" if internal_norm else "Identity", ["data"] + (["zero"] if internal_norm else []), ["a"], name=names[0]),
        helper.make_node("Mul" if internal_norm else "Identity", ["a"] + (["one"] if internal_norm else []), ["b"], name=names[1]),
        helper.make_node("Slice", ["b", "s0", "s1", "s1"], ["ch0"], name="slice"),
        helper.make_node("ReduceMax", ["ch0"], ["colmax"], axes=[2], keepdims=0, name="colmax"),
        helper.make_node("ArgMax", ["colmax"], ["xi"], axis=2, keepdims=0, name="xi"),
        helper.make_node("ReduceMax", ["ch0"], ["rowmax"], axes=[3], keepdims=0, name="rowmax"),
        helper.make_node("ArgMax", ["rowmax"], ["yi"], axis=2, keepdims=0, name="yi"),
        helper.make_node("ReduceMax", ["ch0"], ["gmax"], axes=[2, 3], keepdims=0, name="gmax"),
        helper.make_node("Cast", ["xi"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["yi"], ["yf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["xf", "k96"], ["xd"]), helper.make_node("Sub", ["xd", "one"], ["x"]),
        helper.make_node("Div", ["yf", "k96"], ["yd"]), helper.make_node("Sub", ["yd", "one"], ["y"]),
        helper.make_node("Div", ["gmax", "k96"], ["z"]),
        helper.make_node("Concat", ["x", "y", "z"], ["xyz"], axis=1),
        helper.make_node("Tile", ["xyz", "reps"], ["out"]),
    ]
    inits = [
        c("s0", [0]), c("s1", [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("k96", TensorProto.FLOAT, [], [96.0]),
        c("reps", [1, out_size // 3]),
        helper.make_tensor("unused_weight", TensorProto.FLOAT, [4096], np.zeros(4096, np.float32).tolist()),
    ]
    g = helper.make_graph(
        nodes, "landmark_standin",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, out_size])], initializer=inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def test_onnx_node_names_without_onnx_package(tmp_path):
    model = _standin(tmp_path / "m.onnx", internal_norm=True)
    assert fl.onnx_first_node_names(tmp_path / "m.onnx", 8) == [n.name for n in model.graph.node[:8]]
    assert fl.insightface_input_normalisation(tmp_path / "m.onnx") == (0.0, 1.0)
    _standin(tmp_path / "n.onnx", internal_norm=False)
    assert fl.insightface_input_normalisation(tmp_path / "n.onnx") == (127.5, 128.0)


@pytest.mark.parametrize("internal_norm", [False, True])
def test_insightface_runner_with_standin(tmp_path, internal_norm):
    _standin(tmp_path / "1k3d68.onnx", internal_norm)
    model = fl.InsightFaceLandmarks(tmp_path / "1k3d68.onnx")
    assert model.input_size == 192
    img = np.zeros((896, 512, 3), np.uint8)
    X, Y = 263, 241
    img[Y - 1:Y + 2, X - 1:X + 2, 0] = 255  # a 3x3 dot in the RED channel only
    img[Y - 1:Y + 2, X - 1:X + 2, 2] = 0
    box = (230.0, 200.0, 294.0, 270.0)  # 64 x 70 face box -> crop scale 192 / 105
    pts = model(img, box, return_3d=True)
    assert pts.shape == (68, 3) and np.isfinite(pts).all()
    s = 192 / (1.5 * 70)
    # x, y: back in frame pixels on the dot (argmax picks the plateau's first pixel: <= 1 frame px).
    assert np.all(np.abs(pts[:, 0] - X) <= 1.0) and np.all(np.abs(pts[:, 1] - Y) <= 1.0)
    # z carries the normalised peak value: the runner chose insightface's normalisation.
    expected = 255.0 if internal_norm else (255 - 127.5) / 128
    np.testing.assert_allclose(pts[:, 2] * s, expected, rtol=1e-4)
    # A dot in the blue channel is invisible to it (the model is fed RGB, not BGR).
    img_b = np.zeros_like(img)
    img_b[Y - 1:Y + 2, X - 1:X + 2, 2] = 255
    assert np.all(np.abs(model(img_b, box)[:, 0] - X) > 5)
    # from_pose: box from the head keypoints, None without a person.
    assert model.from_pose(img, PoseFrame(512, 896, [])) is None
    with pytest.raises(ValueError, match="positive size"):
        model(img, (10, 10, 10, 30))


def test_insightface_rejects_106_point_model(tmp_path):
    # A small (2-D style) output, like 2d106det's 212 values (210 here: the stand-in tiles 3-vectors).
    _standin(tmp_path / "2d106det.onnx", internal_norm=False, out_size=210)
    with pytest.raises(ValueError, match="3309"):
        fl.InsightFaceLandmarks(tmp_path / "2d106det.onnx")
    with pytest.raises(FileNotFoundError):
        fl.InsightFaceLandmarks(tmp_path / "missing.onnx")


# --------------------------------------------------------------------------- MediaPipe FaceMesh


def test_mediapipe_face_landmarks_on_a_driving_frame():
    from xdyna_core.preprocess import mediapipe_backend as mpb

    if mpb.unavailable_reason() is not None:
        pytest.skip(f"no MediaPipe here: {mpb.unavailable_reason()}")
    av = pytest.importorskip("av")

    path = assets_dir() / "driving_video" / "example_1_driving_1.mp4"
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with mpb.open_pose_detector(static_image_mode=True, with_hands=False, with_face=False) as det:
        pose = det(frame)
    box = fl.face_box_from_pose(pose.main)
    assert box is not None
    lm = fl.MediaPipeFaceLandmarks().from_pose(frame, pose)
    assert lm is not None and lm.shape == (68, 2) and np.isfinite(lm).all()
    x0, y0, x1, y1 = box
    side = x1 - x0
    assert np.all((lm[:, 0] > x0 - side / 2) & (lm[:, 0] < x1 + side / 2))
    assert np.all((lm[:, 1] > y0 - side / 2) & (lm[:, 1] < y1 + side / 2))
    # iBUG anatomy on a frontal face: eyes above the nose tip above the mouth above the chin,
    # the subject's right eye (36-41) on the image left.
    eye_r, eye_l = lm[36:42].mean(0), lm[42:48].mean(0)
    assert eye_r[0] < eye_l[0]
    assert max(eye_r[1], eye_l[1]) < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]
    # No face in a black image.
    assert fl.MediaPipeFaceLandmarks()(np.zeros((256, 256, 3), np.uint8)) is None
