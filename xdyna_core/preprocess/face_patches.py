"""S-Face inputs: the "local" (eyes + mouth windows) and "global" (enlarged face box) images.

Reference behaviour (X-Dyna ``inference_xdyna.py`` / ``nms.py``, spec PREPROCESSING.md §5 and
XDYNA_ARCHITECTURE.md §5), per driving frame already cropped with :func:`crop2ratio` and resized to
the output size, from 68 iBUG landmarks (first face):

* centres, rounded half-to-even: eye A = mean(lm[43:48]), eye B = mean(lm[37:42]),
  mouth = mean(lm[49:68]) - the reference slices skip points 42, 36 and 48; kept for parity;
* box = min/max of the 68 points, L = max(box w, box h), (cx, cy) its centre:
  left int(cx - 1.35 L), top int(cy - 1.25 L), right int(cx + 1.35 L), bottom int(cy + 1.45 L),
  clamped to the frame; half window = (int(box' w / 8), int(box' h / 8)) of that box;
* global image = the frame inside the box, black elsewhere; local image = black with the three
  [c - half, c + half) windows copied from the frame.

:func:`face_patches` reproduces that exactly (golden ``face_preprocess``), including its two
failure modes, which :func:`face_patch_sequence` fixes unless ``fix_failures=False``:

1. a window whose start is negative becomes an empty numpy slice (the patch is dropped) -
   fixed by clamping the window to the frame;
2. a frame without landmarks gets black images (the reference's "last box" is never updated) -
   fixed by carrying the last good face geometry (box, centres) forward, and back-filling
   leading misses with the first good face; pixels always come from the current frame.

A clip with no face at all gives black images and ``has_face`` all False (``clip_has_face`` is
False). The S-Face ControlNet input is min-max normalised over the clip, which divides by zero
on an all-black clip (NaN in the reference): callers must then switch the face ControlNet off
(or at least warn) instead of feeding it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Enlargement of the landmark box, in units of L = max(box w, box h), from the box centre.
BOX_LEFT, BOX_TOP, BOX_RIGHT, BOX_BOTTOM = 1.35, 1.25, 1.35, 1.45
# Half window = enlarged box size * 64 / 512.
WINDOW_FRACTION = 64 / 512

# Index ranges of the reference (each skips the first point of its group).
EYE_A = slice(43, 48)
EYE_B = slice(37, 42)
MOUTH = slice(49, 68)


# --------------------------------------------------------------------------- crop2ratio


def crop2ratio_params(h: int, w: int, height: int, width: int) -> Tuple[int, int, int, int, int, int]:
    """The reference's ``nms_precessor.crop2ratio`` numbers for an h x w frame and an output of
    height x width: ``(w, h, start_w, start_h, target_w, target_h)``.

    The crop has the output's aspect ratio, full width or full height; it is centred
    horizontally but top-biased vertically (start_h = (h - target_h) // 4) to keep the head."""
    if min(h, w, height, width) <= 0:
        raise ValueError(f"sizes must be positive, got frame {h}x{w}, output {height}x{width}")
    if w / h < width / height:
        target_w = w
        target_h = int(target_w / width * height)
    else:
        target_h = h
        target_w = int(target_h / height * width)
    start_w = (w - target_w) // 2
    start_h = (h - target_h) // 4
    return w, h, start_w, start_h, target_w, target_h


def crop2ratio(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop ``img`` (H, W, ...) to the aspect ratio height:width the way X-Dyna does (no resize)."""
    a = np.asarray(img)
    if a.ndim < 2:
        raise ValueError(f"expected an image (H, W[, C]), got shape {a.shape}")
    _, _, sw, sh, tw, th = crop2ratio_params(a.shape[0], a.shape[1], height, width)
    return a[sh:sh + th, sw:sw + tw]


def crop_resize(img: np.ndarray, height: int, width: int, interpolation: str = "linear") -> np.ndarray:
    """crop2ratio then resize to (height, width). The reference resizes driving frames bilinearly
    ("linear") and the reference image with "area"."""
    import cv2

    interp = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}.get(interpolation)
    if interp is None:
        raise ValueError(f"interpolation must be 'linear' or 'area', got {interpolation!r}")
    return cv2.resize(np.ascontiguousarray(crop2ratio(img, height, width)), (int(width), int(height)), interpolation=interp)


def crop_resize_points(points: np.ndarray, src_hw: Tuple[int, int], height: int, width: int) -> np.ndarray:
    """Map (..., 2+) pixel points of a src_hw frame into the crop_resize output (pixel centres
    kept consistent with cv2.resize). Extra columns (confidence) pass through."""
    _, _, sw, sh, tw, th = crop2ratio_params(int(src_hw[0]), int(src_hw[1]), height, width)
    p = np.array(points, dtype=np.float32, copy=True)
    p[..., 0] = (p[..., 0] - sw + 0.5) * (width / tw) - 0.5
    p[..., 1] = (p[..., 1] - sh + 0.5) * (height / th) - 0.5
    return p


# --------------------------------------------------------------------------- one frame


@dataclass
class FacePatchInfo:
    """Geometry used for one frame. ``bbox`` = (left, top, right, bottom) of the global image,
    ``centers`` = ((x, y) eye A, eye B, mouth), ``half`` = (half w, half h) of the local windows,
    ``source``: "detected", "carried" (last good face), "backfilled" (first good face) or "none"."""

    bbox: Tuple[int, int, int, int]
    centers: Optional[Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]]
    half: Tuple[int, int]
    source: str

    @property
    def has_face(self) -> bool:
        return self.source == "detected"


def _check_frame(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {f.dtype} {f.shape}")
    return f


def face_geometry(landmarks68: np.ndarray, height: int, width: int):
    """(bbox, centers, half) of the reference for 68 landmarks in a height x width frame."""
    lm = np.asarray(landmarks68)
    if lm.shape[0] != 68 or lm.ndim != 2 or lm.shape[1] < 2:
        raise ValueError(f"expected 68 landmarks of shape (68, 2), got {lm.shape}")
    lm = lm[:, :2]
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or inf")
    if not np.issubdtype(lm.dtype, np.floating):
        lm = lm.astype(np.float32)
    centers = tuple(
        tuple(int(v) for v in np.round(np.mean(lm[s], axis=0)).astype(np.int32)) for s in (EYE_A, EYE_B, MOUTH)
    )
    # The reference mixes numpy float32 scalars with Python floats (float64 under numpy 1.x).
    x0, x1 = float(np.amin(lm[:, 0])), float(np.amax(lm[:, 0]))
    y0, y1 = float(np.amin(lm[:, 1])), float(np.amax(lm[:, 1]))
    length = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) * 0.5, (y0 + y1) * 0.5
    left = max(0, int(cx - BOX_LEFT * length))
    top = max(0, int(cy - BOX_TOP * length))
    right = min(width, int(cx + BOX_RIGHT * length))
    bottom = min(height, int(cy + BOX_BOTTOM * length))
    half = (int(((right - left) / 512) * 64), int(((bottom - top) / 512) * 64))
    return (left, top, right, bottom), centers, half


def _window(c: int, half: int, size: int, clamp: bool) -> slice:
    if clamp:
        start = min(max(0, c - half), size)
        return slice(start, max(start, min(size, c + half)))
    return slice(c - half, c + half)  # negative start wraps -> empty, as in the reference


def render_patches(
    frame: np.ndarray, bbox, centers, half, clamp_windows: bool = False
) -> Tuple[np.ndarray, np.ndarray]:
    """(local, global) images of ``frame`` for the given geometry."""
    f = _check_frame(frame)
    h, w = f.shape[:2]
    glob = np.zeros_like(f)
    left, top, right, bottom = bbox
    glob[top:bottom, left:right] = f[top:bottom, left:right]
    local = np.zeros_like(f)
    if centers is not None:
        for cx, cy in centers:
            rows, cols = _window(cy, half[1], h, clamp_windows), _window(cx, half[0], w, clamp_windows)
            local[rows, cols] = f[rows, cols]
    return local, glob


def face_patches(
    frame: np.ndarray, landmarks68: Optional[np.ndarray], clamp_windows: bool = False
) -> Tuple[np.ndarray, np.ndarray, FacePatchInfo]:
    """(local uint8, global uint8, info) for one frame, exactly as the reference by default.

    ``landmarks68`` None (no face) gives two black images and bbox (0, 0, 0, 0).
    ``clamp_windows=True`` keeps eye/mouth windows that start left of/above the frame."""
    f = _check_frame(frame)
    if landmarks68 is None:
        return np.zeros_like(f), np.zeros_like(f), FacePatchInfo((0, 0, 0, 0), None, (0, 0), "none")
    bbox, centers, half = face_geometry(landmarks68, f.shape[0], f.shape[1])
    local, glob = render_patches(f, bbox, centers, half, clamp_windows)
    return local, glob, FacePatchInfo(bbox, centers, half, "detected")


# --------------------------------------------------------------------------- sequence


@dataclass
class FacePatchSequence:
    local_images: np.ndarray  # (N, H, W, 3) uint8
    global_images: np.ndarray  # (N, H, W, 3) uint8
    infos: List[FacePatchInfo] = field(default_factory=list)

    @property
    def has_face(self) -> List[bool]:
        """Per frame: landmarks were found in this frame."""
        return [i.has_face for i in self.infos]

    @property
    def clip_has_face(self) -> bool:
        """False when no frame had a face: the patches are all black and the S-Face ControlNet
        must not be used (its clip-wide min-max normalisation would divide by zero)."""
        return any(self.has_face)


def face_patch_sequence(
    frames: Sequence[np.ndarray], landmarks_list: Sequence[Optional[np.ndarray]], fix_failures: bool = True
) -> FacePatchSequence:
    """S-Face patches of a clip.

    ``fix_failures=False`` is the reference: per-frame :func:`face_patches`, black images on a
    miss (``info.centers`` then carries the previous centres, as the reference's variables do).
    ``fix_failures=True`` clamps windows to the frame and reuses the nearest good face geometry
    on a miss (the last one before, or the first one after for leading misses).
    """
    if len(frames) != len(landmarks_list):
        raise ValueError(f"{len(frames)} frames but {len(landmarks_list)} landmark entries")
    if len(frames) == 0:
        raise ValueError("face_patch_sequence got no frames")
    frames = [_check_frame(f) for f in frames]
    shape = frames[0].shape
    for i, f in enumerate(frames):
        if f.shape != shape:
            raise ValueError(f"frame {i} has shape {f.shape}, frame 0 has {shape}")
    h, w = shape[:2]
    geoms = [None if lm is None else face_geometry(lm, h, w) for lm in landmarks_list]

    locals_, globals_, infos = [], [], []
    if not fix_failures:
        last_centers = ((0, 0), (0, 0), (0, 0))
        for f, g in zip(frames, geoms):
            if g is None:
                locals_.append(np.zeros_like(f))
                globals_.append(np.zeros_like(f))
                infos.append(FacePatchInfo((0, 0, 0, 0), last_centers, (0, 0), "none"))
                continue
            loc, glo = render_patches(f, *g, clamp_windows=False)
            locals_.append(loc)
            globals_.append(glo)
            infos.append(FacePatchInfo(g[0], g[1], g[2], "detected"))
            last_centers = g[1]
    else:
        first = next((g for g in geoms if g is not None), None)
        last = None
        for f, g in zip(frames, geoms):
            if g is not None:
                use, source, last = g, "detected", g
            elif last is not None:
                use, source = last, "carried"
            elif first is not None:
                use, source = first, "backfilled"
            else:
                use, source = None, "none"
            if use is None:
                loc, glo = np.zeros_like(f), np.zeros_like(f)
                infos.append(FacePatchInfo((0, 0, 0, 0), None, (0, 0), source))
            else:
                loc, glo = render_patches(f, *use, clamp_windows=True)
                infos.append(FacePatchInfo(use[0], use[1], use[2], source))
            locals_.append(loc)
            globals_.append(glo)
    return FacePatchSequence(np.stack(locals_), np.stack(globals_), infos)


def carry_landmarks(landmarks: Sequence[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
    """Fill frames without a face with the last good face (the first good one for leading
    misses); the rule of face_patches.face_patch_sequence(fix_failures=True), applied to the
    landmarks so the patches can be produced one frame at a time."""
    first = next((lm for lm in landmarks if lm is not None), None)
    out, last = [], None
    for lm in landmarks:
        if lm is not None:
            last = lm
        out.append(lm if lm is not None else (last if last is not None else first))
    return out


__all__ = [
    "crop2ratio", "crop2ratio_params", "crop_resize", "crop_resize_points", "face_geometry",
    "face_patches", "render_patches", "face_patch_sequence", "FacePatchInfo", "FacePatchSequence", "carry_landmarks",
]
