"""Identity: cosine similarity of ArcFace embeddings of the reference face and each result face.

The recognition network is the one of the insightface pack ComfyUI users keep in
``models/insightface/models/<pack>/`` (antelopev2's ``glintr100.onnx``, buffalo_l's
``w600k_r50.onnx``), run with our own onnxruntime code: the face is warped onto the standard
112x112 ArcFace five-point template (similarity transform, least squares), RGB, normalised the
way insightface decides from the graph, and the embedding L2-normalised. The five points come
from the 68-point landmarks the S-Face path already finds (eye centres, nose tip, mouth corners).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import XDynaError
from ..preprocess.face_landmarks import find_insightface_landmark_model, insightface_input_normalisation

#: (pack, recognition model) in the order they are looked for
ARCFACE_MODELS = (("antelopev2", "glintr100.onnx"), ("buffalo_l", "w600k_r50.onnx"))
ARCFACE_SIZE = 112
#: where the eyes, nose tip and mouth corners go in the 112x112 crop ArcFace models are trained on
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


class ArcFaceNotFound(XDynaError, FileNotFoundError):
    """No recognition model file; the message is one line naming the files and folders."""


def find_arcface_model(insightface_roots: Iterable[os.PathLike] = ()) -> Path:
    """``<root>/models/<pack>/<file>`` (also ``<root>/<pack>/`` and one folder deeper,
    ``<pack>/<pack>/``, as some archives unpack) for the packs of :data:`ARCFACE_MODELS`."""
    roots = [Path(r) for r in insightface_roots]
    nested = [r / sub / pack for r in roots for sub in ("models", ".") for pack, _ in ARCFACE_MODELS]
    for pack, filename in ARCFACE_MODELS:
        try:
            return find_insightface_landmark_model(roots + nested, pack=pack, filename=filename)
        except FileNotFoundError:
            continue
    wanted = " or ".join(f"{f} ({p})" for p, f in ARCFACE_MODELS)
    where = f"searched {', '.join(str(r) for r in roots)}" if roots else "no insightface folder given"
    raise ArcFaceNotFound(f"{wanted} not found in <insightface>/models/<pack>/ ({where})")


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(5, 2) eye centres (image left, right), nose tip, mouth corners (image left, right) of iBUG-68."""
    lm = np.asarray(landmarks68, dtype=np.float64)[:, :2]
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the rotation + uniform scale + shift mapping ``src`` points onto ``dst``
    with least squared error (Umeyama's closed form)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0])
    R = U @ sign @ Vt
    var = (s ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("the five face points coincide")
    scale = float((S * np.diag(sign)).sum() / var)
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def align_face(image: np.ndarray, points5: np.ndarray) -> np.ndarray:
    """112x112 RGB uint8 crop with the five points on the ArcFace template."""
    import cv2

    M = similarity_transform(points5, ARCFACE_TEMPLATE)
    return cv2.warpAffine(np.ascontiguousarray(image), M, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderValue=0.0)


class ArcFace:
    """``embed(face112 RGB uint8) -> (D,) unit vector`` with an insightface recognition ONNX."""

    def __init__(self, model_path: os.PathLike, providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.is_file():
            raise ArcFaceNotFound(f"ArcFace model not found: {self.path}")
        mean, std = insightface_input_normalisation(self.path)
        # recognition graphs without their own Sub/Mul take (x - 127.5) / 127.5
        self.mean, self.std = (mean, 127.5) if mean else (mean, std)
        self.session = ort.InferenceSession(str(self.path), providers=list(providers or ["CPUExecutionProvider"]))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != [ARCFACE_SIZE, ARCFACE_SIZE]:
            raise ValueError(f"{self.path}: expected an ArcFace input of shape [N, 3, 112, 112], got {shape}")

    def embed(self, face: np.ndarray) -> np.ndarray:
        x = (np.asarray(face, np.float32).transpose(2, 0, 1)[None] - self.mean) / self.std
        v = np.asarray(self.session.run(None, {self.input_name: x})[0], np.float64).reshape(-1)
        n = float(np.linalg.norm(v))
        if not n > 0 or not math.isfinite(n):
            raise ValueError(f"{self.path}: the embedding is zero or not finite")
        return v / n

    def embed_image(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return self.embed(align_face(image, five_points(landmarks68)))


def identity_scores(model: ArcFace, reference: np.ndarray, reference_landmarks: Optional[np.ndarray],
                    frames: Sequence[np.ndarray], landmarks: Sequence[Optional[np.ndarray]]) -> Tuple[List[float], float]:
    """(cosine similarity per frame, NaN where no face was found; their mean over found faces)."""
    if reference_landmarks is None:
        raise ValueError("no face found in the reference image: the identity score needs a visible face")
    ref = model.embed_image(reference, reference_landmarks)
    per = [float(model.embed_image(f, lm) @ ref) if lm is not None else float("nan") for f, lm in zip(frames, landmarks)]
    found = [s for s in per if not math.isnan(s)]
    return per, (float(np.mean(found)) if found else float("nan"))
