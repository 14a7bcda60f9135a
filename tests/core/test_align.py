"""Driving-to-reference alignment: recovery of a known similarity, missing joints, fallbacks."""
import numpy as np
import pytest

pytest.importorskip("cv2")

from xdyna_core.preprocess.align import (
    Alignment,
    apply_alignment,
    choose_driving_frame,
    fit_alignment,
    warp_frame,
)
from xdyna_core.preprocess.keypoints import Person, PoseFrame

REF = np.array([
    (256, 120), (256, 200), (196, 200), (150, 300), (120, 400), (316, 200), (362, 300), (392, 400),
    (220, 420), (210, 580), (200, 740), (292, 420), (302, 580), (312, 740),
    (240, 100), (272, 100), (220, 110), (292, 110),
], np.float32)


def person(xy, conf=None):
    b = np.ones((18, 3), np.float32)
    b[:, :2] = xy
    if conf is not None:
        b[:, 2] = conf
    return Person(b)


def driving_from_ref(s, t):
    """Driving coordinates such that ref = s * drv + t."""
    return (REF - np.array(t, np.float32)) / s


def test_recovers_scale_and_shift_exactly():
    s, t = 1.37, (-40.5, 63.25)
    ref = PoseFrame(512, 896, [person(REF)])
    drv = PoseFrame(720, 1280, [person(driving_from_ref(s, t))])
    a = fit_alignment(ref, drv)
    assert a.scale == pytest.approx(s, rel=1e-5)
    assert a.translation == pytest.approx(t, abs=1e-3)
    assert a.anchor == "torso centre" and not a.is_fallback and a.out_size == (512, 896)
    hand = np.ones((21, 3), np.float32)
    hand[:, :2] = driving_from_ref(s, t)[:1] + np.arange(21)[:, None]
    drv.people[0].left_hand = hand
    out = apply_alignment([drv], a)[0]
    assert (out.width, out.height) == (512, 896)
    np.testing.assert_allclose(out.main.body[:, :2], REF, atol=1e-3)
    np.testing.assert_allclose(out.main.left_hand[:, :2], REF[:1] + s * np.arange(21)[:, None], atol=1e-3)
    assert out.main.right_hand is None and out.main.face is None
    # The input frames are not modified.
    np.testing.assert_allclose(drv.main.body[:, :2], driving_from_ref(s, t), atol=1e-4)


def test_missing_joints_and_outlier_segment():
    s, t = 0.8, (30.0, -12.0)
    d = driving_from_ref(s, t)
    conf = np.ones(18, np.float32)
    conf[[8, 9, 10, 12, 13]] = 0  # right hip and leg, left knee and ankle missing in the driving pose
    d[8] = (-1, -1)  # placeholder coordinates of a missing point must not matter
    drv = PoseFrame(512, 896, [person(d, conf)])
    ref = PoseFrame(512, 896, [person(REF)])
    a = fit_alignment(ref, drv)
    assert a.scale == pytest.approx(s, rel=1e-5)
    assert a.anchor == "neck"  # mid-hip needs both hips
    assert a.translation == pytest.approx(t, abs=1e-3)
    out = apply_alignment([drv], a)[0].main.body
    assert out[8].tolist() == [-1.0, -1.0, 0.0]  # missing points untouched
    # One wildly wrong segment (a mis-detected knee) does not move the median scale.
    d2 = driving_from_ref(s, t)
    d2[9] += (0, 80)
    a2 = fit_alignment(ref, PoseFrame(512, 896, [person(d2)]))
    assert a2.scale == pytest.approx(s, rel=1e-5)


def test_no_person_gives_identity_with_warning():
    ref = PoseFrame(512, 896, [person(REF)])
    a = fit_alignment(ref, PoseFrame(512, 896, []))
    assert a.is_fallback and a.description.startswith("WARNING") and "driving" in a.description
    assert a.scale == 1.0 and a.translation == (0.0, 0.0)
    a = fit_alignment(PoseFrame(512, 896, []), PoseFrame(512, 896, [person(REF)]))
    assert a.is_fallback and "reference" in a.description
    # Nothing in common (only arms in one, only legs in the other) -> fallback too.
    arms = np.zeros(18, np.float32)
    arms[[3, 4, 6, 7]] = 1
    legs = np.zeros(18, np.float32)
    legs[[9, 10, 12, 13]] = 1
    a = fit_alignment(PoseFrame(512, 896, [person(REF, arms)]), PoseFrame(512, 896, [person(REF, legs)]))
    assert a.is_fallback and "segment" in a.description


def test_fallback_for_other_frame_size_is_the_crop2ratio_fit():
    # 1920x1080 landscape driving onto a 512x896 reference: full height kept, centred crop.
    a = fit_alignment(PoseFrame(512, 896, [person(REF)]), PoseFrame(1920, 1080, []))
    assert a.is_fallback and a.anchor == "frame"
    # crop2ratio: target_w = int(1080 / 896 * 512) = 617, start_w = (1920 - 617) // 2 = 651.
    assert a.scale == pytest.approx(512 / 617)
    assert a.translation == pytest.approx((-651 * 512 / 617, 0.0))


def test_warp_frame_moves_pixels_like_points():
    s, t = 0.5, (100.0, 50.0)
    a = Alignment(s, t, "test", "", (512, 896))
    img = np.zeros((1000, 800, 3), np.uint8)
    img[396:405, 296:305] = 255  # 9x9 white square centred at (300, 400)
    out = warp_frame(img, a)
    assert out.shape == (896, 512, 3)
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert abs(xs.mean() - (300 * s + t[0])) < 0.6 and abs(ys.mean() - (400 * s + t[1])) < 0.6
    assert out[0, 0].tolist() == [0, 0, 0]


def test_choose_driving_frame():
    partial = np.ones(18, np.float32)
    partial[8] = 0
    frames = [PoseFrame(10, 10, []), PoseFrame(10, 10, [person(REF, partial)]),
              PoseFrame(10, 10, [person(REF)]), PoseFrame(10, 10, [person(REF)])]
    assert choose_driving_frame(frames) == 2
    assert choose_driving_frame(frames[:2]) == 1
    assert choose_driving_frame([PoseFrame(10, 10, [])]) == 0
