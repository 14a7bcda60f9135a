"""DWPose crops (the pose model's input) equal to the references' arithmetic, tensor for tensor.

`reference_input` below re-states, step by step and dtype by dtype, what comfyui_controlnet_aux
(src/custom_controlnet_aux/dwpose/dw_onnx/cv_ox_pose.py: preprocess -> bbox_xyxy2cs,
top_down_affine -> _fix_aspect_ratio, get_warp_matrix -> _rotate_point, _get_3rd_point; then
inference's stack/transpose/astype) and the original DWPose annotator (onnxpose.py, the same code)
do to one detector box: the box arrives as float64 (multiclass_nms concatenates the float32 boxes
with float64 class ids), the matrix's points are float32 rows, the third point is formed from the
ROUNDED float32 rows, the crop is normalised in float64 and cast to float32 once.

Run on frames of the shared clips with many detector-like boxes (float32, partly outside the frame),
and through DWPoseDetector up to what its ONNX pose session receives.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from tests.conftest import assets_dir  # noqa: E402
from xdyna_core.preprocess.dwpose import pose_input  # noqa: E402
from xdyna_core.preprocess.video import iter_frames  # noqa: E402

INPUT_WH = (288, 384)  # dw-ll_ucoco_384: (w, h)


def reference_input(img: np.ndarray, box_f32: np.ndarray, input_size=INPUT_WH, third_point_f64=False) -> np.ndarray:
    """The references' crop of one box as the network gets it (float32 HWC). ``third_point_f64``:
    the third source point computed from the float64 values instead (the arithmetic this project
    had before, kept here to show the test tells the two apart)."""
    # inference_detector: dets = concatenate([float32 boxes, float32 scores, float64 class ids]) -> float64
    bbox = np.asarray(box_f32, np.float32).astype(np.float64)
    # bbox_xyxy2cs(bbox, padding=1.25)
    x1, y1, x2, y2 = np.hsplit(bbox[None], [1, 2, 3])
    center = (np.hstack([x1 + x2, y1 + y2]) * 0.5)[0]
    scale = (np.hstack([x2 - x1, y2 - y1]) * 1.25)[0]
    # top_down_affine: _fix_aspect_ratio(scale, aspect_ratio=w / h)
    w, h = input_size
    aspect_ratio = w / h
    bw, bh = np.hsplit(scale, [1])
    scale = np.where(bw > bh * aspect_ratio, np.hstack([bw, bw / aspect_ratio]), np.hstack([bh * aspect_ratio, bh]))
    # get_warp_matrix(center, scale, rot=0, output_size=(w, h)), shift (0, 0)
    shift = np.array((0.0, 0.0))
    rot_rad = np.deg2rad(0)
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    src_dir = np.array([[cs, -sn], [sn, cs]]) @ np.array([0.0, scale[0] * -0.5])
    dst_dir = np.array([0.0, w * -0.5])
    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale * shift
    src[1, :] = center + src_dir + scale * shift
    if third_point_f64:
        direction = (center + scale * shift) - (center + src_dir + scale * shift)
        src[2, :] = (center + src_dir) + np.r_[-direction[1], direction[0]]
    else:  # _get_3rd_point(src[0, :], src[1, :]): on the float32 rows
        direction = src[0, :] - src[1, :]
        src[2, :] = src[1, :] + np.r_[-direction[1], direction[0]]
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :] = [w * 0.5, h * 0.5]
    dst[1, :] = np.array([w * 0.5, h * 0.5]) + dst_dir
    direction = dst[0, :] - dst[1, :]
    dst[2, :] = dst[1, :] + np.r_[-direction[1], direction[0]]
    warp_mat = cv2.getAffineTransform(np.float32(src), np.float32(dst))
    crop = cv2.warpAffine(img, warp_mat, (int(w), int(h)), flags=cv2.INTER_LINEAR)
    # preprocess: normalise (float64 mean / std); inference: input.astype(np.float32)
    mean = np.array([123.675, 116.28, 103.53])
    std = np.array([58.395, 57.12, 57.375])
    return ((crop - mean) / std).astype(np.float32)


def detector_like_boxes(rng, width, height, n):
    """float32 xyxy boxes as a detector gives them: any size from small to larger than the frame,
    fractional coordinates, some reaching past the borders."""
    cx = rng.uniform(-0.1, 1.1, n) * width
    cy = rng.uniform(-0.1, 1.1, n) * height
    bw = rng.uniform(0.05, 1.2, n) * width
    bh = rng.uniform(0.05, 1.2, n) * height
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)


def shared_frames(per_clip=4):
    for clip in sorted((assets_dir() / "driving_video").glob("*.mp4")):
        yield from iter_frames(clip, stride=20, frame_count=per_clip)


def test_crops_equal_the_reference_arithmetic_on_the_shared_clips():
    rng = np.random.default_rng(22)
    total = differ_f64 = 0
    for frame in shared_frames():
        boxes = detector_like_boxes(rng, frame.shape[1], frame.shape[0], 20)
        ours = torch.from_numpy(pose_input(frame, boxes, INPUT_WH, 1.25)[0].astype(np.float32))
        ref = torch.from_numpy(np.stack([reference_input(frame, b) for b in boxes]).transpose(0, 3, 1, 2).copy())
        assert ours.shape == ref.shape == (len(boxes), 3, 384, 288)
        bad = [i for i in range(len(boxes)) if not torch.equal(ours[i], ref[i])]
        assert not bad, f"crops {bad} of a {frame.shape[1]}x{frame.shape[0]} frame differ from the reference"
        old = [reference_input(frame, b, third_point_f64=True) for b in boxes]
        differ_f64 += sum(not np.array_equal(o.transpose(2, 0, 1), ref[i].numpy()) for i, o in enumerate(old))
        total += len(boxes)
    assert total >= 200
    # the float64 third point gives other crops often: the comparison above can tell them apart
    assert differ_f64 > 0.05 * total, (differ_f64, total)


def test_the_onnx_pose_session_receives_the_reference_crops(tmp_path):
    """Through DWPoseDetector: the batch handed to onnxruntime is the references' float32 input."""
    pytest.importorskip("onnx")
    from tests.core.test_dwpose import make_dot_pose_onnx, standard_detector
    from xdyna_core.preprocess.dwpose import DWPoseConfig, DWPoseDetector

    det = DWPoseDetector(standard_detector(tmp_path / "yolox_l.onnx"), make_dot_pose_onnx(tmp_path / "pose.onnx"),
                         config=DWPoseConfig(max_people=None))

    class Recording:
        def __init__(self, session):
            self.session, self.inputs = session, []

        def run(self, outputs, feeds):
            self.inputs.append(next(iter(feeds.values())))
            return self.session.run(outputs, feeds)

    det.pose.session = Recording(det.pose.session)
    frame = next(iter(iter_frames(assets_dir() / "driving_video" / "example_1_driving_1.mp4", start=60,
                                  frame_count=1)))
    boxes = detector_like_boxes(np.random.default_rng(5), frame.shape[1], frame.shape[0], 6)
    det.estimate_many(frame, boxes)
    sent = np.concatenate(det.pose.session.inputs)  # a batch-1 model gets the crops one by one
    assert sent.dtype == np.float32 and len(sent) == len(boxes)
    ref = np.stack([reference_input(frame, b) for b in boxes]).transpose(0, 3, 1, 2)
    assert torch.equal(torch.from_numpy(sent), torch.from_numpy(np.ascontiguousarray(ref)))
