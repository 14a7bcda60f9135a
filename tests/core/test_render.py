"""Pixel checks of the X-Dyna skeleton renderer against the spec tables (PREPROCESSING.md §3)."""
import colorsys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from xdyna_core.preprocess.keypoints import Person, PoseFrame
from xdyna_core.preprocess.render import (
    HAND_EDGE_COLORS,
    RenderStyle,
    render_pose,
    render_sequence,
    skeleton_coverage,
    skeleton_mask,
)

W, H = 512, 896

# Spec §3 colour table, written out independently of render.py.
SPEC_C = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]


def limb_color(i):
    return tuple(int(c * 0.6) for c in SPEC_C[i])


def body(points):
    """(18, 3) from {joint: (x, y)}; others missing."""
    b = np.zeros((18, 3), np.float32)
    for j, (x, y) in points.items():
        b[j] = (x, y, 1.0)
    return b


# An upright skeleton with long, well separated limbs (pixel coordinates in a 512x896 frame).
SKELETON = {
    0: (256, 120), 1: (256, 200), 2: (196, 200), 3: (150, 300), 4: (120, 400),
    5: (316, 200), 6: (362, 300), 7: (392, 400), 8: (220, 420), 9: (210, 580),
    10: (200, 740), 11: (292, 420), 12: (302, 580), 13: (312, 740),
    14: (240, 100), 15: (272, 100), 16: (220, 110), 17: (292, 110),
}


def frame_of(*people, w=W, h=H):
    return PoseFrame(w, h, list(people))


def test_background_black_and_empty_frames():
    assert render_pose(frame_of(), W, H).shape == (H, W, 3)
    assert not render_pose(frame_of(), W, H).any()
    # A person whose points all have confidence 0 (missing) draws nothing either.
    assert not render_pose(frame_of(Person(np.zeros((18, 3), np.float32))), W, H).any()
    img = render_pose(frame_of(Person(body(SKELETON))), W, H)
    assert img.dtype == np.uint8 and img[0, 0].tolist() == [0, 0, 0]
    assert 0.005 < skeleton_mask(img).mean() < 0.1  # a skeleton, mostly black


def test_limb_colour_and_width():
    # Neck (1) -> right shoulder (2) is a horizontal limb, colour index 0.
    img = render_pose(frame_of(Person(body({1: (300, 400), 2: (200, 400)}))), W, H)
    assert img[400, 250].tolist() == list(limb_color(0)) == [153, 0, 0]
    col = img[:, 250]
    drawn = np.flatnonzero(col.any(axis=1))
    assert drawn.min() == 400 - 4 and drawn.max() == 400 + 4  # semi-minor axis 4 -> 9 px
    assert all(col[r].tolist() == [153, 0, 0] for r in drawn)  # no anti-aliasing
    # Joint dots at full intensity, radius 4, drawn over the limb.
    assert img[400, 300].tolist() == list(SPEC_C[1]) and img[400, 200].tolist() == list(SPEC_C[2])
    row = np.flatnonzero((img[400] == SPEC_C[1]).all(axis=1))
    assert row.min() == 296 and row.max() == 304


@pytest.mark.parametrize("limb,a,b", [(2, 2, 3), (6, 1, 8), (9, 1, 11), (11, 12, 13), (12, 1, 0)])
def test_limb_colour_at_midpoint(limb, a, b):
    img = render_pose(frame_of(Person(body(SKELETON))), W, H)
    (xa, ya), (xb, yb) = SKELETON[a], SKELETON[b]
    mid = (int((xa + xb) / 2), int((ya + yb) / 2))
    assert img[mid[1], mid[0]].tolist() == list(limb_color(limb))


def test_head_skeleton_not_drawn_but_nose_is():
    sk = dict(SKELETON)
    img = render_pose(frame_of(Person(body(sk))), W, H)
    for j in (14, 15, 16, 17):  # eyes and ears carry confidence 1 but must stay black
        x, y = sk[j]
        assert not img[y - 5:y + 6, x - 5:x + 6].any(), f"head joint {j} drawn"
    x0, y0 = sk[0]
    assert img[y0, x0].tolist() == list(SPEC_C[0])  # nose joint kept
    assert img[160, 256].tolist() == list(limb_color(12))  # neck -> nose stick kept
    # The same keypoints with the head switched on do draw there (so the check above can fail).
    full = render_pose(frame_of(Person(body(sk))), W, H, RenderStyle(draw_head=True))
    assert full[100, 240].tolist() == list(SPEC_C[14])


def test_low_confidence_points_skipped():
    b = body({1: (300, 400), 2: (200, 400)})
    b[2, 2] = 0.3  # threshold is "> 0.3"
    img = render_pose(frame_of(Person(b)), W, H)
    assert img[400, 250].tolist() == [0, 0, 0] and img[400, 200].tolist() == [0, 0, 0]
    assert img[400, 300].tolist() == list(SPEC_C[1])


