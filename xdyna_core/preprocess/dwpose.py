"""DWPose whole-body keypoints on onnxruntime (our own runner; never downloads anything).

Two ONNX files of the DWPose release:
  yolox_l.onnx          person detector, `images` [1,3,640,640] -> [1,8400,85] raw YOLOX head output
  dw-ll_ucoco_384.onnx  top-down whole-body pose, `input` [1,3,384,288] -> simcc_x [1,133,576],
                        simcc_y [1,133,768] (SimCC, split ratio 2)
Per frame: letterbox -> YOLOX decode -> NMS -> person boxes; per box: padded, aspect-fixed affine
crop -> normalise -> SimCC argmax -> back to image pixels; the 133 COCO-WholeBody points become a
`Person` (OpenPose-18 body with a synthesised neck, hands 21+21, iBUG-68 face).

Confidence handling follows DWPose: a point counts only when its score > 0.3 (below that its
confidence is set to 0, the x, y of the model's best guess are kept); the neck exists only when
both shoulders do. A frame without a detected person gives a PoseFrame with no people (optionally
the whole image is used as one box, as the original ControlNet annotator does).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .keypoints import NUM_BODY, Person, PoseFrame

PathLike = Union[str, os.PathLike]

DET_FILENAME = "yolox_l.onnx"
POSE_FILENAME = "dw-ll_ucoco_384.onnx"

# Where comfyui_controlnet_aux keeps its downloads under its ckpts root (ONNX files only are used).
AUX_SUBDIRS = ("yzd-v/DWPose", "hr16/yolox-onnx", "hr16/DWPose-TorchScript-BatchSize5")
EXTENSION_ROOT = Path(__file__).resolve().parents[2]

# COCO-WholeBody 133 layout.
WB_FACE = slice(23, 91)
WB_LEFT_HAND = slice(91, 112)
WB_RIGHT_HAND = slice(112, 133)
NUM_WHOLEBODY = 133
# OpenPose-18 index -> COCO-17 index (-1: neck, synthesised from both shoulders).
COCO_TO_OP18 = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]

POSE_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], np.float32)
LETTERBOX_FILL = 114


class DWPoseModelsNotFound(FileNotFoundError):
    """A DWPose ONNX file is in none of the searched folders (the message lists them all)."""


# --------------------------------------------------------------------------- model file lookup

def _env_dirs(name: str) -> List[Path]:
    value = os.environ.get(name, "")
    return [Path(v) for v in value.split(os.pathsep) if v.strip()]


def _expand(root: Path) -> List[Path]:
    """A folder given by the user may hold the files itself, a dwpose/ subfolder, or be a
    controlnet_aux ckpts root."""
    return [root, root / "dwpose"] + [root / s for s in AUX_SUBDIRS]


def default_search_dirs() -> List[Path]:
    """Folders searched after the caller's, in order:
    $XDYNA_DWPOSE_DIR; $XDYNA_MODELS_DIR (itself, dwpose/, xdyna/detectors/); the extension's
    models/ folder; ComfyUI's models/dwpose and models/xdyna/detectors when the extension sits in
    custom_nodes/; comfyui_controlnet_aux's ckpts ($AUX_ANNOTATOR_CKPTS_PATH, then
    custom_nodes/comfyui_controlnet_aux/ckpts) with its yzd-v/DWPose, hr16/yolox-onnx and
    hr16/DWPose-TorchScript-BatchSize5 subfolders."""
    dirs: List[Path] = list(_env_dirs("XDYNA_DWPOSE_DIR"))
    for root in _env_dirs("XDYNA_MODELS_DIR"):
        dirs += [root, root / "dwpose", root / "xdyna" / "detectors"]
    dirs += [EXTENSION_ROOT / "models" / "dwpose", EXTENSION_ROOT / "models"]
    aux_roots = list(_env_dirs("AUX_ANNOTATOR_CKPTS_PATH"))
    custom_nodes = EXTENSION_ROOT.parent
    if custom_nodes.name == "custom_nodes":
        comfy_models = custom_nodes.parent / "models"
        dirs += [comfy_models / "dwpose", comfy_models / "xdyna" / "detectors"]
        aux_roots.append(custom_nodes / "comfyui_controlnet_aux" / "ckpts")
    for root in aux_roots:
        dirs += [root / s for s in AUX_SUBDIRS]
    return dirs


def find_dwpose_models(
    search_dirs: Optional[Sequence[PathLike]] = None,
    det_filename: str = DET_FILENAME,
    pose_filename: str = POSE_FILENAME,
) -> Tuple[Path, Path]:
    """(detector path, pose path): each file is looked up independently, first hit wins, in the
    given folders (each also with its dwpose/ and controlnet_aux subfolders), then
    `default_search_dirs()`. A miss raises DWPoseModelsNotFound naming the file(s) and every folder
    searched."""
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

    found, missing = {}, []
    for name in (det_filename, pose_filename):
        hit = next((d / name for d in ordered if (d / name).is_file()), None)
        if hit is None:
            missing.append(name)
        found[name] = hit
    if missing:
        listing = "\n".join(f"  {d}" for d in ordered)
        raise DWPoseModelsNotFound(
            f"DWPose model file(s) not found: {', '.join(missing)}. Searched these folders, in order:\n"
            f"{listing}\nPut the file(s) into one of them, or pass their folder (--models DIR / "
            f"XDYNA_DWPOSE_DIR). Nothing is downloaded."
        )
    return found[det_filename], found[pose_filename]


def select_providers(providers: Optional[Sequence[str]] = None) -> List[str]:
    """Explicit providers as given; otherwise CUDA when this onnxruntime build has it, then CPU."""
    import onnxruntime as ort

    if providers:
        return list(providers)
    available = ort.get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return chosen + ["CPUExecutionProvider"]


# --------------------------------------------------------------------------- detector (YOLOX)

def letterbox(image: np.ndarray, input_hw: Tuple[int, int]) -> Tuple[np.ndarray, float]:
    """Scale to fit input_hw keeping the aspect, paste top-left on a grey (114) canvas.
    Returns (NCHW float32 0..255, scale factor r)."""
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
def yolox_grids(input_hw: Tuple[int, int], strides: Tuple[int, ...] = (8, 16, 32)):
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
    """Greedy non-maximum suppression, highest score first (areas with the +1 pixel convention)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
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


