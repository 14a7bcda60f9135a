"""DWPose in every file format comfyui_controlnet_aux users have, and the references' post-processing.

* One stand-in network per role is written in torch and exported to BOTH formats (ONNX via
  torch.onnx, TorchScript via torch.jit.trace, the pose model traced for batches of 5 like
  `dw-ll_ucoco_384_bs5.torchscript.pt`): every format combination must give the same boxes and
  keypoints.
* The files are laid out as controlnet_aux lays them (ckpts/<hub repo>/<file>, under either pack
  folder name, its config.yaml's annotator_ckpts_path, $AUX_ANNOTATOR_CKPTS_PATH) and found by the
  default lookup, end to end through make_pose_detector('auto').
* The detector and pose decoding are compared with an independent, loop-by-loop re-statement of
  what the references do (per-class NMS over all classes then the person filter; SimCC argmax with
  the -1 bin before the split division; the insert-then-permute 133 -> 18 mapping), including a
  person overlapped by a higher-scoring box of another class.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.core.test_dwpose import (  # noqa: E402
    DOT_CENTRE,
    PERSON_A,
    PERSON_B,
    _lb,
    _xyxy,
    detector_row,
    dot_image,
    make_const_pose_onnx,
    make_detector_onnx,
)
from xdyna_core.preprocess import dwpose  # noqa: E402
from xdyna_core.preprocess.dwpose import (  # noqa: E402
    DWPoseConfig,
    DWPoseDetector,
    DWPoseModelsNotFound,
    decode_yolox,
    find_dwpose_models,
    read_annotator_ckpts_path,
    select_people,
)


# ------------------------------------------------------------------------ one network, two formats

class StandinYolox(torch.nn.Module):
    """Raw YOLOX rows fixed by `boxes`, objectness gated by max(image)/255 - 0.45 (the ONNX
    stand-in of test_dwpose.py, written in torch)."""

    def __init__(self, boxes):
        super().__init__()
        base, gate = torch.zeros(1, 8400, 85), torch.zeros(1, 8400, 85)
        for cx, cy, w, h, weight, cls, *stride in boxes:
            row, raw = detector_row(cx, cy, w, h, *(stride or [16]))
            base[0, row, :4] = torch.tensor(raw)
            base[0, row, 5 + cls] = 1.0
            gate[0, row, 4] = weight
        self.register_buffer("base", base)
        self.register_buffer("gate", gate)
        self.unit = torch.nn.Parameter(torch.ones(1))  # gives the module a dtype/device

    def forward(self, images):
        g = images.amax(dim=(1, 2, 3)).view(-1, 1, 1) / 255.0 - 0.45
        return (self.base + self.gate * g) * self.unit


class StandinDotPose(torch.nn.Module):
    """Every keypoint's x/y SimCC curve = the column/row maxima of the crop's channel 0, each
    repeated twice (split ratio 2): all 133 points land on the crop's brightest spot."""

    def __init__(self):
        super().__init__()
        self.unit = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        c0 = x[:, :1] * self.unit
        sx = c0.amax(dim=2).repeat_interleave(2, dim=-1).expand(-1, 133, -1)
        sy = c0.amax(dim=3).repeat_interleave(2, dim=-1).expand(-1, 133, -1)
        return sx, sy


DET_BOXES = [(*_lb(PERSON_A), 1.0, 0), (*_lb(PERSON_B), 0.8, 0, 32), (*_lb((100, 800, 150, 150)), 1.5, 2)]


def _export_onnx(module, example, path, input_name, output_names):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=output_names,
                          opset_version=17, dynamo=False)
    return path


def _export_torchscript(module, example, path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+: "jit.trace is deprecated"
        traced = torch.jit.trace(module, example)
    traced.save(str(path))
    return path


def write_det(folder, fmt):
    folder.mkdir(parents=True, exist_ok=True)
    net, x = StandinYolox(DET_BOXES).eval(), torch.zeros(1, 3, 640, 640)
    if fmt == "onnx":
        return _export_onnx(net, x, folder / "yolox_l.onnx", "images", ["output"])
    return _export_torchscript(net, x, folder / "yolox_l.torchscript.pt")


def write_pose(folder, fmt):
    folder.mkdir(parents=True, exist_ok=True)
    net = StandinDotPose().eval()
    if fmt == "onnx":
        return _export_onnx(net, torch.zeros(1, 3, 384, 288), folder / "dw-ll_ucoco_384.onnx", "input",
                            ["simcc_x", "simcc_y"])
    return _export_torchscript(net, torch.zeros(5, 3, 384, 288), folder / "dw-ll_ucoco_384_bs5.torchscript.pt")


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory):
    d = tmp_path_factory.mktemp("dwpose_formats")
    return {(role, fmt): (write_det if role == "det" else write_pose)(d / fmt, fmt)
            for role in ("det", "pose") for fmt in ("onnx", "torchscript")}


