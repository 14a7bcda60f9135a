"""DWPose ONNX runner, end to end on tiny stand-in models built here with the `onnx` helper API.

The stand-ins have the real files' input/output names and shapes:
  detector  `images` [1,3,640,640] -> `output` [1,8400,85]: fixed raw YOLOX rows whose objectness
            is gated by the image (max pixel / 255 - 0.45), so a black frame (letterbox grey 114
            only) yields no person and a frame with a white dot yields the planted boxes;
  dot pose  `input` [1,3,384,288] -> `simcc_x` [1,133,576], `simcc_y` [1,133,768]: every keypoint's
            x/y curves are the column/row maxima of channel 0 repeated x2, so all 133 points must
            land on the brightest spot of the crop (tests crop, normalisation, decode, mapping back);
  const pose: one planted peak per keypoint (known crop position and score), for the index
            mapping to OpenPose-18 / hands / face and the confidence threshold.
The builders are reused by tests/core/test_preprocess_cli.py and bench/bench_preprocess.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xdyna_core.preprocess import dwpose  # noqa: E402
from xdyna_core.preprocess.dwpose import (  # noqa: E402
    DWPoseConfig,
    DWPoseDetector,
    DWPoseModelsNotFound,
    decode_simcc,
    find_dwpose_models,
    letterbox,
    nms,
    select_providers,
    yolox_grids,
)

OPSET = [helper.make_opsetid("", 17)]
LEVELS = {8: (0, 80), 16: (6400, 40), 32: (8000, 20)}  # stride -> (first row, grid width)


# ------------------------------------------------------------------------ stand-in builders

def _const(name, arr):
    arr = np.asarray(arr)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name=name + "_v"))


def _sparse(name, shape, entries):
    """Nodes producing a zero tensor of `shape` with entries {index tuple: value} set."""
    idx = np.array([k for k in entries], np.int64).reshape(-1, len(shape))
    val = np.array([v for v in entries.values()], np.float32)
    return [
        _const(name + "_shape", np.array(shape, np.int64)),
        helper.make_node("ConstantOfShape", [name + "_shape"], [name + "_zero"],
                         value=helper.make_tensor(name + "_z", TensorProto.FLOAT, [1], [0.0])),
        _const(name + "_idx", idx),
        _const(name + "_val", val),
        helper.make_node("ScatterND", [name + "_zero", name + "_idx", name + "_val"], [name]),
    ]


def _save(nodes, inputs, outputs, path):
    graph = helper.make_graph(nodes, "standin", inputs, outputs)
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def detector_row(cx, cy, w, h, stride=16):
    """Raw YOLOX row index and (dx, dy, log w, log h) that decode to a box centred at (cx, cy) of
    size w x h in 640x640 letterbox pixels."""
    first, gw = LEVELS[stride]
    gx, gy = int(cx // stride), int(cy // stride)
    return first + gy * gw + gx, (cx / stride - gx, cy / stride - gy, math.log(w / stride), math.log(h / stride))


def make_detector_onnx(path, boxes, num_rows=8400):
    """boxes: (cx, cy, w, h, objectness weight, class id[, stride]) in letterbox pixels.
    Objectness = weight * (max(image) / 255 - 0.45)."""
    base, gate = {}, {}
    for b in boxes:
        cx, cy, w, h, weight, cls = b[:6]
        row, raw = detector_row(cx, cy, w, h, *(b[6:] or (16,)))
        for j, v in enumerate(raw):
            base[(0, row, j)] = v
        base[(0, row, 5 + cls)] = 1.0
        gate[(0, row, 4)] = weight
    nodes = _sparse("base", [1, num_rows, 85], base) + _sparse("gate", [1, num_rows, 85], gate) + [
        _const("shape3", np.array([1, 1, 1], np.int64)),
        _const("k255", np.array(255.0, np.float32)),
        _const("offset", np.array(0.45, np.float32)),
        helper.make_node("ReduceMax", ["images"], ["mx"], keepdims=1),
        helper.make_node("Reshape", ["mx", "shape3"], ["mx3"]),
        helper.make_node("Div", ["mx3", "k255"], ["norm"]),
        helper.make_node("Sub", ["norm", "offset"], ["g"]),
        helper.make_node("Mul", ["gate", "g"], ["gated"]),
        helper.make_node("Add", ["base", "gated"], ["output"]),
    ]
    return _save(nodes, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
                 [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, num_rows, 85])], path)


def _axis_max_x2(inp, axis, n, out, tag):
    """[1,1,H,W] -> max over `axis` -> each value repeated twice -> [1,133,2n]."""
    return [
        helper.make_node("ReduceMax", [inp], [tag + "_m"], axes=[axis], keepdims=0),
        _const(tag + "_ax", np.array([3], np.int64)),
        helper.make_node("Unsqueeze", [tag + "_m", tag + "_ax"], [tag + "_u"]),
        _const(tag + "_s2", np.array([1, 1, n, 2], np.int64)),
        helper.make_node("Expand", [tag + "_u", tag + "_s2"], [tag + "_e"]),
        _const(tag + "_s3", np.array([1, 1, 2 * n], np.int64)),
        helper.make_node("Reshape", [tag + "_e", tag + "_s3"], [tag + "_r"]),
        _const(tag + "_s4", np.array([1, 133, 2 * n], np.int64)),
        helper.make_node("Expand", [tag + "_r", tag + "_s4"], [out]),
    ]


def _pose_io():
    return ([helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
            [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
             helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768])])


def make_dot_pose_onnx(path):
    nodes = [_const("c_st", np.array([0], np.int64)), _const("c_en", np.array([1], np.int64)),
             _const("c_ax", np.array([1], np.int64)),
             helper.make_node("Slice", ["input", "c_st", "c_en", "c_ax"], ["c0"])]
    nodes += _axis_max_x2("c0", 2, 288, "simcc_x", "x") + _axis_max_x2("c0", 3, 384, "simcc_y", "y")
    return _save(nodes, *_pose_io(), path)


def make_const_pose_onnx(path, ix, iy, scores):
    """Keypoint k peaks at simcc_x[ix[k]], simcc_y[iy[k]] with value scores[k] (input ignored)."""
    sx = {(0, k, int(ix[k])): float(scores[k]) for k in range(133)}
    sy = {(0, k, int(iy[k])): float(scores[k]) for k in range(133)}
    nodes = _sparse("simcc_x", [1, 133, 576], sx) + _sparse("simcc_y", [1, 133, 768], sy)
    return _save(nodes, *_pose_io(), path)


# Frame used throughout: 512 x 896 (the X-Dyna size), one white 4x4 dot at x 250-253, y 400-403.
W, H = 512, 896
R = 640 / H  # letterbox ratio
DOT = (slice(400, 404), slice(250, 254))
DOT_CENTRE = (251.5, 401.5)
PERSON_A = (200, 500, 200, 600)  # image-space box (cx, cy, w, h) around the dot
PERSON_B = (420, 200, 100, 200)  # smaller second person


def _lb(box):
    return tuple(v * R for v in box)


def dot_image():
    img = np.zeros((H, W, 3), np.uint8)
    img[DOT] = 255
    return img


def standard_detector(path):
    """A (best), a shifted duplicate of A (NMS must drop it), a high-scoring non-person box
    (class 2, must be dropped), person B (weaker), and one row under the candidate threshold."""
    a_dup = (205, 510, 200, 600)
    return make_detector_onnx(path, [
        (*_lb(PERSON_A), 1.0, 0),
        (*_lb(a_dup), 0.9, 0),
        (*_lb((100, 800, 150, 150)), 1.5, 2),
        (*_lb(PERSON_B), 0.8, 0, 32),
        (*_lb((60, 60, 40, 40)), 0.1, 0, 8),
    ])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("dwpose_models")
    det = standard_detector(d / "yolox_l.onnx")
    pose = make_dot_pose_onnx(d / "dw-ll_ucoco_384.onnx")
    return det, pose


def _xyxy(box):
    cx, cy, w, h = box
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


# ------------------------------------------------------------------------ unit steps

def test_letterbox_scales_into_top_left_and_pads_grey():
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (255, 0, 0)
    img[:, W // 2:] = (0, 0, 255)
    blob, r = letterbox(img, (640, 640))
    assert blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32
    assert r == pytest.approx(R)
    nw = int(W * r)  # 365
    chw = blob[0]
    assert np.all(chw[:, :, nw:] == 114)  # right padding
    assert np.all(chw[:, :640, :100] == np.array([255, 0, 0], np.float32)[:, None, None])  # RGB kept
    assert np.all(chw[:, :, nw - 100:nw] == np.array([0, 0, 255], np.float32)[:, None, None])
    assert chw.max() == 255  # no normalisation


def test_yolox_grid_layout():
    cells, strides = yolox_grids((640, 640))
    assert cells.shape == (8400, 2) and strides.shape == (8400, 1)
    row, _ = detector_row(3 * 16 + 8, 2 * 16 + 8, 10, 10, stride=16)
    assert row == 6400 + 2 * 40 + 3
    assert tuple(cells[row]) == (3, 2) and strides[row, 0] == 16
    assert tuple(cells[8000 + 20 * 19 + 19]) == (19, 19) and strides[-1, 0] == 32


def test_nms_greedy_iou():
    boxes = np.array([[0, 0, 99, 99], [10, 0, 109, 99], [60, 0, 159, 99], [300, 300, 320, 320]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # IoU(0,1) = 90*100 / (2*100*100 - 90*100) = 0.818; IoU(0,2) = 40/160 = 0.25
    assert nms(boxes, scores, 0.45) == [0, 2, 3]
    assert nms(boxes, scores, 0.9) == [0, 1, 2, 3]
    # 1 first now: suppresses 0 (IoU 0.82) but not 2 (IoU 50*100 / 15000 = 0.33)
    assert nms(boxes, np.array([0.1, 0.8, 0.7, 0.6]), 0.45) == [1, 2, 3]
    assert nms(boxes, np.array([0.1, 0.8, 0.7, 0.6]), 0.3) == [1, 3]


def test_decode_simcc_argmax_split_and_invalid():
    sx = np.full((3, 576), -1.0, np.float32)
    sy = np.full((3, 768), -1.0, np.float32)
    sx[0, 301], sy[0, 5] = 0.9, 0.7
    sx[1, 10], sy[1, 767] = 0.2, 0.8
    locs, scores = decode_simcc(sx, sy, 2.0)
    np.testing.assert_allclose(locs[0], [150.5, 2.5])
    np.testing.assert_allclose(scores[:2], [0.7, 0.2])
    np.testing.assert_allclose(locs[1], [5.0, 383.5])
    # Invalid (score <= 0): bin -1 before the split-ratio division, as the references do.
    assert scores[2] <= 0 and tuple(locs[2]) == (-0.5, -0.5)


# ------------------------------------------------------------------------ end to end

def test_detect_decodes_boxes_nms_and_person_class(models):
    det = DWPoseDetector(*models, config=DWPoseConfig(max_people=None))
    boxes, scores = det.detect(dot_image())
    # A survives (its duplicate is suppressed), the class-2 box is dropped, B comes second.
    assert boxes.shape == (2, 4)
    np.testing.assert_allclose(boxes[0], _xyxy(PERSON_A), atol=0.05)
    np.testing.assert_allclose(boxes[1], _xyxy(PERSON_B), atol=0.05)
    np.testing.assert_allclose(scores, [0.55, 0.8 * 0.55], atol=1e-3)


def test_whole_path_lands_on_the_dot(models):
    det = DWPoseDetector(*models)  # default: best person only
    frame = det(dot_image())
    assert (frame.width, frame.height) == (W, H)
    assert len(frame.people) == 1
    p = frame.main
    assert p.body.shape == (18, 3) and p.face.shape == (68, 3)
    assert p.left_hand.shape == (21, 3) and p.right_hand.shape == (21, 3)
    pts = np.concatenate([p.body, p.face, p.left_hand, p.right_hand])
    # Every keypoint is the dot, mapped back from the 288x384 crop (2.0 crop px per image px here).
    assert np.all(np.abs(pts[:, 0] - DOT_CENTRE[0]) < 2.0), pts[:, 0]
    assert np.all(np.abs(pts[:, 1] - DOT_CENTRE[1]) < 2.0), pts[:, 1]
    assert np.all(pts[:, 2] > 0.3)


def test_people_ordered_by_detector_score(models):
    det = DWPoseDetector(*models, config=DWPoseConfig(max_people=None))
    frame = det(dot_image())
    assert len(frame.people) == 2
    assert np.all(np.abs(frame.people[0].body[:, :2] - DOT_CENTRE) < 2.0)  # A, the best score
    # Person B's crop (x 357..483, y 75..325) does not contain the dot: its points stay inside it.
    b = frame.people[1].body
    assert np.all((b[:, 0] >= 420 - 100 * 1.25) & (b[:, 0] <= 420 + 100 * 1.25))
    assert np.all((b[:, 1] >= 200 - 200 * 1.25) & (b[:, 1] <= 200 + 200 * 1.25))
    assert np.all(b[:, 2] == 0)  # the crop is black: SimCC maxima <= 0 -> no valid point


def test_no_person_gives_empty_frame_and_fallback_option(models):
    black = np.zeros((H, W, 3), np.uint8)
    frame = DWPoseDetector(*models)(black)
    assert (frame.width, frame.height, frame.people) == (W, H, [])
    assert frame.main is None
    fb = DWPoseDetector(*models, config=DWPoseConfig(whole_image_fallback=True))(black)
    assert len(fb.people) == 1  # the whole image was posed as one box


def test_keypoint_index_mapping_and_threshold(tmp_path, models):
    rng = np.random.default_rng(0)
    ix = rng.integers(0, 576, 133)
    iy = rng.integers(0, 768, 133)
    scores = rng.uniform(0.5, 1.0, 133).astype(np.float32)
    scores[7] = 0.2  # COCO left elbow: below DWPose's 0.3
    scores[6] = 0.25  # COCO right shoulder: below -> no neck
    scores[100] = 0.1  # a left-hand point
    pose = make_const_pose_onnx(tmp_path / "const.onnx", ix, iy, scores)
    det = DWPoseDetector(models[0], pose)
    frame = det(dot_image())
    p = frame.main

    # Expected image positions from the spec: box A padded 1.25, width grown to 288/384 aspect.
    x1, y1, x2, y2 = _xyxy(PERSON_A)
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    w, h = (w, w * 384 / 288) if w > h * 288 / 384 else (h * 288 / 384, h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    wb = np.stack([ix / 2 / 288 * w + cx - w / 2, iy / 2 / 384 * h + cy - h / 2], axis=1)

    op18_from_coco = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16,
                      11: 11, 12: 13, 13: 15, 14: 2, 15: 1, 16: 4, 17: 3}
    for op, coco in op18_from_coco.items():
        np.testing.assert_allclose(p.body[op, :2], wb[coco], atol=0.05, err_msg=f"OP18 {op}")
        expected_c = scores[coco] if scores[coco] > 0.3 else 0.0
        assert p.body[op, 2] == pytest.approx(expected_c), f"OP18 {op}"
    np.testing.assert_allclose(p.body[1, :2], (wb[5] + wb[6]) / 2, atol=0.05)  # neck
    assert p.body[1, 2] == 0.0  # right shoulder missing -> no neck
    assert p.body[6, 2] == 0.0  # left elbow below threshold
    np.testing.assert_allclose(p.face[:, :2], wb[23:91], atol=0.05)
    np.testing.assert_allclose(p.left_hand[:, :2], wb[91:112], atol=0.05)
    np.testing.assert_allclose(p.right_hand[:, :2], wb[112:133], atol=0.05)
    assert p.left_hand[100 - 91, 2] == 0.0 and p.left_hand[0, 2] == pytest.approx(scores[91])


def test_neck_is_mid_shoulders_when_both_visible(tmp_path, models):
    ix = np.full(133, 100)
    iy = np.full(133, 100)
    ix[5], ix[6], iy[5], iy[6] = 300, 100, 200, 240
    scores = np.full(133, 0.9, np.float32)
    scores[5] = 0.6
    det = DWPoseDetector(models[0], make_const_pose_onnx(tmp_path / "c.onnx", ix, iy, scores))
    body = det(dot_image()).main.body
    np.testing.assert_allclose(body[1, :2], (body[2, :2] + body[5, :2]) / 2, atol=1e-4)
    assert body[1, 2] == 1.0  # the references: both shoulders > 0.3 -> neck confidence 1


def test_rejects_non_uint8_rgb(models):
    det = DWPoseDetector(*models)
    with pytest.raises(ValueError, match="uint8 RGB"):
        det(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        det(np.zeros((64, 64), np.uint8))


def test_wrong_detector_output_shape_is_reported(tmp_path, models):
    bad = make_detector_onnx(tmp_path / "bad.onnx", [(100, 100, 50, 50, 1.0, 0)], num_rows=8000)
    with pytest.raises(ValueError, match="8400"):
        DWPoseDetector(bad, models[1])(dot_image())


# ------------------------------------------------------------------------ model lookup

@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("XDYNA_DWPOSE_DIR", "XDYNA_MODELS_DIR", "AUX_ANNOTATOR_CKPTS_PATH"):
        monkeypatch.delenv(var, raising=False)
    # Keep the developer's own folders out of the search.
    monkeypatch.setattr(dwpose, "EXTENSION_ROOT", tmp_path / "ext" / "ComfyUI-XDyna")
    return monkeypatch


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"onnx")
    return path


def test_missing_models_error_names_file_and_every_folder(clean_env, tmp_path):
    user = tmp_path / "mine"
    clean_env.setenv("XDYNA_MODELS_DIR", str(tmp_path / "root"))
    clean_env.setenv("AUX_ANNOTATOR_CKPTS_PATH", str(tmp_path / "aux"))
    with pytest.raises(DWPoseModelsNotFound) as ei:
        find_dwpose_models([user])
    msg = str(ei.value)
    assert "yolox_l.onnx" in msg and "dw-ll_ucoco_384.onnx" in msg
    searched = [user, user / "dwpose", user / "yzd-v" / "DWPose", tmp_path / "root",
                tmp_path / "root" / "dwpose", tmp_path / "root" / "xdyna" / "detectors",
                tmp_path / "ext" / "ComfyUI-XDyna" / "models" / "dwpose",
                tmp_path / "aux" / "yzd-v" / "DWPose", tmp_path / "aux" / "hr16" / "yolox-onnx",
                tmp_path / "aux" / "hr16" / "DWPose-TorchScript-BatchSize5"]
    for d in searched:
        assert f"  {d}" in msg.splitlines(), d
    assert isinstance(ei.value, FileNotFoundError)


def test_only_one_file_missing_names_only_it(clean_env, tmp_path):
    _touch(tmp_path / "m" / "yolox_l.onnx")
    with pytest.raises(DWPoseModelsNotFound, match=r"not found: dw-ll_ucoco_384\.onnx or dw-ll_ucoco_384_bs5\.torchscript\.pt: place"):
        find_dwpose_models([tmp_path / "m"])


def test_controlnet_aux_layout_and_comfyui_custom_nodes(clean_env, tmp_path):
    comfy = tmp_path / "ComfyUI"
    clean_env.setattr(dwpose, "EXTENSION_ROOT", comfy / "custom_nodes" / "ComfyUI-XDyna")
    ckpts = comfy / "custom_nodes" / "comfyui_controlnet_aux" / "ckpts"
    det = _touch(ckpts / "hr16" / "yolox-onnx" / "yolox_l.onnx")
    pose = _touch(ckpts / "yzd-v" / "DWPose" / "dw-ll_ucoco_384.onnx")
    assert find_dwpose_models() == (det, pose)
    # ComfyUI's models/dwpose comes before controlnet_aux's cache.
    det2 = _touch(comfy / "models" / "dwpose" / "yolox_l.onnx")
    assert find_dwpose_models() == (det2, pose)
    # Caller folders come first of all; env XDYNA_DWPOSE_DIR before the defaults.
    envdir = tmp_path / "envdir"
    pose3 = _touch(envdir / "dw-ll_ucoco_384.onnx")
    clean_env.setenv("XDYNA_DWPOSE_DIR", str(envdir))
    assert find_dwpose_models() == (det2, pose3)
    det4 = _touch(tmp_path / "given" / "dwpose" / "yolox_l.onnx")
    assert find_dwpose_models([tmp_path / "given"]) == (det4, pose3)


def test_provider_selection():
    import onnxruntime as ort

    chosen = select_providers()
    assert chosen[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in chosen) == ("CUDAExecutionProvider" in ort.get_available_providers())
    assert select_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_missing_model_path_in_constructor(tmp_path, models):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        DWPoseDetector(tmp_path / "nope.onnx", models[1])
