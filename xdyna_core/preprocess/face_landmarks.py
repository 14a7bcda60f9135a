"""68-point (iBUG) face landmark sources for the S-Face patches.

X-Dyna computes its S-Face patches from face_alignment's 2-D 68-point landmarks. Sources here,
in preference order (spec PREPROCESSING.md §0.3):

1. :func:`landmarks_from_pose` - DWPose's own 68 face points (whole-body indices 23-90, already in
   iBUG order), free whenever DWPose ran. Also Holistic's mapped mesh from the MediaPipe backend.
2. :class:`InsightFaceLandmarks` - insightface's ``1k3d68.onnx`` (in every insightface pack, e.g.
   ``models/insightface/models/buffalo_l/``) run with our own onnxruntime pre/post-processing;
   the ``insightface`` package is not needed. Find the file with :func:`find_insightface_landmark_model`.
3. :class:`MediaPipeFaceLandmarks` - MediaPipe FaceMesh (468 points) on a head crop, mapped to
   iBUG-68 with :data:`.facemesh.FACEMESH_TO_IBUG68`.

All of them return (68, 2) float32 (x, y) pixel coordinates of the image they were given, or None
when there is no usable face. Face boxes for 2. and 3. come from the body keypoints
(:func:`face_box_from_pose`): a full-body dancer's face is ~50 px in a 512x896 frame, too small
for detectors run on the whole frame.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .facemesh import facemesh_to_ibug68
from .keypoints import NUM_FACE, Person, PoseFrame

PathLike = Union[str, os.PathLike]
Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels

#: iBUG-68 groups (used to fill a few missing DWPose face points).
IBUG68_GROUPS = {
    "jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
    "right_eye": range(36, 42), "left_eye": range(42, 48), "mouth": range(48, 68),
}


# --------------------------------------------------------------------------- from a PoseFrame


def landmarks_from_pose(
    frame: PoseFrame, min_conf: float = 0.3, min_valid_fraction: float = 0.5
) -> Optional[np.ndarray]:
    """The main person's 68 face points as (68, 2), or None.

    None when the frame has no person, the person has no face part, fewer than
    ``min_valid_fraction`` of the points have confidence > ``min_conf``, or a whole eye or the
    mouth is missing. The few missing points otherwise take the mean of the valid points of their
    group (jaw, brows, nose, each eye, mouth; a jaw/brow/nose group with none valid: the mean of
    all valid points), so the S-Face box and centres stay meaningful.
    """
    person = frame.main
    if person is None or person.face is None:
        return None
    face = np.asarray(person.face, dtype=np.float32)
    if face.shape != (NUM_FACE, 3):
        raise ValueError(f"face keypoints must have shape (68, 3), got {face.shape}")
    valid = (face[:, 2] > min_conf) & np.isfinite(face[:, :2]).all(axis=1)
    if valid.mean() < min_valid_fraction:
        return None
    pts = face[:, :2].copy()
    if valid.all():
        return pts
    for name, idx in IBUG68_GROUPS.items():
        idx = np.asarray(list(idx))
        ok = valid[idx]
        if not ok.any():
            if name in ("right_eye", "left_eye", "mouth"):
                return None
            pts[idx] = pts[valid].mean(axis=0)
            continue
        pts[idx[~ok]] = pts[idx[ok]].mean(axis=0)
    return pts


def face_box_from_pose(person: Optional[Person], conf: float = 0.3) -> Optional[Box]:
    """Square box (x0, y0, x1, y1) around the face estimated from the body keypoints, or None.

    Centre: mean of the valid nose/eye/ear points. Side: the largest available of
    1.2 x ear span, 2.2 x eye span, 0.6 x nose-neck distance and 0.35 x shoulder width (rough
    head proportions; the largest guards against foreshortened spans of turned heads).
    """
    if person is None:
        return None
    b = np.asarray(person.body, dtype=np.float64)
    ok = lambda i: np.float32(b[i, 2]) > np.float32(conf) and np.isfinite(b[i, :2]).all()
    head = [i for i in (0, 14, 15, 16, 17) if ok(i)]
    if not head:
        return None
    centre = b[head, :2].mean(axis=0)
    dist = lambda i, j: float(np.hypot(*(b[i, :2] - b[j, :2]))) if ok(i) and ok(j) else 0.0
    side = max(1.2 * dist(16, 17), 2.2 * dist(14, 15), 0.6 * dist(0, 1), 0.35 * dist(2, 5))
    if side < 4.0:
        return None
    h = side / 2
    return (centre[0] - h, centre[1] - h, centre[0] + h, centre[1] + h)


# --------------------------------------------------------------------------- insightface 1k3d68

INSIGHTFACE_LANDMARK_FILE = "1k3d68.onnx"
#: Common packs with a 1k3d68.onnx, tried first (any other pack folder is tried after them).
INSIGHTFACE_PACKS = ("buffalo_l", "antelopev2", "buffalo_m", "buffalo_s")


def find_insightface_landmark_model(
    insightface_roots: Iterable[PathLike] = (), pack: Optional[str] = None, filename: str = INSIGHTFACE_LANDMARK_FILE
) -> Path:
    """Find ``<root>/models/<pack>/1k3d68.onnx`` (ComfyUI layout, root = ``models/insightface``).

    Roots: the given ones, then ``$XDYNA_INSIGHTFACE_DIR``. In each root both
    ``models/<pack>/`` and ``<pack>/`` are tried, each also one level deeper (``<pack>/<pack>/``); with ``pack=None`` the known packs first, then
    any other sub-folder. Raises FileNotFoundError naming every folder searched. Never downloads.
    """
    roots: List[Path] = [Path(r) for r in insightface_roots]
    env = os.environ.get("XDYNA_INSIGHTFACE_DIR")
    if env:
        roots.append(Path(env))
    searched: List[str] = []
    for root in roots:
        for base in (root / "models", root):
            if pack is not None:
                packs = [pack]
            else:
                packs = list(INSIGHTFACE_PACKS)
                if base.is_dir():
                    packs += sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in packs)
            for name in packs:
                # An unpacked pack zip often nests one level deeper: antelopev2/antelopev2/1k3d68.onnx.
                for folder in (base / name, base / name / name):
                    searched.append(str(folder))
                    if (folder / filename).is_file():
                        return folder / filename
    where = "\n  ".join(dict.fromkeys(searched)) or "(no folder: pass the ComfyUI models/insightface folder or set XDYNA_INSIGHTFACE_DIR)"
    raise FileNotFoundError(
        f"{filename} not found (it is part of insightface packs such as buffalo_l or antelopev2; "
        f"place it in models/insightface/models/<pack>/). Searched:\n  {where}"
    )


def _read_varint(f) -> Optional[int]:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            return None if shift == 0 else result
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7


def _skip_field(f, wire_type: int) -> None:
    if wire_type == 0:
        _read_varint(f)
    elif wire_type == 1:
        f.seek(8, 1)
    elif wire_type == 2:
        f.seek(_read_varint(f), 1)
    elif wire_type == 5:
        f.seek(4, 1)
    else:
        raise ValueError(f"unsupported protobuf wire type {wire_type}")


def onnx_first_node_names(path: PathLike, count: int = 8) -> List[str]:
    """Names of the first ``count`` graph nodes of an ONNX file, without the ``onnx`` package.

    Minimal protobuf walk: ModelProto.graph (field 7) -> GraphProto.node (field 1) ->
    NodeProto.name (field 3); every other field (weights included) is skipped by seeking.
    """
    names: List[str] = []
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        while f.tell() < size:
            key = _read_varint(f)
            if key is None:
                break
            if key >> 3 != 7 or key & 7 != 2:
                _skip_field(f, key & 7)
                continue
            length = _read_varint(f)
            graph_end = f.tell() + length
            while f.tell() < graph_end and len(names) < count:
                gkey = _read_varint(f)
                if gkey >> 3 != 1 or gkey & 7 != 2:
                    _skip_field(f, gkey & 7)
                    continue
                length = _read_varint(f)
                node_end = f.tell() + length
                name = ""
                while f.tell() < node_end:
                    nkey = _read_varint(f)
                    if nkey >> 3 == 3 and nkey & 7 == 2:
                        name = f.read(_read_varint(f)).decode("utf-8", "replace")
                    else:
                        _skip_field(f, nkey & 7)
                names.append(name)
                f.seek(node_end)
            break
    return names


def insightface_input_normalisation(path: PathLike) -> Tuple[float, float]:
    """(mean, std) the way insightface decides it: a graph that starts with its own Sub and Mul
    (or a ``bn_data`` node) normalises internally -> (0, 1); otherwise (127.5, 128)."""
    names = onnx_first_node_names(path, 8)
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    if any(n == "bn_data" for n in names[:3]):
        has_sub = has_mul = True
    return (0.0, 1.0) if (has_sub and has_mul) else (127.5, 128.0)


class InsightFaceLandmarks:
    """insightface ``1k3d68.onnx`` with our own pre/post-processing (onnxruntime only).

    Model I/O (checked against insightface's ``model_zoo/landmark.py``): input [1, 3, S, S]
    (S = 192) float32; output [1, 3309] whose last 68 x 3 values are (x, y, z) in [-1, 1] crop
    units. Pre-processing: square crop centred on the face box with side 1.5 x max(box w, h),
    scaled to S x S (bilinear warpAffine, black border); RGB order (insightface swaps its BGR
    input to RGB); (pixel - mean) / std, see :func:`insightface_input_normalisation`.
    Post-processing: (v + 1) * S/2 for x, y, z * S/2, then the inverse crop transform.
    """

    def __init__(self, model_path: PathLike, providers: Optional[Sequence[str]] = None):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"insightface landmark model not found: {path}")
        import onnxruntime as ort

        self.model_path = path
        self.input_mean, self.input_std = insightface_input_normalisation(path)
        self.session = ort.InferenceSession(str(path), providers=list(providers or ["CPUExecutionProvider"]))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise ValueError(f"{path}: expected a square [1, 3, S, S] input, got {shape}")
        self.input_size = int(shape[2])
        out = self.session.get_outputs()
        if len(out) != 1:
            raise ValueError(f"{path}: expected one output, got {len(out)}")
        n_out = out[0].shape[-1]
        # insightface's rule: outputs of >= 3000 values are 3-D (1k3d68: 3309 = 1103 x 3, the last
        # 68 points are iBUG-68); smaller ones are 2-D models such as 2d106det (212 = 106 x 2).
        if isinstance(n_out, int) and (n_out < 3000 or n_out % 3):
            raise ValueError(
                f"{path}: output of size {n_out} is not a 3-D 68-point landmark model (1k3d68 has 3309); "
                "2d106det.onnx (106 points) is not supported"
            )

    def _crop_matrix(self, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box)
        w, h = x1 - x0, y1 - y0
        if not (w > 0 and h > 0):
            raise ValueError(f"face box must have positive size, got {box}")
        s = self.input_size / (max(w, h) * 1.5)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = self.input_size / 2
        return np.array([[s, 0.0, half - cx * s], [0.0, s, half - cy * s]], dtype=np.float64)

    def __call__(self, image: np.ndarray, box: Box, return_3d: bool = False) -> np.ndarray:
        """68 landmarks (x, y) of the face in ``box`` of an RGB uint8 image; (68, 3) with z if asked."""
        import cv2

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        M = self._crop_matrix(box)
        S = self.input_size
        crop = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_LINEAR, borderValue=0.0)
        blob = ((crop.astype(np.float32) - self.input_mean) / self.input_std).transpose(2, 0, 1)[None]
        pred = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0].reshape(-1)
        pts = pred[-NUM_FACE * 3:].reshape(NUM_FACE, 3).astype(np.float64)
        pts[:, :2] = (pts[:, :2] + 1.0) * (S // 2)
        pts[:, 2] *= S // 2
        # Inverse of the crop: x = (x' - t) / s.
        s = M[0, 0]
        pts[:, 0] = (pts[:, 0] - M[0, 2]) / s
        pts[:, 1] = (pts[:, 1] - M[1, 2]) / s
        pts[:, 2] /= s
        pts = pts.astype(np.float32)
        return pts if return_3d else pts[:, :2].copy()

    def from_pose(self, image: np.ndarray, frame: PoseFrame) -> Optional[np.ndarray]:
        """Landmarks for the main person of ``frame`` (box from its head keypoints), or None."""
        box = face_box_from_pose(frame.main)
        return None if box is None else self(image, box)


# --------------------------------------------------------------------------- MediaPipe FaceMesh


class MediaPipeFaceLandmarks:
    """FaceMesh on a square head crop (upscaled to ``crop_size``), mapped 468 -> 68.

    ``crop_scale`` is the crop side relative to the face box side: FaceMesh's short-range face
    detector wants the face to fill a good part of its input, not all of it.
    Runs on whichever MediaPipe is installed (:func:`mediapipe_backend.face_mesh_engine`).
    """

    def __init__(
        self,
        crop_size: int = 256,
        crop_scale: float = 2.0,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
    ):
        from .mediapipe_backend import face_mesh_engine

        self.crop_size = int(crop_size)
        self.crop_scale = float(crop_scale)
        self._mesh, self._close = face_mesh_engine(min_detection_confidence, min_presence_confidence)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __call__(self, image: np.ndarray, box: Optional[Box] = None) -> Optional[np.ndarray]:
        """(68, 2) landmarks in image pixels, or None when FaceMesh finds no face.

        ``box`` (x0, y0, x1, y1) is the face box; None runs on the whole image (close-ups)."""
        import cv2

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        if box is None:
            M = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            crop = img
        else:
            x0, y0, x1, y1 = (float(v) for v in box)
            side = max(x1 - x0, y1 - y0) * self.crop_scale
            if not side > 0:
                raise ValueError(f"face box must have positive size, got {box}")
            s = self.crop_size / side
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            half = self.crop_size / 2
            M = np.array([[s, 0.0, half - cx * s], [0.0, s, half - cy * s]])
            crop = cv2.warpAffine(img, M, (self.crop_size, self.crop_size), flags=cv2.INTER_LINEAR, borderValue=0.0)
        mesh = self._mesh(np.ascontiguousarray(crop))
        if mesh is None:
            return None
        pts = facemesh_to_ibug68(mesh).astype(np.float64)
        pts[:, 0] = (pts[:, 0] - M[0, 2]) / M[0, 0]
        pts[:, 1] = (pts[:, 1] - M[1, 2]) / M[1, 1]
        return pts.astype(np.float32)

    def from_pose(self, image: np.ndarray, frame: PoseFrame) -> Optional[np.ndarray]:
        """Landmarks for the main person of ``frame`` (box from its head keypoints), or None."""
        box = face_box_from_pose(frame.main)
        return None if box is None else self(image, box)


__all__ = [
    "landmarks_from_pose", "face_box_from_pose",
    "find_insightface_landmark_model", "onnx_first_node_names", "insightface_input_normalisation",
    "InsightFaceLandmarks", "MediaPipeFaceLandmarks",
]