def _run(det, pose, image):
    detector = DWPoseDetector(det, pose, providers=["CPUExecutionProvider"], device="cpu",
                              config=DWPoseConfig(max_people=None))
    boxes, scores = detector.detect(image)
    frame = detector(image)
    kps = np.stack([np.concatenate([p.body, p.face, p.left_hand, p.right_hand]) for p in frame.people])
    return boxes, scores, kps


def test_onnx_and_torchscript_give_the_same_boxes_and_keypoints(both_formats):
    image = dot_image()
    ref_boxes, ref_scores, ref_kps = _run(both_formats["det", "onnx"], both_formats["pose", "onnx"], image)
    # Two people (A with the dot, B), the class-2 box dropped; A's points on the dot.
    assert ref_boxes.shape == (2, 4) and ref_kps.shape == (2, 18 + 68 + 42, 3)
    np.testing.assert_allclose(ref_boxes[0], _xyxy(PERSON_A), atol=0.05)
    assert np.all(np.abs(ref_kps[0, :, :2] - DOT_CENTRE) < 2.0)
    for det_fmt, pose_fmt in [("torchscript", "torchscript"), ("onnx", "torchscript"), ("torchscript", "onnx")]:
        boxes, scores, kps = _run(both_formats["det", det_fmt], both_formats["pose", pose_fmt], image)
        np.testing.assert_allclose(boxes, ref_boxes, atol=1e-3, err_msg=f"{det_fmt}/{pose_fmt}")
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        np.testing.assert_allclose(kps, ref_kps, atol=1e-3, err_msg=f"{det_fmt}/{pose_fmt}")


def test_torchscript_pose_runs_in_padded_batches_of_five(both_formats):
    det = DWPoseDetector(both_formats["det", "onnx"], both_formats["pose", "torchscript"], device="cpu")
    assert det.pose.batch_size == 5 and det.pose_wh == (288, 384)
    boxes = np.array([_xyxy(PERSON_A)] * 7)  # 7 crops -> two batches of 5, the last padded
    points, scores = det.estimate_many(dot_image(), boxes)
    assert points.shape == (7, 133, 2) and scores.shape == (7, 133)
    assert np.all(np.abs(points[:, :, :2] - DOT_CENTRE) < 2.0)


def test_unreadable_torchscript_file_is_named(tmp_path, both_formats):
    bad = tmp_path / "dw-ll_ucoco_384_bs5.torchscript.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot load TorchScript model .*dw-ll_ucoco_384_bs5"):
        DWPoseDetector(both_formats["det", "onnx"], bad, device="cpu")


# ------------------------------------------------------------------------ controlnet_aux layouts

@pytest.fixture
def comfy_tree(monkeypatch, tmp_path):
    for var in ("XDYNA_DWPOSE_DIR", "XDYNA_MODELS_DIR", "AUX_ANNOTATOR_CKPTS_PATH"):
        monkeypatch.delenv(var, raising=False)
    comfy = tmp_path / "ComfyUI"
    monkeypatch.setattr(dwpose, "EXTENSION_ROOT", comfy / "custom_nodes" / "ComfyUI-XDyna")
    return comfy


def _copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def test_controlnet_aux_default_files_found_and_run_end_to_end(comfy_tree, both_formats):
    """controlnet_aux's DWPose defaults: yolox_l.onnx (yzd-v/DWPose) + the bs5 TorchScript pose model."""
    from xdyna_core.preprocess.detectors import make_pose_detector

    ckpts = comfy_tree / "custom_nodes" / "comfyui-controlnet-aux" / "ckpts"
    det = _copy(both_formats["det", "onnx"], ckpts / "yzd-v" / "DWPose" / "yolox_l.onnx")
    pose = _copy(both_formats["pose", "torchscript"],
                 ckpts / "hr16" / "DWPose-TorchScript-BatchSize5" / "dw-ll_ucoco_384_bs5.torchscript.pt")
    assert find_dwpose_models() == (det, pose)
    name, detector = make_pose_detector("auto")
    assert name == "dwpose" and detector.pose_path == pose
    frame = detector(dot_image())
    assert np.all(np.abs(frame.main.body[:, :2] - DOT_CENTRE) < 2.0)


