"""DWPose whole-body keypoints from the files comfyui_controlnet_aux users already have (our own
runner; never downloads anything).

Model files (each role: the first folder holding any accepted name wins, ONNX before TorchScript
within a folder):
  detector  yolox_l.onnx (onnxruntime) or yolox_l.torchscript.pt (torch): input [1,3,640,640]
            -> raw YOLOX head output [1,8400,85]
  pose      dw-ll_ucoco_384.onnx (onnxruntime) or dw-ll_ucoco_384_bs5.torchscript.pt (torch,
            traced for batches of exactly 5 crops): input [N,3,384,288] -> simcc_x [N,133,576],
            simcc_y [N,133,768] (SimCC, split ratio 2)
TorchScript runs on torch (the GPU when there is one), so it needs no onnxruntime.

Per frame: letterbox -> YOLOX decode -> person NMS -> boxes; per box: padded, aspect-fixed affine
crop -> normalise -> SimCC argmax -> back to image pixels; the 133 COCO-WholeBody points become a
`Person` (OpenPose-18 body with a synthesised neck, hands 21+21, iBUG-68 face).

The steps and constants follow the two references, comfyui_controlnet_aux
(src/custom_controlnet_aux/dwpose: dw_onnx/cv_ox_det.py, cv_ox_pose.py, dw_torchscript/*,
wholebody.py) and the original DWPose annotator (ControlNet-v1-1-nightly/annotator/dwpose:
onnxdet.py, onnxpose.py, wholebody.py); the comments below name the step. What is proven against
them: the pose model's input (crop matrix, bilinear warp, normalisation, in the references' dtypes)
is equal, tensor for tensor, to the references' arithmetic re-implemented step by step in
tests/core/test_dwpose_crops.py, on frames of the shared clips. The other steps are tested against
their specification on stand-in models (tests/core/test_dwpose*.py).

A frame without a detected person gives a PoseFrame with no people, as controlnet_aux does
(optionally the whole image is used as one box, as the original annotator does).
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import XDynaError
from .keypoints import NUM_BODY, Person, PoseFrame

PathLike = Union[str, os.PathLike]

# Accepted file names per role, preferred first within a folder.
DET_FILES = ("yolox_l.onnx", "yolox_l.torchscript.pt")
POSE_FILES = ("dw-ll_ucoco_384.onnx", "dw-ll_ucoco_384_bs5.torchscript.pt")
DET_FILENAME, POSE_FILENAME = DET_FILES[0], POSE_FILES[0]
TORCHSCRIPT_SUFFIX = ".torchscript.pt"
TORCHSCRIPT_POSE_BATCH = 5  # the "_bs5" export: traced for batches of exactly 5 crops

# comfyui_controlnet_aux: the folder names its pack is cloned under (git name / registry name),
# and where it stores each download under its ckpts root (<ckpts>/<hub repo>/<file>).
CONTROLNET_AUX_PACKS = ("comfyui_controlnet_aux", "comfyui-controlnet-aux")
AUX_SUBDIRS = ("yzd-v/DWPose", "hr16/yolox-onnx", "hr16/DWPose-TorchScript-BatchSize5")
EXTENSION_ROOT = Path(__file__).resolve().parents[2]

# COCO-WholeBody 133 layout.
WB_FACE = slice(23, 91)
WB_LEFT_HAND = slice(91, 112)
WB_RIGHT_HAND = slice(112, 133)
NUM_WHOLEBODY = 133
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
# OpenPose-18 index -> COCO-17 index (-1: neck, synthesised from both shoulders); the references'
# insert-then-permute of wholebody.py written as one table.
COCO_TO_OP18 = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]

# Detector input (cv_ox_det.py / onnxdet.py: 640x640, grey 114 letterbox, raw 0..255 RGB).
DET_INPUT_HW = (640, 640)
LETTERBOX_FILL = 114
YOLOX_STRIDES = (8, 16, 32)
PERSON_CLASS = 0  # COCO "person"
# Pose input normalisation (cv_ox_pose.py / onnxpose.py: ImageNet mean/std in 0..255 RGB, applied
# in float64 to the uint8 crop; the network's own dtype comes only when the batch is handed over).
POSE_MEAN = np.array([123.675, 116.28, 103.53], np.float64)
POSE_STD = np.array([58.395, 57.12, 57.375], np.float64)


class DWPoseModelsNotFound(XDynaError, FileNotFoundError):
    """A DWPose model file is in none of the searched folders (the message lists them all)."""


# --------------------------------------------------------------------------- model file lookup

def _env_dirs(name: str) -> List[Path]:
    value = os.environ.get(name, "")
    return [Path(v) for v in value.split(os.pathsep) if v.strip()]


def _expand(root: Path) -> List[Path]:
    """A folder given by the user may hold the files itself, a dwpose/ subfolder, or be a
    controlnet_aux ckpts root."""
    return [root, root / "dwpose"] + [root / s for s in AUX_SUBDIRS]


def read_annotator_ckpts_path(config_yaml: PathLike) -> Optional[Path]:
    """`annotator_ckpts_path` of a controlnet_aux config.yaml (relative values are relative to
    the pack folder, as controlnet_aux reads them), or None. A one-key reader: no YAML package."""
    path = Path(config_yaml)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"^annotator_ckpts_path\s*:[ \t]*(.*)$", text, re.MULTILINE)
    if not m:
        return None
    value = m.group(1).strip()
    if value[:1] in ("'", '"'):
        value = value[1:value.find(value[0], 1)] if value.find(value[0], 1) > 0 else value[1:]
    else:
        value = value.split(" #", 1)[0].strip()
    return (path.parent / value) if value else None


def controlnet_aux_ckpts_roots(custom_nodes: Optional[PathLike]) -> List[Path]:
    """controlnet_aux's checkpoint roots, in the order it would use them:
    $AUX_ANNOTATOR_CKPTS_PATH, then for each pack folder name under `custom_nodes` the
    `annotator_ckpts_path` of its config.yaml and its default ckpts/."""
    roots = list(_env_dirs("AUX_ANNOTATOR_CKPTS_PATH"))
    if custom_nodes is not None:
        for pack in CONTROLNET_AUX_PACKS:
            folder = Path(custom_nodes) / pack
            configured = read_annotator_ckpts_path(folder / "config.yaml")
            roots += ([configured] if configured is not None else []) + [folder / "ckpts"]
    return roots


def default_search_dirs() -> List[Path]:
    """Folders searched after the caller's, in order:
    $XDYNA_DWPOSE_DIR; $XDYNA_MODELS_DIR (itself, dwpose/, xdyna/detectors/); the extension's
    models/ folder; ComfyUI's models/dwpose and models/xdyna/detectors when the extension sits in
    custom_nodes/; comfyui_controlnet_aux's ckpts roots (`controlnet_aux_ckpts_roots`) with its
    yzd-v/DWPose, hr16/yolox-onnx and hr16/DWPose-TorchScript-BatchSize5 subfolders."""
    dirs: List[Path] = list(_env_dirs("XDYNA_DWPOSE_DIR"))
    for root in _env_dirs("XDYNA_MODELS_DIR"):
        dirs += [root, root / "dwpose", root / "xdyna" / "detectors"]
    dirs += [EXTENSION_ROOT / "models" / "dwpose", EXTENSION_ROOT / "models"]
    custom_nodes = EXTENSION_ROOT.parent
    if custom_nodes.name == "custom_nodes":
        comfy_models = custom_nodes.parent / "models"
        dirs += [comfy_models / "dwpose", comfy_models / "xdyna" / "detectors"]
    else:
        custom_nodes = None
    for root in controlnet_aux_ckpts_roots(custom_nodes):
        dirs += [root / s for s in AUX_SUBDIRS]
    return dirs


def search_order(search_dirs: Optional[Sequence[PathLike]] = None) -> List[Path]:
    """Every folder `find_dwpose_models` looks in, in order, without repeats."""
    dirs: List[Path] = []
    for d in search_dirs or []:
        dirs += _expand(Path(d).expanduser())
    dirs += default_search_dirs()
    seen, ordered = set(), []
    for d in dirs:
        key = os.path.normcase(os.path.abspath(d))
        if key not in seen:
            seen.add(key)
            ordered.append(d)
    return ordered


def find_dwpose_models(
    search_dirs: Optional[Sequence[PathLike]] = None,
    det_files: Sequence[str] = DET_FILES,
    pose_files: Sequence[str] = POSE_FILES,
) -> Tuple[Path, Path]:
    """(detector path, pose path): each role is looked up independently in `search_order()`; the
    first folder holding one of its accepted names wins (names tried in the given order). A miss
    raises DWPoseModelsNotFound naming the file(s) and every folder searched, in order."""
    ordered = search_order(search_dirs)
    found, missing = [], []
    for names in (det_files, pose_files):
        hit = next((d / n for d in ordered for n in names if (d / n).is_file()), None)
        if hit is None:
            missing.append(" or ".join(names))
        found.append(hit)
    if missing:
        listing = "\n".join(f"  {d}" for d in ordered)
        raise DWPoseModelsNotFound(
            f"DWPose model file(s) not found: {'; '.join(missing)}: place them in ComfyUI's "
            f"models/xdyna/detectors/ (or a folder given with --models / XDYNA_DWPOSE_DIR); "
            f"comfyui_controlnet_aux's downloads are used where they are. Nothing is downloaded. "
            f"Searched these folders, in order:\n{listing}"
        )
    return found[0], found[1]


def is_torchscript(path: PathLike) -> bool:
    return str(path).endswith(TORCHSCRIPT_SUFFIX)


def select_providers(providers: Optional[Sequence[str]] = None) -> List[str]:
    """Explicit providers as given; otherwise CUDA when this onnxruntime build has it, then CPU."""
    import onnxruntime as ort

    if providers:
        return list(providers)
    available = ort.get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return chosen + ["CPUExecutionProvider"]


# --------------------------------------------------------------------------- networks

def _static_hw(shape, default: Tuple[int, int]) -> Tuple[int, int]:
    h, w = (shape[2], shape[3]) if len(shape) == 4 else default
    return (h if isinstance(h, int) else default[0], w if isinstance(w, int) else default[1])


class OnnxNet:
    """One ONNX model on onnxruntime: `run(batch NCHW float) -> [outputs]` (the batch cast to the
    model's input dtype). A model whose batch
    axis is fixed to 1 is run crop by crop."""

    def __init__(self, path: Path, providers: Sequence[str], default_hw: Tuple[int, int],
                 output_names: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # keep provider-fallback chatter off the console
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own types; say which file failed
            raise ValueError(f"cannot load ONNX model {path}: {e}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_hw = _static_hw(inp.shape, default_hw)
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.batch_one = len(inp.shape) == 4 and inp.shape[0] == 1
        outs = [o.name for o in self.session.get_outputs()]
        wanted = list(output_names or [])
        self.outputs = wanted if wanted and set(wanted) <= set(outs) else None
        self.num_outputs = len(outs)

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        parts = [batch[i:i + 1] for i in range(len(batch))] if self.batch_one else [batch]
        results = [self.session.run(self.outputs, {self.input_name: p.astype(self.dtype, copy=False)})
                   for p in parts]
        return [np.concatenate([np.asarray(r[k], np.float32) for r in results]) for k in range(len(results[0]))]


class TorchScriptNet:
    """One TorchScript model on torch: `run(batch NCHW float) -> [outputs]`, on `device`
    (default: CUDA when available) in the dtype of its weights. With `batch_size`, the batch is
    zero-padded to whole multiples and run in chunks of that size (the bs5 pose export)."""

    def __init__(self, path: Path, input_hw: Tuple[int, int], device=None, batch_size: Optional[int] = None):
        import torch

        self.torch = torch
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+: "jit.load is deprecated"
                self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as e:  # torch raises RuntimeError with a long C++ trace
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"cannot load TorchScript model {path}: {first}") from None
        param = next(iter(self.module.parameters()), None)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        if self.device.type == "cpu" and self.dtype in (torch.float16, torch.bfloat16):
            self.module.float()  # half-precision exports run slowly (or not at all) on CPU
            self.dtype = torch.float32
        self.input_hw = tuple(input_hw)
        self.batch_size = batch_size

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        torch = self.torch
        n = len(batch)
        size = self.batch_size or n
        padded = -(-n // size) * size
        if padded != n:
            batch = np.concatenate([batch, np.zeros((padded - n,) + batch.shape[1:], batch.dtype)])
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
        outs = []
        with torch.inference_mode():
            for i in range(0, padded, size):
                y = self.module(x[i:i + size])
                outs.append([y] if isinstance(y, torch.Tensor) else list(y))
        return [torch.cat([o[k] for o in outs])[:n].float().cpu().numpy() for k in range(len(outs[0]))]


def torchscript_pose_input_hw(path: PathLike) -> Tuple[int, int]:
    """A TorchScript file has no input shape: controlnet_aux takes it from the name ("384" ->
    288x384, the DWPose-l model; otherwise 192x256). Returned as (h, w)."""
    return (384, 288) if "384" in Path(path).name else (256, 192)


# --------------------------------------------------------------------------- detector (YOLOX)

def letterbox(image: np.ndarray, input_hw: Tuple[int, int]) -> Tuple[np.ndarray, float]:
    """Scale to fit input_hw keeping the aspect (sizes truncated to int), paste top-left on a grey
    (114) canvas; no normalisation. Returns (NCHW float32 0..255, scale factor r)."""
    import cv2

    h, w = image.shape[:2]
    ih, iw = input_hw
    r = min(ih / h, iw / w)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    canvas = np.full((ih, iw, 3), LETTERBOX_FILL, np.uint8)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    # Transpose while still uint8 (4x less memory traffic), then convert.
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)).astype(np.float32)[None], r


@functools.lru_cache(maxsize=8)
def yolox_grids(input_hw: Tuple[int, int], strides: Tuple[int, ...] = YOLOX_STRIDES):
    """Anchor-free grid cells of all levels, row-major per level: (N, 2) xy cell, (N, 1) stride
    (cached, read-only)."""
    cells, cell_strides = [], []
    for s in strides:
        gh, gw = input_hw[0] // s, input_hw[1] // s
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full((gh * gw, 1), s))
    cells, cell_strides = np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)
    cells.flags.writeable = cell_strides.flags.writeable = False
    return cells, cell_strides


def decode_yolox(raw: np.ndarray, input_hw: Tuple[int, int], ratio: float) -> Tuple[np.ndarray, np.ndarray]:
    """Raw head output (N, 5 + classes) -> xyxy boxes in original-image pixels (N, 4) and
    per-class scores objectness * class probability (N, classes)."""
    grids, strides = yolox_grids(tuple(input_hw))
    if raw.ndim != 2 or raw.shape[0] != grids.shape[0] or raw.shape[1] < 6:
        raise ValueError(
            f"detector output has shape {raw.shape}, expected ({grids.shape[0]}, 5 + classes) "
            f"for a {input_hw[1]}x{input_hw[0]} YOLOX input")
    xy = (raw[:, :2] + grids) * strides
    wh = np.exp(raw[:, 2:4]) * strides
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) / ratio
    scores = raw[:, 4:5] * raw[:, 5:]
    return boxes, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> List[int]:
    """Greedy single-class non-maximum suppression, highest score first, areas with the +1 pixel
    convention; ties are visited in the references' order (descending argsort)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep: List[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def select_people(boxes: np.ndarray, class_scores: np.ndarray, candidate_threshold: float = 0.1,
                  nms_iou: float = 0.45, keep_threshold: float = 0.3) -> Tuple[np.ndarray, np.ndarray]:
    """Person boxes (K, 4) and scores (K,), best first, as the references choose them: NMS runs
    per class on that class's own score (candidates > 0.1, IoU 0.45), then detections of the
    person class scoring > 0.3 are kept. Other classes never suppress a person, so only the person
    column is needed."""
    person = class_scores[:, PERSON_CLASS]
    cand = np.nonzero(person > candidate_threshold)[0]
    if cand.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    keep = cand[nms(boxes[cand], person[cand], nms_iou)]
    keep = keep[person[keep] > keep_threshold]
    return boxes[keep].astype(np.float32), person[keep].astype(np.float32)


