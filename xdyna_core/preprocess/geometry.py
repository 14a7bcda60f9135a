"""How a decoded driving frame becomes an output frame: none, stretch, crop2ratio crop, or alignment."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .keypoints import Person, PoseFrame


def _map_part(a: Optional[np.ndarray], fn) -> Optional[np.ndarray]:
    if a is None:
        return None
    out = np.array(a, dtype=np.float32, copy=True)
    out[:, :2] = fn(out[:, :2])
    return out


def map_pose_frame(frame: PoseFrame, fn, size: Tuple[int, int]) -> PoseFrame:
    """Apply a point mapping (N, 2) -> (N, 2) to every part; the result has canvas `size`."""
    people = [Person(_map_part(p.body, fn), _map_part(p.left_hand, fn), _map_part(p.right_hand, fn),
                     _map_part(p.face, fn)) for p in frame.people]
    return PoseFrame(int(size[0]), int(size[1]), people)


@dataclass
class Geometry:
    """How a decoded frame (src_size) becomes an output frame (size): 'none', 'stretch', 'crop'
    or 'align' (then `alignment` is set)."""

    mode: str
    src_size: Tuple[int, int]  # (width, height)
    size: Tuple[int, int]
    alignment: object = None

    def points(self, xy: np.ndarray) -> np.ndarray:
        w, h = self.src_size
        W, H = self.size
        if self.mode == "none":
            return xy
        if self.mode == "stretch":
            return xy * np.array([W / w, H / h], np.float32)
        if self.mode == "crop":
            from .face_patches import crop_resize_points

            return crop_resize_points(xy, (h, w), H, W)
        s, (tx, ty) = self.alignment.scale, self.alignment.translation
        return xy * s + np.array([tx, ty], np.float32)

    def pose(self, frame: PoseFrame) -> PoseFrame:
        if self.mode == "none":
            return frame
        if self.mode == "align":
            from .align import apply_alignment

            return apply_alignment([frame], self.alignment, self.size)[0]
        return map_pose_frame(frame, self.points, self.size)

    def image(self, img: np.ndarray) -> np.ndarray:
        import cv2

        W, H = self.size
        if self.mode == "none":
            return img
        if self.mode == "stretch":
            return cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
        if self.mode == "crop":
            from .face_patches import crop_resize

            return crop_resize(img, H, W, "linear")
        from .align import warp_frame

        return warp_frame(img, self.alignment, self.size)


