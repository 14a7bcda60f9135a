"""Video files in and out with PyAV (decode with stride / start / limit, encode h264 mp4).

Frames are uint8 RGB numpy arrays (H, W, 3) throughout. Decoding is lazy: `iter_frames` converts
only the frames it yields, so a long video never holds more frames in memory than were asked for.
A still image path (png/jpg/...) reads as a one-frame video, so a reference picture can go through
the same code as a driving clip.

Not handled: rotation metadata of phone videos (frames come out as stored), variable frame rate
(frame indices are decode order, the fps reported is the stream's average rate).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import XDynaError
from ..outputs import commit, discard, partial_path

PathLike = Union[str, os.PathLike]
#: A file path, or an open binary file object (e.g. the BytesIO behind a ComfyUI VIDEO).
Source = Union[str, os.PathLike, BinaryIO]
Size = Tuple[int, int]  # (width, height)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
STILL_IMAGE_FPS = 1.0  # what a still image reports as its frame rate
BACKGROUND_GREY = (128, 128, 128)  # what transparent pixels of a still image become (neutral mid-grey)


class VideoReadError(XDynaError, ValueError):
    """A video (or image) file that is missing, unreadable, or has no usable frames."""


class VideoWriteError(XDynaError, RuntimeError):
    """The output video cannot be encoded here (e.g. PyAV without an h264 encoder)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frame_count: Optional[int]  # None when the container does not say
    width: int
    height: int
    duration: Optional[float]  # seconds, None when unknown
    is_image: bool = False


def _is_image(path) -> bool:
    return isinstance(path, Path) and path.suffix.lower() in IMAGE_SUFFIXES


def _is_file_object(source) -> bool:
    return hasattr(source, "read") and hasattr(source, "seek")


def _check_exists(path: Source):
    if _is_file_object(path):
        path.seek(0)
        return path
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"video file not found: {p}")
    if p.is_dir():
        raise VideoReadError(f"expected a video file, got a directory: {p}")
    return p


def _read_image(path: Path) -> np.ndarray:
    """RGB uint8 of a still image: EXIF orientation applied, transparency composited on
    BACKGROUND_GREY (the colour hidden under transparent pixels is never shown); a truncated or
    corrupt file is an error saying so."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file fails here, not later as "no person"
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, BACKGROUND_GREY + (255,))
                im = Image.alpha_composite(background, rgba)
            rgb = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise VideoReadError(f"cannot read image file {path} (not an image or unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports damaged data as these
        raise VideoReadError(f"image file {path} is truncated or corrupt ({e})") from None
    return np.ascontiguousarray(rgb)


def _open(path):
    import av

    try:
        if _is_file_object(path):
            path.seek(0)
            container = av.open(path)
        else:
            container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoReadError(f"cannot open video file {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"no video stream in {path}")
    return container


def _stream_fps(stream, path: Path) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise VideoReadError(f"video {path} does not state a frame rate")


def probe_video(path: Source) -> VideoInfo:
    """Frame rate, frame count (if the container knows it) and size, without decoding frames."""
    p = _check_exists(path)
    if _is_image(p):
        img = _read_image(p)
        return VideoInfo(str(p), STILL_IMAGE_FPS, 1, img.shape[1], img.shape[0], None, True)
    container = _open(p)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream, p)
        count = int(stream.frames) if stream.frames else None
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        if count is None and duration is not None:
            count = int(round(duration * fps))
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoReadError(f"video {p} has no frame size")
        return VideoInfo(str(p), fps, count, width, height, duration)
    finally:
        container.close()


def _check_read_args(stride, start, max_frames, size) -> Optional[Size]:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be None or an integer >= 1, got {max_frames!r}")
    if size is not None:
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
            raise ValueError(f"size must be (width, height) with positive integers, got {size!r}")
        size = (int(size[0]), int(size[1]))
    return size


def cover_size(src: Size, target: Size) -> Size:
    """The smallest size of ``src``'s aspect that still covers ``target`` (both (width, height)), or
    ``src`` itself when it is already that small: what a driving frame is shrunk to while it
    streams, so memory follows the working size whatever the source resolution."""
    (w, h), (W, H) = src, target
    scale = max(W / w, H / h)
    if scale >= 1.0:
        return int(w), int(h)
    return max(int(W), math.ceil(w * scale - 1e-6)), max(int(H), math.ceil(h * scale - 1e-6))


def resize_frame(frame: np.ndarray, size: Size) -> np.ndarray:
    """Plain resize to (width, height), no crop: area filter when shrinking (as the X-Dyna
    reference does for pose frames), bilinear when enlarging."""
    import cv2

    w, h = size
    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    shrinking = w * h < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def expected_frame_count(
    total: Optional[int], stride: int = 1, start: int = 0, max_frames: Optional[int] = None
) -> Optional[int]:
    """How many frames a read with these limits yields, from the container's total (None if unknown)."""
    if total is None:
        return max_frames
    n = max(0, math.ceil((total - start) / stride))
    return n if max_frames is None else min(n, max_frames)


