"""The Tasks extractor's models: the three install-time rewrites of the 0.10.14 TFLite files
(xdyna_core/preprocess/mediapipe_models.py) checked on their own (structure, the rotation's algebra)
and through the Tasks pipeline against the legacy 0.10.14 graphs' landmarks stored by
bench/mediapipe_reference.py (no TFLite interpreter wheel is a dependency, so the rewritten
outputs are checked through the landmarkers that decode them)."""
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xdyna_core.preprocess import mediapipe_backend as mpb
from xdyna_core.preprocess import mediapipe_models as mm

REFERENCE = json.loads(Path(__file__).with_name("mediapipe_legacy_reference.json").read_text())["landmarks"]
REPO = Path(__file__).resolve().parents[2]


def test_palm_fix_rotates_keypoint_2_about_keypoint_0_only():
    assert math.degrees(mm.PALM_ROTATION_FIX) == pytest.approx(-26.6197, abs=1e-3)  # (90 rad mod 2pi) - 90 deg
    w = mm.palm_rotation_weights().astype(np.float64)
    x = np.random.default_rng(0).normal(0, 50, size=(5, 18))
    y = x @ w.T  # FULLY_CONNECTED: out = in . W^T
    others = [i for i in range(18) if i not in (8, 9)]
    np.testing.assert_allclose(y[:, others], x[:, others], atol=1e-4)
    v, v2 = x[:, 8:10] - x[:, 4:6], y[:, 8:10] - x[:, 4:6]
    np.testing.assert_allclose(np.linalg.norm(v2, axis=1), np.linalg.norm(v, axis=1), rtol=1e-5)
    turn = np.arctan2(v2[:, 1], v2[:, 0]) - np.arctan2(v[:, 1], v[:, 0])
    np.testing.assert_allclose((turn + np.pi) % (2 * np.pi) - np.pi, mm.PALM_ROTATION_FIX, atol=1e-5)


def test_face_pad_keeps_the_468_points_and_copies_eyelid_points():
    idx = mm.face_gather_indices()
    assert idx.shape == (1434,) and (idx[:1404] == np.arange(1404)).all()
    pad = idx[1404:].reshape(10, 3)
    assert (pad[:, 0] % 3 == 0).all() and (pad[:, 1:] - pad[:, :1] == [1, 2]).all()
    assert tuple(pad[:, 0] // 3) == mm.FACE_PAD_POINTS


def test_build_refuses_a_file_that_is_not_the_pinned_wheel(tmp_path):
    fake = tmp_path / mm.SOURCE_WHEEL
    fake.write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match="sha256"):
        mm.build_bundles(fake, tmp_path / "out")
    assert not (tmp_path / "out" / "pose_landmarker.task").exists()


# --------------------------------------------------------------------------- built bundles


@pytest.fixture(scope="module")
def bundles():
    if mpb.installed_mediapipe() != mm.TASKS_VERSION:
        pytest.skip(f"the Tasks runtime {mm.TASKS_VERSION} is not installed (mediapipe {mpb.installed_mediapipe()})")
    try:
        return mm.find_bundles()
    except FileNotFoundError as e:
        pytest.skip(f"{e}: run python install.py")


def _member(bundles, bundle, name):
    with zipfile.ZipFile(bundles[bundle]) as z:
        info = z.getinfo(name)
        assert info.compress_type == zipfile.ZIP_STORED
        return mm._load(z.read(name))


def _buffer(m, tensor_index, dtype):
    t = m.subgraphs[0].tensors[tensor_index]
    return np.frombuffer(bytes(m.buffers[t.buffer].data), dtype=dtype)


def test_bundles_hold_the_rewritten_models(bundles):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from mediapipe.tasks.metadata import schema_py_generated as tfl

    prov = json.loads((Path(bundles["pose_landmarker.task"]).parent / mm.PROVENANCE_FILE).read_text())
    assert prov["source_sha256"] == mm.SOURCE_WHEEL_SHA256 and prov["bundle_format"] == mm.BUNDLE_FORMAT
    assert prov["bundles"] == {n: mm.sha256(p) for n, p in bundles.items()}
    for name, members in mm.BUNDLES.items():
        with zipfile.ZipFile(bundles[name]) as z:
            assert sorted(z.namelist()) == sorted(members)

    face = _member(bundles, "face_landmarker.task", "face_landmarks_detector.tflite")
    sg = face.subgraphs[0]
    op = sg.operators[-1]
    assert face.operatorCodes[op.opcodeIndex].builtinCode == tfl.BuiltinOperator.GATHER
    assert op.builtinOptions.axis == 3 and int(op.outputs[0]) == int(sg.outputs[0])
    assert list(sg.tensors[int(sg.outputs[0])].shape) == [1, 1, 1, 1434]
    assert list(sg.tensors[int(op.inputs[0])].shape) == [1, 1, 1, 1404]  # the original landmark output
    np.testing.assert_array_equal(_buffer(face, int(op.inputs[1]), np.int32), mm.face_gather_indices())

    palm = _member(bundles, "hand_landmarker.task", "hand_detector.tflite")
    sg = palm.subgraphs[0]
    op = sg.operators[-1]
    assert palm.operatorCodes[op.opcodeIndex].builtinCode == tfl.BuiltinOperator.FULLY_CONNECTED
    assert op.builtinOptions.keepNumDims and int(op.outputs[0]) == int(sg.outputs[0]) and int(op.inputs[2]) == -1
    assert list(sg.tensors[int(op.inputs[0])].shape) == [1, 2016, 18]
    np.testing.assert_array_equal(_buffer(palm, int(op.inputs[1]), np.float32).reshape(18, 18),
                                  mm.palm_rotation_weights())

    pose = _member(bundles, "pose_landmarker.task", "pose_landmarks_detector.tflite")
    entry = [md for md in pose.metadata if md.name == b"TFLITE_METADATA"]
    assert len(entry) == 1
    md = meta.ModelMetadataT.InitFromPackedBuf(bytearray(pose.buffers[entry[0].buffer].data), 0)
    image = md.subgraphMetadata[0].inputTensorMetadata[0]
    norm = image.processUnits[0].options
    assert list(norm.mean) == [0.0] and list(norm.std) == [255.0]
    assert len(md.subgraphMetadata[0].outputTensorMetadata) == len(pose.subgraphs[0].outputs) == 5