def hand_spec_color(e):
    r, g, b = colorsys.hsv_to_rgb(e / 20, 1, 1)
    return r * 255, g * 255, b * 255


def test_hand_table_matches_opencv_float_colours():
    # DWPose passes float colours HSV*255 to cv2.line; OpenCV rounds them. Our table must match.
    for e in range(20):
        canvas = np.zeros((5, 5, 3), np.uint8)
        cv2.line(canvas, (0, 2), (4, 2), hand_spec_color(e), thickness=1)
        assert tuple(canvas[2, 2].tolist()) == HAND_EDGE_COLORS[e], e
    assert HAND_EDGE_COLORS[0] == (255, 0, 0) and HAND_EDGE_COLORS[10] == (0, 255, 255)


def test_hand_bones_and_dots():
    hand = np.zeros((21, 3), np.float32)
    # Fingers fanned out from a wrist at (256, 600), each finger a straight vertical-ish line.
    hand[0] = (256, 600, 1)
    for f in range(5):
        for k in range(4):
            hand[1 + 4 * f + k] = (176 + 40 * f, 560 - 40 * k, 1)
    img = render_pose(frame_of(Person(np.zeros((18, 3), np.float32), left_hand=hand)), W, H)
    # Bone 2 (points 2-3, thumb) midpoint, away from dots (radius 4): colour HSV(2/20).
    x, y = 176, 500
    assert img[y, x].tolist() == list(HAND_EDGE_COLORS[2])
    # The bone is OpenCV's 2-px thick line (as DWPose draws it): same pixels, at most 3 across.
    ref = np.zeros_like(img)
    cv2.line(ref, (176, 520), (176, 480), hand_spec_color(2), thickness=2)
    assert np.array_equal(img[485:516, 165:188], ref[485:516, 165:188])
    assert 2 <= np.count_nonzero(img[y, 170:183].any(axis=1)) <= 3
    # Dots: blue, radius 4.
    assert img[560, 176].tolist() == [0, 0, 255]
    row = np.flatnonzero((img[560] == (0, 0, 255)).all(axis=1))
    assert 172 in row and 180 in row and 171 not in row and 181 not in row
    # A missing point removes its bones and dot.
    hand[3, 2] = 0
    img2 = render_pose(frame_of(Person(np.zeros((18, 3), np.float32), right_hand=hand)), W, H)
    assert img2[y, x].tolist() == [0, 0, 0] and img2[480, 176].tolist() == [0, 0, 0]


def test_scaling_from_frame_size_and_line_widths():
    # Keypoints in a 1024x1792 frame rendered at 512x896 land at half the coordinates, same sizes.
    big = frame_of(Person(body({1: (600, 800), 2: (400, 800)})), w=1024, h=1792)
    img = render_pose(big, W, H)
    assert img[400, 250].tolist() == [153, 0, 0] and img[400, 300].tolist() == list(SPEC_C[1])
    assert np.count_nonzero(img[:, 250].any(axis=1)) == 9
    # At half the output size the sticks are half as wide (sizes follow the short side / 512).
    small = render_pose(big, 256, 448)
    assert np.count_nonzero(small[:, 125].any(axis=1)) == 5
    assert small[200, 125].tolist() == [153, 0, 0]


def test_render_sequence_and_errors():
    seq = render_sequence([frame_of(), frame_of(Person(body(SKELETON)))], 128, 224)
    assert seq.shape == (2, 224, 128, 3) and not seq[0].any() and seq[1].any()
    with pytest.raises(ValueError, match="no frames"):
        render_sequence([], 10, 10)
    with pytest.raises(ValueError, match=r"\(18, 3\)"):
        render_pose(frame_of(Person(np.zeros((17, 3)))), W, H)
    with pytest.raises(ValueError, match="positive"):
        render_pose(frame_of(), 0, 10)
    # Points far outside the canvas draw nothing there and do not crash OpenCV.
    far = body({1: (3e12, -4e11), 2: (200, 400)})
    img = render_pose(frame_of(Person(far)), W, H)
    assert img[400, 200].tolist() == list(SPEC_C[2])


def test_skeleton_coverage_metric():
    a = render_pose(frame_of(Person(body(SKELETON))), W, H)
    assert skeleton_coverage([a], [a]).covered == 1.0
    shifted = np.roll(a, 3, axis=1)
    r = skeleton_coverage([shifted], [a], tolerance_px=5)
    assert r.covered == 1.0 and r.precision == 1.0
    far = np.roll(a, 40, axis=1)
    r = skeleton_coverage([far], [a], tolerance_px=5)
    assert r.covered < 0.5
    half = a.copy()
    half[H // 2:] = 0  # we draw only the upper half
    r = skeleton_coverage([half], [a])
    assert r.precision == 1.0 and 0.2 < r.covered < 0.8
    with pytest.raises(ValueError, match="frame counts"):
        skeleton_coverage([a], [a, a])