def test_config_yaml_ckpts_path_and_env_override(comfy_tree, tmp_path, both_formats, monkeypatch):
    pack = comfy_tree / "custom_nodes" / "comfyui_controlnet_aux"
    pack.mkdir(parents=True)
    (pack / "config.yaml").write_text('# controlnet_aux settings\nannotator_ckpts_path: "./elsewhere"\n'
                                      'USE_SYMLINKS: False\n')
    det = _copy(both_formats["det", "torchscript"], pack / "elsewhere" / "hr16" / "yolox-onnx" / "yolox_l.torchscript.pt")
    pose = _copy(both_formats["pose", "onnx"], pack / "ckpts" / "yzd-v" / "DWPose" / "dw-ll_ucoco_384.onnx")
    assert find_dwpose_models() == (det, pose)
    # The configured root comes before the pack's default ckpts/.
    pose2 = _copy(both_formats["pose", "onnx"], pack / "elsewhere" / "yzd-v" / "DWPose" / "dw-ll_ucoco_384.onnx")
    assert find_dwpose_models() == (det, pose2)
    # ONNX is preferred over TorchScript within one folder.
    det_onnx = _copy(both_formats["det", "onnx"], det.parent / "yolox_l.onnx")
    assert find_dwpose_models()[0] == det_onnx
    # $AUX_ANNOTATOR_CKPTS_PATH (what controlnet_aux exports once loaded) comes first.
    env_root = tmp_path / "aux_env"
    pose3 = _copy(both_formats["pose", "torchscript"],
                  env_root / "hr16" / "DWPose-TorchScript-BatchSize5" / "dw-ll_ucoco_384_bs5.torchscript.pt")
    monkeypatch.setenv("AUX_ANNOTATOR_CKPTS_PATH", str(env_root))
    assert find_dwpose_models()[1] == pose3
    DWPoseDetector(*find_dwpose_models(), device="cpu")(dot_image())  # the mixed pair runs


def test_miss_names_every_folder_in_order(comfy_tree):
    pack = comfy_tree / "custom_nodes" / "comfyui_controlnet_aux"
    pack.mkdir(parents=True)
    (pack / "config.yaml").write_text("annotator_ckpts_path: /data/aux  # shared disk\n")
    with pytest.raises(DWPoseModelsNotFound) as ei:
        find_dwpose_models()
    lines = str(ei.value).splitlines()
    first = lines[0]
    assert "yolox_l.onnx or yolox_l.torchscript.pt" in first and "dw-ll_ucoco_384_bs5.torchscript.pt" in first
    assert "models/xdyna/detectors/" in first  # the one line says what to place where
    folders = [line.strip() for line in lines[1:]]
    expected = [comfy_tree / "custom_nodes" / "ComfyUI-XDyna" / "models" / "dwpose",
                comfy_tree / "models" / "xdyna" / "detectors",
                "/data/aux/yzd-v/DWPose", pack / "ckpts" / "hr16" / "DWPose-TorchScript-BatchSize5",
                comfy_tree / "custom_nodes" / "comfyui-controlnet-aux" / "ckpts" / "yzd-v" / "DWPose"]
    positions = [folders.index(str(e)) for e in expected]
    assert positions == sorted(positions)


@pytest.mark.parametrize("line, expected", [
    ('annotator_ckpts_path: "./ckpts"', "REL:ckpts"),
    ("annotator_ckpts_path: 'D:/models/aux'", "REL:D:/models/aux"),  # a Windows path stays as written
    ("annotator_ckpts_path: /abs/aux   # comment", "/abs/aux"),
    ("annotator_ckpts_path:", None),
    ("other_key: 1", None),
])
def test_read_annotator_ckpts_path(tmp_path, line, expected):
    from pathlib import Path

    (tmp_path / "config.yaml").write_text(f"custom_temp_path:\n{line}\nUSE_SYMLINKS: False\n")
    got = read_annotator_ckpts_path(tmp_path / "config.yaml")
    if expected is None:
        assert got is None
    elif expected.startswith("REL:"):
        assert got == tmp_path / expected[4:]  # relative to the pack folder (absolute on Windows)
    else:
        assert got == Path(expected)


# ------------------------------------------------------------------------ independent re-statements