# --------------------------------------------------------------------------- pose (SimCC)

def box_to_center_scale(box: np.ndarray, input_wh: Tuple[int, int], padding: float = 1.25):
    """Box -> (centre, scale=(w, h)) padded by `padding` (1.25 in both references), the shorter
    side grown to the model's w/h aspect ratio (float64, as the references compute it)."""
    x1, y1, x2, y2 = [float(v) for v in box[:4]]
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float64)
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = input_wh[0] / input_wh[1]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h], np.float64)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b + (a - b) turned 90 degrees counter-clockwise, in the dtype of a and b (float32 here)."""
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=d.dtype)


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_wh: Tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix taking the (center, scale) box onto input_wh, no rotation, through
    cv2.getAffineTransform of three point pairs formed in the references' dtypes (mmpose's
    get_warp_matrix as DWPose and controlnet_aux copy it): the centre and the point half the box
    width above it are computed in float64 and stored as float32; the third point is then formed in
    float32 FROM THOSE TWO ROUNDED POINTS, not from the float64 values (which differ from it in the
    last float32 bit often enough to move a crop pixel by one grey level)."""
    import cv2

    f32 = np.float32
    c = np.asarray(center, np.float64)
    src0 = c.astype(f32)
    src1 = (c + (0.0, float(scale[0]) * -0.5)).astype(f32)
    w, h = float(input_wh[0]), float(input_wh[1])
    dst0 = np.array([w * 0.5, h * 0.5], f32)
    dst1 = np.array([w * 0.5, h * 0.5 + w * -0.5], f32)
    src = np.stack([src0, src1, _third_point(src0, src1)])
    dst = np.stack([dst0, dst1, _third_point(dst0, dst1)])
    return cv2.getAffineTransform(src, dst)