def _image(spec):
    from xdyna_core.preprocess.video import read_video

    return read_video(REPO / spec.split(" frame ")[0], frame_count=1)[0][0]


def _crop(image, box):
    from xdyna_core.preprocess.mediapipe_tasks import _crop

    return _crop(image, box, REFERENCE["crop_size"])[0]


def test_tasks_landmarks_match_the_legacy_graphs(bundles):
    """Pose (metadata added), face (GATHER pad) and hands (palm rotation fix) through the Tasks
    landmarkers, against legacy 0.10.14 Pose / FaceMesh / Hands on the same pixels. Unpatched, the
    pose model does not load, the face points are scrambled (~100 px) and the hand points are
    ~10 px off on crops (spec MEDIAPIPE_ON_PY313.md)."""
    from xdyna_core.preprocess.mediapipe_tasks import _Landmarkers, face_mesh_engine

    lm = _Landmarkers(bundles)
    try:
        image = _image(REFERENCE["image"])
        h, w = image.shape[:2]
        res = lm.get("pose", num_poses=1).detect(lm.image(image))
        ours = np.array([(p.x * w, p.y * h) for p in res.pose_landmarks[0]])
        ref = np.array(REFERENCE["pose"]["points"])
        seen = np.array(REFERENCE["pose"]["visibility"]) > 0.5
        assert seen.sum() >= 20
        assert np.linalg.norm(ours - ref, axis=1)[seen].mean() < 2.0

        hands = REFERENCE["hands"]
        assert hands, "the reference holds no hand"
        for hand in hands:
            crop = _crop(_image(hand["image"]), hand["box"])
            res = lm.get("hand", num_hands=2).detect(lm.image(crop))
            ref = np.array(hand["points"])
            found = [np.array([(p.x * 256, p.y * 256) for p in hl]) for hl in res.hand_landmarks]
            assert found, "Tasks found no hand where legacy Hands found one"
            best = min(np.linalg.norm(f - ref, axis=1).mean() for f in found)
            assert best < 1.0, f"hand landmarks {best:.2f} px from legacy"
    finally:
        lm.close()

    mesh, close = face_mesh_engine()
    try:
        pts = mesh(np.ascontiguousarray(_crop(image, REFERENCE["face"]["box"])))
    finally:
        close()
    assert pts is not None and pts.shape == (468, 2)
    assert np.linalg.norm(pts - np.array(REFERENCE["face"]["points"]), axis=1).mean() < 0.5


@pytest.mark.parametrize("version, why", [
    ("0.10.14", None),  # legacy solutions with bundled models
    ("0.10.21", "mediapipe 0.10.21 is installed, which has no bundled models"),
    ("0.10.31", "mediapipe 0.10.31 is installed, not the Tasks runtime 1.2.3"),
    (None, "mediapipe is not installed"),
    ("1.2.3", "the MediaPipe models are not built in"),
])
def test_which_mediapipe_serves(version, why, monkeypatch, tmp_path):
    """Package metadata and bundle files decide, nothing imported: legacy 0.10.14 as installed, the
    Tasks runtime 1.2.3 only with its bundles, any other version is reported (and never replaced)."""
    monkeypatch.setattr(mpb, "installed_mediapipe", lambda: version)
    monkeypatch.setenv("XDYNA_MEDIAPIPE_MODELS", str(tmp_path / "none"))
    got = mpb.unavailable_reason()
    if version == "1.2.3":
        assert got.startswith(why) and str(tmp_path / "none") in got, got
    else:
        assert got == why
    if version not in (None, "1.2.3"):
        assert mm.set_up() == f"kept the installed mediapipe {version}"