def iter_frames(
    path: Source,
    stride: int = 1,
    start: int = 0,
    max_frames: Optional[int] = None,
    size: Optional[Size] = None,
    cover: Optional[Size] = None,
) -> Iterator[np.ndarray]:
    """Yield frames start, start+stride, ... (decode-order indices), at most max_frames of them,
    as uint8 RGB (H, W, 3), resized to size=(width, height) if given, or shrunk (aspect kept) to
    :func:`cover_size` of ``cover`` = (width, height) as they are decoded.

    Arguments and the file are checked at call time (not at the first next()); a decode error
    in the middle raises VideoReadError naming the file and the frame index.
    """
    size = _check_read_args(stride, start, max_frames, size)
    cover = _check_read_args(1, 0, None, cover)
    p = _check_exists(path)
    if _is_image(p):
        img = _read_image(p)
        return _iter_image(img, start, size, cover)
    _open(p).close()  # fail now on an unreadable file, not at the first next()
    return _iter_video(p, stride, start, max_frames, size, cover)


def shrink_to_cover(frame: np.ndarray, cover: Size) -> np.ndarray:
    """``frame`` shrunk (aspect kept) to :func:`cover_size` of ``cover`` = (width, height)."""
    return resize_frame(frame, cover_size((frame.shape[1], frame.shape[0]), cover))


def _fit(frame: np.ndarray, size: Optional[Size], cover: Optional[Size]) -> np.ndarray:
    if size:
        return resize_frame(frame, size)
    if cover:
        return shrink_to_cover(frame, cover)
    return frame


def _iter_image(img, start, size, cover=None):
    if start == 0:
        yield _fit(img, size, cover)


def _iter_video(p, stride, start, max_frames, size, cover=None):
    import av

    container = _open(p)
    index = -1
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads; keeps decode order
        yielded = 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index < start or (index - start) % stride:
                    continue  # skipped frames are decoded but never converted to RGB
                yield _fit(frame.to_ndarray(format="rgb24"), size, cover)
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise VideoReadError(f"decoding {p} failed after frame {index}: {e}") from None
    finally:
        container.close()


def read_video(
    path: PathLike,
    stride: int = 1,
    start: int = 0,
    max_frames: Optional[int] = None,
    size: Optional[Size] = None,
) -> Tuple[np.ndarray, float]:
    """Decode into one uint8 array (N, H, W, 3) RGB; returns (frames, source fps).

    The fps is the source's; frames taken every `stride` play at fps / stride.
    Raises VideoReadError when no frame is left (e.g. start beyond the end).
    """
    info = probe_video(path)
    frames = iter_frames(path, stride=stride, start=start, max_frames=max_frames, size=size)
    estimate = expected_frame_count(info.frame_count, stride, start, max_frames)
    out: Optional[np.ndarray] = None
    n = 0
    for frame in frames:
        if out is None:
            cap = max(1, estimate or 16)
            out = np.empty((cap,) + frame.shape, dtype=np.uint8)
        elif n == out.shape[0]:  # container under-reported its length: grow geometrically
            out = np.concatenate([out, np.empty_like(out)], axis=0)
        out[n] = frame
        n += 1
    if out is None:
        known = f" (it has {info.frame_count} frames)" if info.frame_count is not None else ""
        raise VideoReadError(f"no frames read from {path} with start={start}, stride={stride}{known}")
    if n < out.shape[0]:
        out = out[:n].copy() if n < 0.9 * out.shape[0] else out[:n]
    return out, info.fps