def reference_person_boxes(raw, ratio):
    """The references' detector post-processing, restated loop by loop: decode every row, for each
    class its own candidates (> 0.1) through greedy NMS (IoU 0.45, +1 areas), concatenate the
    classes, then keep class 0 with score > 0.3."""
    strides, cells = [], []
    for s in (8, 16, 32):
        for gy in range(640 // s):
            for gx in range(640 // s):
                cells.append((gx, gy))
                strides.append(s)
    rows = []
    for r in range(len(raw)):
        gx, gy = cells[r]
        s = strides[r]
        cx, cy = (raw[r, 0] + gx) * s, (raw[r, 1] + gy) * s
        w, h = np.exp(raw[r, 2]) * s, np.exp(raw[r, 3]) * s
        rows.append(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / ratio)
    boxes = np.array(rows)
    dets = []
    for c in range(raw.shape[1] - 5):
        sc = raw[:, 4] * raw[:, 5 + c]
        idx = [i for i in range(len(sc)) if sc[i] > 0.1]
        idx.sort(key=lambda i: -sc[i])
        kept = []
        while idx:
            i = idx.pop(0)
            kept.append(i)
            survivors = []
            for j in idx:
                ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1)
                iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1)
                area = lambda k: (boxes[k, 2] - boxes[k, 0] + 1) * (boxes[k, 3] - boxes[k, 1] + 1)
                if ix * iy / (area(i) + area(j) - ix * iy) <= 0.45:
                    survivors.append(j)
            idx = survivors
        dets += [(boxes[i], sc[i], c) for i in kept]
    return [(b, s) for b, s, c in dets if c == 0 and s > 0.3]


def test_detector_selection_equals_reference_restatement():
    rng = np.random.default_rng(3)
    raw = np.zeros((8400, 85), np.float32)
    raw[:, 4] = 0.0
    # 60 rows in a small region so boxes overlap heavily; mixed classes, several classes per row.
    rows = rng.choice(np.arange(6400, 6400 + 40 * 12), 60, replace=False)
    raw[rows, 0:2] = rng.uniform(0, 1, (60, 2))
    raw[rows, 2:4] = rng.uniform(1.0, 3.0, (60, 2))
    raw[rows, 4] = rng.uniform(0.2, 1.0, 60)
    raw[rows[:, None], 5 + rng.integers(0, 80, (60, 3))] = rng.uniform(0.05, 1.0, (60, 3))
    raw[rows, 5] = np.where(rng.uniform(size=60) < 0.6, rng.uniform(0.2, 1.0, 60), raw[rows, 5])
    ratio = 640 / 896
    boxes, cls_scores = decode_yolox(raw, (640, 640), ratio)
    got_boxes, got_scores = select_people(boxes, cls_scores)
    expected = reference_person_boxes(raw, ratio)
    assert len(expected) >= 3  # the draw has several surviving people
    assert len(got_boxes) == len(expected)
    for (b, s), gb, gs in zip(expected, got_boxes, got_scores):
        np.testing.assert_allclose(gb, b, atol=0.01)
        assert gs == pytest.approx(s, rel=1e-5)


def test_person_overlapped_by_higher_scoring_other_class_survives(tmp_path):
    """A person with a backpack (class 24) box over most of it, and a chair (class 56) overlapping
    the person more strongly than NMS allows, both scoring higher: the person is still found."""
    backpack, chair = (185, 470, 160, 500), (220, 510, 200, 600)  # other grid cells than the person's
    det = make_detector_onnx(tmp_path / "yolox_l.onnx", [
        (*_lb(PERSON_A), 1.0, 0), (*_lb(backpack), 1.6, 24), (*_lb(chair), 1.8, 56)])
    pose = make_const_pose_onnx(tmp_path / "p.onnx", np.full(133, 300), np.full(133, 400), np.full(133, 0.9))
    boxes, scores = DWPoseDetector(det, pose).detect(dot_image())
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0], _xyxy(PERSON_A), atol=0.05)


def reference_keypoints(simcc_x, simcc_y, box, input_wh=(288, 384)):
    """The references' top-down decoding, restated: centre/scale with padding 1.25 and the aspect
    fix, per keypoint argmax, score = min of the two maxima, bins -1 where score <= 0, then / 2,
    then crop -> image; then the OpenPose order by inserting the neck at 17 and permuting."""
    x0, y0, x1, y1 = box
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    s = np.array([(x1 - x0) * 1.25, (y1 - y0) * 1.25])
    a = input_wh[0] / input_wh[1]
    s = np.array([s[0], s[0] / a]) if s[0] > s[1] * a else np.array([s[1] * a, s[1]])
    kpts = np.zeros((133, 3))
    for k in range(133):
        bx, by = float(np.argmax(simcc_x[k])), float(np.argmax(simcc_y[k]))
        score = min(simcc_x[k].max(), simcc_y[k].max())
        if score <= 0:
            bx = by = -1.0
        loc = np.array([bx, by]) / 2.0
        kpts[k, :2] = loc / np.array(input_wh) * s + c - s / 2
        kpts[k, 2] = score
    neck = np.concatenate([(kpts[5, :2] + kpts[6, :2]) / 2, [float(kpts[5, 2] > 0.3 and kpts[6, 2] > 0.3)]])
    full = np.insert(kpts, 17, neck, axis=0)
    reordered = full.copy()
    reordered[[1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]] = full[[17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]]
    return kpts, reordered  # COCO-133 order; 134 rows: body 0-17, feet 18-23, face 24-91, hands 92-133