def crop_affine(image: np.ndarray, center: np.ndarray, scale: np.ndarray, input_wh: Tuple[int, int]):
    """Warp the (center, scale) box onto input_wh, bilinear, black border."""
    import cv2

    m = crop_matrix(center, scale, input_wh)
    return cv2.warpAffine(image, m, (int(input_wh[0]), int(input_wh[1])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def pose_input(image: np.ndarray, boxes: np.ndarray, input_wh: Tuple[int, int], padding: float = 1.25):
    """The pose model's input for ``boxes`` of the uint8 RGB ``image``: (batch NCHW float64, centres,
    scales). Each crop is normalised in float64 as the references do; the network casts the batch to
    its own dtype (float32 / float16) in one rounding, as they do."""
    centers, scales, crops = [], [], []
    for box in boxes:
        center, scale = box_to_center_scale(box, input_wh, padding)
        crop = crop_affine(image, center, scale, input_wh)
        crops.append(((crop - POSE_MEAN) / POSE_STD).transpose(2, 0, 1))
        centers.append(center)
        scales.append(scale)
    return np.stack(crops), centers, scales


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0):
    """(K, Wx), (K, Hy) -> locations (K, 2) in model-input pixels, scores (K,) = the smaller of the
    two maxima. As in the references a point whose score is <= 0 gets bin -1 BEFORE the division
    by the split ratio (so its location is -1 / split_ratio)."""
    ix, iy = simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)
    vx = simcc_x[np.arange(len(ix)), ix]
    vy = simcc_y[np.arange(len(iy)), iy]
    bins = np.stack([ix, iy], axis=1).astype(np.float32)
    scores = np.minimum(vx, vy).astype(np.float32)
    bins[scores <= 0] = -1
    return bins / np.float32(split_ratio), scores