# --------------------------------------------------------------------------- pose (SimCC)

def box_to_center_scale(box: np.ndarray, input_wh: Tuple[int, int], padding: float = 1.25):
    """Box -> (centre, scale=(w, h)) padded by `padding`, the shorter side grown to the model's
    aspect ratio."""
    x1, y1, x2, y2 = [float(v) for v in box[:4]]
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = input_wh[0] / input_wh[1]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h], np.float32)


def crop_affine(image: np.ndarray, center: np.ndarray, scale: np.ndarray, input_wh: Tuple[int, int]):
    """Warp the (center, scale) box onto input_wh (no rotation), bilinear, black border."""
    import cv2

    sx, sy = input_wh[0] / scale[0], input_wh[1] / scale[1]
    m = np.array([[sx, 0.0, input_wh[0] / 2 - center[0] * sx],
                  [0.0, sy, input_wh[1] / 2 - center[1] * sy]], np.float64)
    return cv2.warpAffine(image, m, (int(input_wh[0]), int(input_wh[1])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0):
    """(K, Wx), (K, Hy) -> locations (K, 2) in model-input pixels, scores (K,) = min of both maxima.
    A score <= 0 marks the point invalid (location -1)."""
    ix, iy = simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)
    vx = simcc_x[np.arange(len(ix)), ix]
    vy = simcc_y[np.arange(len(iy)), iy]
    locs = np.stack([ix, iy], axis=1).astype(np.float32) / split_ratio
    scores = np.minimum(vx, vy).astype(np.float32)
    locs[scores <= 0] = -1
    return locs, scores


