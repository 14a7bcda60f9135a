"""MediaPipe backend: BlazePose -> OpenPose-18 mapping, install errors, documented empty results,
and the acceptance check against X-Dyna's official pose videos (skeleton pixel coverage)."""
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("cv2")

from tests.conftest import assets_dir
from xdyna_core.preprocess import mediapipe_backend as mpb
from xdyna_core.preprocess.keypoints import PoseFrame
from xdyna_core.preprocess.render import render_pose, skeleton_coverage

# Spec PREPROCESSING.md §4.1, written out independently of the module.
SPEC_BLAZEPOSE = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28,
                  11: 23, 12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7}

SAMPLE_STEP = 5  # every 5th frame
SAMPLES = 40  # first 40 sampled frames (200 video frames) per video: keeps CPU time ~10 s
TOLERANCE_PX = 5


def _landmarks(vis):
    return [SimpleNamespace(x=i / 100, y=1 - i / 100, visibility=v) for i, v in enumerate(vis)]


def test_blazepose_to_openpose_mapping():
    lm = _landmarks([0.9] * 33)
    body = mpb.body_from_blazepose(lm, 200, 400)
    for op, bp in SPEC_BLAZEPOSE.items():
        assert body[op].tolist() == pytest.approx([bp / 100 * 200, (1 - bp / 100) * 400, 0.9]), op
    assert body[1, :2].tolist() == pytest.approx([11.5 / 100 * 200, (1 - 11.5 / 100) * 400])
    vis = [0.9] * 33
    vis[12] = 0.4  # right shoulder not visible -> no right shoulder and no neck
    vis[26] = 0.5  # threshold is "> 0.5"
    body = mpb.body_from_blazepose(_landmarks(vis), 200, 400)
    assert body[2, 2] == 0 and body[1, 2] == 0 and body[9, 2] == 0 and body[5, 2] > 0


def test_missing_mediapipe_gives_install_hint(monkeypatch):
    monkeypatch.setattr(mpb, "_mp", None)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(ImportError, match=r"pip install mediapipe==0\.10\.14"):
        mpb.MediaPipePoseDetector()
    import google.protobuf

    monkeypatch.setattr(google.protobuf, "__version__", "7.34.0")
    with pytest.raises(ImportError, match=r"protobuf.*7\.34\.0"):
        mpb.import_mediapipe()


# --------------------------------------------------------------------------- with mediapipe


def _read(path, step, count):
    av = pytest.importorskip("av")
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
                if len(out) == count:
                    break
    return out


def _video(k):
    return assets_dir() / "driving_video" / f"example_{k}_driving_{k}.mp4", assets_dir() / "poses" / f"example_{k}_pose_{k}.mp4"


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("mediapipe")
    with mpb.MediaPipePoseDetector(static_image_mode=True) as det:
        yield det


def test_no_person_and_no_face(detector):
    # No person: an empty PoseFrame of the image size, which renders black.
    empty = detector(np.zeros((256, 192, 3), np.uint8))
    assert isinstance(empty, PoseFrame) and (empty.width, empty.height) == (192, 256) and empty.people == []
    assert not render_pose(empty, 192, 256).any()
    # A real frame: body, both hands and a 68-point face.
    frame = _read(_video(1)[0], 1, 1)[0]
    pf = detector(frame)
    p = pf.main
    assert p is not None and p.body.shape == (18, 3) and (p.body[:14, 2] > 0.5).sum() >= 12
    assert p.face is not None and p.face.shape == (68, 3)
    assert p.left_hand is not None and p.left_hand.shape == (21, 3)
    # Face hidden (painted with the background): the person stays, the face part is None.
    from xdyna_core.preprocess.face_landmarks import face_box_from_pose, landmarks_from_pose

    x0, y0, x1, y1 = (int(v) for v in face_box_from_pose(p))
    hidden = frame.copy()
    hidden[max(0, y0 - 10):y1 + 10, max(0, x0 - 10):x1 + 10] = frame[5, 5]
    q = detector(hidden)
    assert q.main is not None and q.main.face is None and landmarks_from_pose(q) is None
    with pytest.raises(ValueError, match="uint8"):
        detector(frame.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        detector(frame[..., 0])


def test_coverage_of_official_pose_videos(detector, record_property):
    """Acceptance: MediaPipe keypoints drawn by our renderer cover >= 65 % of each official pose
    video's skeleton pixels and >= 70 % on average (ours within 5 px; every 5th frame)."""
    results = {}
    for k in (1, 2, 3):
        drv, pose = _video(k)
        frames = _read(drv, SAMPLE_STEP, SAMPLES)
        official = _read(pose, SAMPLE_STEP, SAMPLES)
        assert len(frames) == len(official) == SAMPLES
        ours = []
        for f, o in zip(frames, official):
            pf = detector(f)
            ours.append(render_pose(pf, o.shape[1], o.shape[0]))
        r = skeleton_coverage(ours, official, tolerance_px=TOLERANCE_PX)
        results[k] = r
        record_property(f"coverage_example_{k}", round(r.covered, 4))
        record_property(f"precision_example_{k}", round(r.precision, 4))
    mean = float(np.mean([r.covered for r in results.values()]))
    record_property("coverage_mean", round(mean, 4))
    report = ", ".join(f"ex{k} {r.covered:.3f} (precision {r.precision:.3f})" for k, r in results.items())
    print(f"\nMediaPipe skeleton coverage of the official pose videos: {report}; mean {mean:.3f}")
    for k, r in results.items():
        assert r.covered >= 0.65, f"example {k}: coverage {r.covered:.3f} < 0.65 ({report})"
    assert mean >= 0.70, f"mean coverage {mean:.3f} < 0.70 ({report})"
