"""MediaPipe FaceMesh (468 points) -> iBUG-68: the one mapping that both MediaPipe face sources use
(FaceMesh on a head crop in :mod:`.face_landmarks`, Holistic's face in :mod:`.mediapipe_backend`)."""
from __future__ import annotations

import numpy as np

from .keypoints import NUM_FACE

#: iBUG-68 index -> FaceMesh-468 vertex (derived in spec PREPROCESSING.md §4.3 against dlib's
#: 68-point predictor on 141 head crops, chosen in mirror pairs; mean residual 6 % of the
#: inter-ocular distance, jaw worst).
FACEMESH_TO_IBUG68 = (
    127, 137, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 366, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 155, 153, 144, 382, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    62, 38, 12, 268, 292, 316, 15, 86,  # inner lips 60-67
)
assert len(FACEMESH_TO_IBUG68) == NUM_FACE

def facemesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """(468 or 478, >=2) FaceMesh vertices -> (68, 2) iBUG-68 points."""
    m = np.asarray(mesh, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] < 468 or m.shape[1] < 2:
        raise ValueError(f"expected FaceMesh vertices of shape (468, 2|3), got {m.shape}")
    return m[list(FACEMESH_TO_IBUG68), :2].copy()