def wholebody_to_person(points: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> Person:
    """133 COCO-WholeBody points (x, y) + scores -> Person (OpenPose-18 body, hands, iBUG-68 face).
    Points with score <= threshold get confidence 0."""
    conf = np.where(scores > threshold, scores, 0.0).astype(np.float32)
    kp = np.concatenate([points.astype(np.float32), conf[:, None]], axis=1)
    body = np.zeros((NUM_BODY, 3), np.float32)
    for op, coco in enumerate(COCO_TO_OP18):
        if coco >= 0:
            body[op] = kp[coco]
    l_sho, r_sho = kp[5], kp[6]
    body[1, :2] = (l_sho[:2] + r_sho[:2]) / 2
    body[1, 2] = min(l_sho[2], r_sho[2]) if (l_sho[2] > 0 and r_sho[2] > 0) else 0.0
    return Person(
        body=body,
        left_hand=kp[WB_LEFT_HAND].copy(),
        right_hand=kp[WB_RIGHT_HAND].copy(),
        face=kp[WB_FACE].copy(),
    )


# --------------------------------------------------------------------------- runner

@dataclass
class DWPoseConfig:
    candidate_threshold: float = 0.1  # detector score kept before NMS
    nms_iou: float = 0.45
    person_threshold: float = 0.3  # detector score a person needs after NMS
    keypoint_threshold: float = 0.3  # DWPose's visibility threshold for every keypoint
    bbox_padding: float = 1.25
    max_people: Optional[int] = 1  # X-Dyna drives one subject; None = everyone, by score
    whole_image_fallback: bool = False  # no person detected -> pose the whole image as one box


def _static_hw(shape, default: Tuple[int, int]) -> Tuple[int, int]:
    h, w = (shape[2], shape[3]) if len(shape) == 4 else default
    return (h if isinstance(h, int) else default[0], w if isinstance(w, int) else default[1])


def _ort_dtype(type_str: str):
    return np.float16 if type_str == "tensor(float16)" else np.float32


class DWPoseDetector:
    """`DWPoseDetector(det_path, pose_path)(image uint8 HxWx3 RGB) -> PoseFrame`, people ordered
    by detector score (best first)."""

    def __init__(self, det_path: PathLike, pose_path: PathLike, providers: Optional[Sequence[str]] = None,
                 config: Optional[DWPoseConfig] = None):
        import onnxruntime as ort

        self.config = config or DWPoseConfig()
        self.providers = select_providers(providers)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # keep provider-fallback chatter off the console
        self.det_path, self.pose_path = Path(det_path), Path(pose_path)
        for p in (self.det_path, self.pose_path):
            if not p.is_file():
                raise FileNotFoundError(f"DWPose model file not found: {p}")
        self.det = self._make(ort, self.det_path, opts)
        self.pose = self._make(ort, self.pose_path, opts)

        det_in = self.det.get_inputs()[0]
        self.det_input = det_in.name
        self.det_hw = _static_hw(det_in.shape, (640, 640))
        self.det_dtype = _ort_dtype(det_in.type)

        pose_in = self.pose.get_inputs()[0]
        self.pose_input = pose_in.name
        ph, pw = _static_hw(pose_in.shape, (384, 288))
        self.pose_wh = (pw, ph)
        self.pose_dtype = _ort_dtype(pose_in.type)
        outs = [o.name for o in self.pose.get_outputs()]
        if len(outs) < 2:
            raise ValueError(f"{self.pose_path}: expected two outputs (simcc_x, simcc_y), got {outs}")
        # Named outputs when present, otherwise the export's order (x first).
        self.pose_outputs = ["simcc_x", "simcc_y"] if {"simcc_x", "simcc_y"} <= set(outs) else outs[:2]

    def _make(self, ort, path: Path, opts):
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        except Exception as e:  # onnxruntime raises its own types; say which file failed
            raise ValueError(f"cannot load ONNX model {path}: {e}") from None

    # -- steps (public so tests and callers can inspect each stage)

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Person boxes (K, 4) xyxy in image pixels and scores (K,), best first."""
        cfg = self.config
        blob, ratio = letterbox(image, self.det_hw)
        raw = self.det.run(None, {self.det_input: blob.astype(self.det_dtype, copy=False)})[0]
        raw = np.asarray(raw, np.float32)
        if raw.ndim == 3:
            raw = raw[0]
        boxes, cls_scores = decode_yolox(raw, self.det_hw, ratio)
        # Class-agnostic NMS on each box's best class, then keep persons (class 0), as DWPose does.
        cls = cls_scores.argmax(axis=1)
        best = cls_scores[np.arange(len(cls)), cls]
        cand = np.nonzero(best > cfg.candidate_threshold)[0]
        if cand.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        keep = cand[nms(boxes[cand], best[cand], cfg.nms_iou)]
        keep = keep[(best[keep] > cfg.person_threshold) & (cls[keep] == 0)]
        return boxes[keep].astype(np.float32), best[keep].astype(np.float32)

    def estimate(self, image: np.ndarray, box: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """133 whole-body points (x, y) in image pixels and their SimCC scores for one box."""
        center, scale = box_to_center_scale(box, self.pose_wh, self.config.bbox_padding)
        crop = crop_affine(image, center, scale, self.pose_wh)
        chw = np.ascontiguousarray(crop.transpose(2, 0, 1)).astype(np.float32)
        blob = ((chw - POSE_MEAN[:, None, None]) / POSE_STD[:, None, None])[None]
        sx, sy = self.pose.run(self.pose_outputs, {self.pose_input: blob.astype(self.pose_dtype, copy=False)})
        sx, sy = np.asarray(sx, np.float32)[0], np.asarray(sy, np.float32)[0]
        if sx.shape[0] != NUM_WHOLEBODY or sy.shape[0] != NUM_WHOLEBODY:
            raise ValueError(f"{self.pose_path}: expected {NUM_WHOLEBODY} COCO-WholeBody keypoints, "
                             f"got simcc shapes {sx.shape} / {sy.shape}")
        split = sx.shape[1] / self.pose_wh[0]
        locs, scores = decode_simcc(sx, sy, split)
        points = locs / np.array(self.pose_wh, np.float32) * scale + center - scale / 2
        return points, scores

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
        people = []
        for box in boxes:
            points, scores = self.estimate(image, box)
            people.append(wholebody_to_person(points, scores, self.config.keypoint_threshold))
        return PoseFrame(w, h, people)


def load_dwpose(search_dirs: Optional[Sequence[PathLike]] = None, providers: Optional[Sequence[str]] = None,
                config: Optional[DWPoseConfig] = None) -> DWPoseDetector:
    """find_dwpose_models + DWPoseDetector in one call."""
    det, pose = find_dwpose_models(search_dirs)
    return DWPoseDetector(det, pose, providers=providers, config=config)