def wholebody_to_person(points: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> Person:
    """133 COCO-WholeBody points (x, y) + scores -> Person (OpenPose-18 body, hands, iBUG-68 face).
    Points with score <= threshold (0.3, DWPose's visibility threshold) get confidence 0. The neck
    is the shoulders' mean with confidence 1 when both shoulders score > threshold, else 0 (the
    references' logical-and)."""
    conf = np.where(scores > threshold, scores, 0.0).astype(np.float32)
    kp = np.concatenate([points.astype(np.float32), conf[:, None]], axis=1)
    body = np.zeros((NUM_BODY, 3), np.float32)
    for op, coco in enumerate(COCO_TO_OP18):
        if coco >= 0:
            body[op] = kp[coco]
    l_sho, r_sho = COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER
    body[1, :2] = (points[l_sho, :2].astype(np.float32) + points[r_sho, :2].astype(np.float32)) / 2
    body[1, 2] = 1.0 if (scores[l_sho] > threshold and scores[r_sho] > threshold) else 0.0
    return Person(
        body=body,
        left_hand=kp[WB_LEFT_HAND].copy(),
        right_hand=kp[WB_RIGHT_HAND].copy(),
        face=kp[WB_FACE].copy(),
    )


# --------------------------------------------------------------------------- runner

@dataclass
class DWPoseConfig:
    candidate_threshold: float = 0.1  # per-class score a box needs to enter NMS (references)
    nms_iou: float = 0.45  # references
    person_threshold: float = 0.3  # person score kept after NMS (references)
    keypoint_threshold: float = 0.3  # DWPose's visibility threshold for every keypoint
    bbox_padding: float = 1.25  # references
    max_people: Optional[int] = 1  # X-Dyna drives one subject; None = everyone, by score
    whole_image_fallback: bool = False  # no person detected -> pose the whole image as one box


class DWPoseDetector:
    """`DWPoseDetector(det_path, pose_path)(image uint8 HxWx3 RGB) -> PoseFrame`, people ordered
    by detector score (best first). Each path may be ONNX (onnxruntime, `providers`) or
    TorchScript (`*.torchscript.pt`, torch on `device`)."""

    def __init__(self, det_path: PathLike, pose_path: PathLike, providers: Optional[Sequence[str]] = None,
                 config: Optional[DWPoseConfig] = None, device=None):
        self.config = config or DWPoseConfig()
        self.det_path, self.pose_path = Path(det_path), Path(pose_path)
        for p in (self.det_path, self.pose_path):
            if not p.is_file():
                raise FileNotFoundError(f"DWPose model file not found: {p}")
        onnx = not (is_torchscript(self.det_path) and is_torchscript(self.pose_path))
        self.providers = select_providers(providers) if onnx else []

        if is_torchscript(self.det_path):
            self.det = TorchScriptNet(self.det_path, DET_INPUT_HW, device)
        else:
            self.det = OnnxNet(self.det_path, self.providers, DET_INPUT_HW)
        self.det_hw = self.det.input_hw

        if is_torchscript(self.pose_path):
            self.pose = TorchScriptNet(self.pose_path, torchscript_pose_input_hw(self.pose_path), device,
                                       batch_size=TORCHSCRIPT_POSE_BATCH)
        else:
            self.pose = OnnxNet(self.pose_path, self.providers, (384, 288), ("simcc_x", "simcc_y"))
            if self.pose.num_outputs < 2:
                raise ValueError(f"{self.pose_path}: expected two outputs (simcc_x, simcc_y), "
                                 f"got {self.pose.num_outputs}")
        ph, pw = self.pose.input_hw
        self.pose_wh = (pw, ph)

    # -- steps (public so tests and callers can inspect each stage)

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Person boxes (K, 4) xyxy in image pixels and scores (K,), best first."""
        cfg = self.config
        blob, ratio = letterbox(image, self.det_hw)
        raw = self.det.run(blob)[0]
        if raw.ndim == 3:
            raw = raw[0]
        boxes, cls_scores = decode_yolox(raw, self.det_hw, ratio)
        return select_people(boxes, cls_scores, cfg.candidate_threshold, cfg.nms_iou, cfg.person_threshold)

    def estimate_many(self, image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """133 whole-body points (N, 133, 2) in image pixels and SimCC scores (N, 133), one row
        per box (all crops go through the pose model as one batch)."""
        wh = np.array(self.pose_wh, np.float64)
        crops, centers, scales = pose_input(image, boxes, self.pose_wh, self.config.bbox_padding)
        sx, sy = self.pose.run(crops)[:2]
        if sx.shape[1] != NUM_WHOLEBODY or sy.shape[1] != NUM_WHOLEBODY:
            raise ValueError(f"{self.pose_path}: expected {NUM_WHOLEBODY} COCO-WholeBody keypoints, "
                             f"got simcc shapes {sx.shape} / {sy.shape}")
        split = sx.shape[2] / self.pose_wh[0]  # 576 / 288 = 2, the references' simcc_split_ratio
        points, scores = [], []
        for i in range(len(crops)):
            locs, sc = decode_simcc(sx[i], sy[i], split)
            points.append(locs / wh * scales[i] + centers[i] - scales[i] / 2)
            scores.append(sc)
        return np.stack(points).astype(np.float32), np.stack(scores)

    def estimate(self, image: np.ndarray, box: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """133 whole-body points (x, y) in image pixels and their SimCC scores for one box."""
        points, scores = self.estimate_many(image, np.asarray(box, np.float64)[None])
        return points[0], scores[0]

    def __call__(self, image: np.ndarray) -> PoseFrame:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"DWPoseDetector expects a uint8 RGB image (H, W, 3), got {got}")
        h, w = image.shape[:2]
        boxes, _ = self.detect(image)
        if len(boxes) == 0:
            if not self.config.whole_image_fallback:
                return PoseFrame(w, h, [])
            boxes = np.array([[0, 0, w, h]], np.float32)
        if self.config.max_people is not None:
            boxes = boxes[: self.config.max_people]
        points, scores = self.estimate_many(image, boxes)
        people = [wholebody_to_person(p, s, self.config.keypoint_threshold) for p, s in zip(points, scores)]
        return PoseFrame(w, h, people)


def load_dwpose(search_dirs: Optional[Sequence[PathLike]] = None, providers: Optional[Sequence[str]] = None,
                config: Optional[DWPoseConfig] = None, device=None) -> DWPoseDetector:
    """find_dwpose_models + DWPoseDetector in one call."""
    det, pose = find_dwpose_models(search_dirs)
    return DWPoseDetector(det, pose, providers=providers, config=config, device=device)
