"""Stand-in DWPose detector files for the real-ComfyUI tier (no model weights can be downloaded).

`write_standin_dwpose(folder)` writes `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` with the real files'
input/output names and shapes (built with the ONNX helpers of tests/core/test_dwpose.py):

* the detector reports one person box, centred in the letterboxed frame, whenever the frame has
  bright pixels (objectness gated by the frame's maximum, so an all-black frame has no person);
* the pose model ignores its input and puts a fixed standing person into every crop: OpenPose body,
  feet, both hands and a 68-point iBUG face with open eyes and mouth, so XDynaPoseExtract,
  XDynaPoseAlign and XDynaExtractExpression (landmarks from the pose keypoints) all have real work.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Crop space of dw-ll_ucoco_384: 288 x 384 pixels; SimCC bins are half pixels.
CROP_W, CROP_H, SPLIT = 288, 384, 2
SCORE = 0.9

BODY17 = [(144, 62), (152, 54), (136, 54), (162, 58), (126, 58), (180, 100), (108, 100), (196, 160), (92, 160),
          (204, 215), (84, 215), (166, 210), (122, 210), (170, 285), (118, 285), (172, 352), (116, 352)]
FEET6 = [(182, 368), (166, 370), (170, 360), (106, 368), (122, 370), (118, 360)]


def _ellipse(cx, cy, rx, ry, n, start=math.pi):
    return [(cx + rx * math.cos(start + 2 * math.pi * i / n), cy + ry * math.sin(start + 2 * math.pi * i / n))
            for i in range(n)]


def face68(cx=144.0, cy=62.0):
    """iBUG-68 face around the nose tip: jaw, brows, nose, eyes (open), mouth (open)."""
    jaw = [(cx + 20 * math.cos(a), cy - 6 + 24 * math.sin(a)) for a in np.linspace(math.pi, 0, 17)]
    jaw = [(x, cy - 6 + abs(y - (cy - 6))) for x, y in jaw]  # the lower half of an ellipse
    brows = [(cx - 16 + 3 * i, cy - 18 - (2 if i in (1, 2, 3) else 0)) for i in range(5)]
    brows += [(cx + 4 + 3 * i, cy - 18 - (2 if i in (1, 2, 3) else 0)) for i in range(5)]
    nose = [(cx, cy - 14 + 4 * i) for i in range(4)] + [(cx - 5 + 2.5 * i, cy + 3) for i in range(5)]
    eyes = _ellipse(cx - 8, cy - 10, 4, 1.8, 6) + _ellipse(cx + 8, cy - 10, 4, 1.8, 6)
    mouth = _ellipse(cx, cy + 10, 8, 4, 12) + _ellipse(cx, cy + 10, 5, 2, 8)
    pts = jaw + brows + nose + eyes + mouth
    assert len(pts) == 68
    return pts


def hand21(wx, wy, direction):
    """Wrist plus four joints per finger, fanned downwards; direction +1/-1 mirrors."""
    pts = [(wx, wy)]
    for f in range(5):
        angle = math.radians(60 + 15 * f) if direction > 0 else math.radians(120 - 15 * f)
        for j in range(1, 5):
            pts.append((wx + direction * 0 + 4 * j * math.cos(angle), wy + 4 * j * math.sin(angle)))
    return pts


def wholebody133():
    pts = BODY17 + FEET6 + face68() + hand21(*BODY17[9], +1) + hand21(*BODY17[10], -1)
    assert len(pts) == 133
    return pts


def write_standin_dwpose(folder) -> tuple[Path, Path]:
    """Write the two stand-in files into ``folder`` (a models/xdyna/detectors folder)."""
    from tests.core.test_dwpose import make_const_pose_onnx, make_detector_onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pts = wholebody133()
    ix = [min(CROP_W * SPLIT - 1, round(x * SPLIT)) for x, _ in pts]
    iy = [min(CROP_H * SPLIT - 1, round(y * SPLIT)) for _, y in pts]
    pose = make_const_pose_onnx(folder / "dw-ll_ucoco_384.onnx", ix, iy, [SCORE] * 133)
    # One box in 640x640 letterbox pixels (the frame sits top-left, scaled to fit); weight 3 gives
    # objectness > 0.3 for any frame whose brightest pixel is above ~0.55 * 255.
    det = make_detector_onnx(folder / "yolox_l.onnx", [(180.0, 320.0, 240.0, 560.0, 3.0, 0)])
    return det, pose


def write_keypoints_json(path, frames: int, width: int = 512, height: int = 896) -> Path:
    """POSE_KEYPOINT JSON (comfyui_controlnet_aux format, pixels) of the stand-in person filling the
    canvas, its wrists and elbows swinging from frame to frame: the input of the keypoints workflow."""
    from xdyna_core.preprocess.dwpose import wholebody_to_person
    from xdyna_core.preprocess.keypoints import PoseFrame, save_keypoints

    base = np.array(wholebody133(), np.float64) * (width / CROP_W, height / CROP_H)
    poses = []
    for i in range(frames):
        pts = base.copy()
        swing = 0.06 * width * math.sin(2 * math.pi * i / max(frames, 2))
        pts[[7, 9], 0] += swing  # left elbow, wrist
        pts[[8, 10], 0] -= swing
        pts[91:112, 0] += swing  # the hands follow the wrists
        pts[112:133, 0] -= swing
        poses.append(PoseFrame(width, height, [wholebody_to_person(pts, np.full(133, SCORE))]))
    save_keypoints(path, poses)
    return Path(path)