def test_pose_decoding_equals_reference_restatement(tmp_path, both_formats):
    rng = np.random.default_rng(5)
    ix, iy = rng.integers(0, 576, 133), rng.integers(0, 768, 133)
    scores = rng.uniform(-0.5, 1.0, 133).astype(np.float32)  # some invalid (<= 0), some under 0.3
    scores[[5, 6]] = (0.8, 0.7)  # both shoulders visible: the neck exists
    pose = make_const_pose_onnx(tmp_path / "const.onnx", ix, iy, scores)
    detector = DWPoseDetector(both_formats["det", "onnx"], pose)
    image = dot_image()
    box = detector.detect(image)[0][0]
    sx = np.full((133, 576), 0.0, np.float32)
    sy = np.full((133, 768), 0.0, np.float32)
    sx[np.arange(133), ix] = scores
    sy[np.arange(133), iy] = scores
    # Where a planted score is <= 0 the zero background is the maximum: the argmax is bin 0 with
    # score 0, which the references also treat as invalid. Build the expectation from the same curves.
    coco, ref = reference_keypoints(sx, sy, box.astype(np.float64))
    person = detector(image).main
    body_ref = ref[:18]
    np.testing.assert_allclose(person.body[:, :2], body_ref[:, :2], atol=0.5)
    np.testing.assert_allclose(person.body[:, 2], np.where(body_ref[:, 2] > 0.3, body_ref[:, 2], 0), atol=1e-6)
    np.testing.assert_allclose(person.face[:, :2], ref[24:92, :2], atol=0.5)
    np.testing.assert_allclose(person.left_hand[:, :2], ref[92:113, :2], atol=0.5)
    np.testing.assert_allclose(person.right_hand[:, :2], ref[113:134, :2], atol=0.5)
    invalid = scores <= 0
    assert invalid.any()
    # Invalid points sit where bin -1 maps to (not bin -2, which dividing first would give).
    pts, _ = detector.estimate(image, box)
    np.testing.assert_allclose(pts[invalid], coco[invalid, :2], atol=0.01)
    np.testing.assert_allclose(pts, coco[:, :2], atol=0.5)


def test_half_precision_torchscript_runs_in_float32_on_cpu(tmp_path):
    net = StandinDotPose().half().eval()
    path = tmp_path / "dw-ll_ucoco_384_bs5.torchscript.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(net.float(), torch.zeros(5, 3, 384, 288)).half().save(str(path))
    from xdyna_core.preprocess.dwpose import TorchScriptNet

    ts = TorchScriptNet(path, (384, 288), device="cpu", batch_size=5)
    assert ts.dtype == torch.float32
    sx, sy = ts.run(np.random.default_rng(0).normal(size=(2, 3, 384, 288)).astype(np.float32))
    assert sx.shape == (2, 133, 576) and sy.shape == (2, 133, 768) and sx.dtype == np.float32


def test_install_report_names_the_extractor_or_what_to_place(comfy_tree, both_formats, monkeypatch):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from xdyna_core.preprocess import detectors, mediapipe_backend

    monkeypatch.setattr(mediapipe_backend, "installed_mediapipe", lambda: None)
    assert detectors.pose_extractor_status() == detectors.no_extractor_message("mediapipe is not installed")
    assert "\n" not in detectors.NO_POSE_EXTRACTOR and "models/xdyna/detectors/" in detectors.NO_POSE_EXTRACTOR
    ckpts = comfy_tree / "custom_nodes" / "comfyui_controlnet_aux" / "ckpts"
    _copy(both_formats["det", "onnx"], ckpts / "yzd-v" / "DWPose" / "yolox_l.onnx")
    pose = _copy(both_formats["pose", "torchscript"],
                 ckpts / "hr16" / "DWPose-TorchScript-BatchSize5" / "dw-ll_ucoco_384_bs5.torchscript.pt")
    status = detectors.pose_extractor_status()
    assert status.startswith("pose extractor: DWPose") and str(pose) in status
    # install.py (what ComfyUI-Manager runs) reports and exits 0, whatever it finds
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "install.py"), "--check"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.startswith("ComfyUI-XDyna: "), proc.stdout + proc.stderr