def _check_frame(frame, index: int, first_shape) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(
            f"write_video: frame {index} must be uint8 (H, W, 3) RGB, got {a.dtype} {tuple(a.shape)}"
        )
    if first_shape is not None and a.shape != first_shape:
        raise ValueError(
            f"write_video: frame {index} has shape {tuple(a.shape)}, frame 0 had {tuple(first_shape)}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"write_video: frame {index} is empty {tuple(a.shape)}")
    return a


def _pad_even(a: np.ndarray) -> np.ndarray:
    # yuv420p needs even sizes: repeat the last row/column instead of cropping content away.
    ph, pw = a.shape[0] % 2, a.shape[1] % 2
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return np.ascontiguousarray(a)


class VideoWriter:
    """Incremental h264 yuv420p mp4 writer: `with VideoWriter(path, fps) as w: w.write(frame)`.

    Frames are uint8 RGB (H, W, 3), all of the first frame's size; odd widths/heights get one
    repeated edge row/column (yuv420p needs even sizes). crf: x264 quality (0 lossless .. 51 worst;
    18 is visually lossless). The file appears under its name only when closed without error
    (it is written to a hidden temporary file beside it, see xdyna_core.outputs, and renamed into
    place with the umask's permissions); on error, kill or without any frame nothing is left.
    The name must end in .mp4: that is the container written.
    """

    def __init__(self, path: PathLike, fps: float, crf: int = 18, preset: str = "medium"):
        if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction, np.number)) \
                or not math.isfinite(float(fps)) or fps <= 0:
            raise ValueError(f"write_video: fps must be a positive number, got {fps!r}")
        if not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"write_video: crf must be an integer in 0..51, got {crf!r}")
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"write_video: {self.path}: the file name must end in .mp4 (an h264 mp4 is written)")
        self.fps = float(fps)
        self.crf, self.preset = crf, preset
        self.count = 0
        self._tmp = None
        self._container = None
        self._stream = None
        self._shape = None

    def write(self, frame: np.ndarray) -> None:
        import av

        a = _check_frame(frame, self.count, self._shape)
        if self._stream is None:
            self._shape = a.shape
            a = _pad_even(a)
            if "libx264" not in av.codecs_available:
                raise VideoWriteError(f"cannot write {self.path}: this PyAV build has no libx264 (h264) encoder")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = partial_path(self.path)
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = a.shape[1], a.shape[0]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            self._stream = stream
        else:
            a = _pad_even(a)
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
            self._container.mux(packet)
        self.count += 1

    def close(self, ok: bool = True) -> None:
        """Flush and move the file into place (ok=False: discard it)."""
        try:
            if self._container is not None:
                try:
                    if ok:
                        for packet in self._stream.encode():
                            self._container.mux(packet)
                finally:
                    self._container.close()
                    self._container = None
                if ok:
                    commit(self._tmp, self.path)
            elif ok:
                raise ValueError(f"write_video: no frames given for {self.path}")
        finally:
            if self._tmp is not None:
                discard(self._tmp)  # no-op after a commit

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def write_video(
    path: PathLike,
    frames: Union[np.ndarray, Iterable[np.ndarray]],
    fps: float,
    crf: int = 18,
    preset: str = "medium",
) -> int:
    """Encode uint8 RGB frames (an (N, H, W, 3) array or any iterable of (H, W, 3) arrays, consumed
    lazily) to an h264 yuv420p mp4 (see VideoWriter). Returns the number of frames written."""
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(f"write_video: expected frames (N, H, W, 3), got shape {frames.shape}")
    with VideoWriter(path, fps, crf=crf, preset=preset) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.count
