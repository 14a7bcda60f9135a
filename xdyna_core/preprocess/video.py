"""Video files in and out with PyAV (decode with stride / start / limit, encode h264 mp4).

Frames are uint8 RGB numpy arrays (H, W, 3) throughout. Decoding is lazy: `iter_frames` converts
only the frames it yields, so a long video never holds more frames in memory than were asked for.
A still image path (png/jpg/...) reads as a one-frame video, so a reference picture can go through
the same code as a driving clip.

Frames come out as they are displayed: a phone clip stored landscape with a display matrix (or an
old-style ``rotate`` tag) is turned upright, exactly as FFmpeg's player turns it (quarter turns and
mirrors; :func:`probe_video` reports the upright size). The frame rate is the stream's average rate,
unless the timestamps are broken (packets sharing one timestamp, or a rate above :data:`MAX_FPS`):
then the stream's declared rate is used and :attr:`VideoInfo.notes` says so; a clip with broken
timestamps that declares no usable rate is refused unless the caller gives one (``fps=``).

Not handled: variable frame rate (frame indices are decode order), rotations that are not quarter turns.
"""
from __future__ import annotations

import math
import os
import warnings
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
#: Fastest frame rate a camera records (phone slow motion): a stream rate above it comes from broken
#: timestamps (e.g. every packet at pts 0 gives "4500 fps").
MAX_FPS = 240.0
TIMESTAMP_PACKETS = 8  # packets whose timestamps the probe checks for repeats


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
    notes: Tuple[str, ...] = ()  # what the reader repaired (broken timestamps), one line each


def _is_image(path) -> bool:
    return isinstance(path, Path) and path.suffix.lower() in IMAGE_SUFFIXES


def _is_file_object(source) -> bool:
    return hasattr(source, "read") and hasattr(source, "seek")


def _check_exists(path: Source):
    if _is_file_object(path):
        path.seek(0)
        return path
    p = Path(path)
    kind = "image" if _is_image(p) else "video"  # what the name says; the caller adds the role
    if not p.exists():
        raise VideoReadError(f"{kind} file not found: {p}")
    if p.is_dir():
        raise VideoReadError(f"expected an image or video file, got a directory: {p}")
    return p


# Still images above this many pixels are shrunk on read when the working size is known (a whole
# factor, before any conversion), keeping at least REFERENCE_OVERSAMPLE x the working size's longer
# side on the shorter one: a 100-megapixel photo never has to exist as full-size arrays.
LARGE_IMAGE_PIXELS = 4096 * 4096
REFERENCE_OVERSAMPLE = 2


def image_shrink_factor(size: Size, working: Optional[Size]) -> int:
    """The whole factor a still image of ``size`` = (w, h) is shrunk by on read for ``working`` = (w, h)
    (1: read as is). Uses the shorter side against the longer working side, so the EXIF orientation
    does not matter."""
    w, h = size
    if working is None or w * h <= LARGE_IMAGE_PIXELS:
        return 1
    return max(1, min(w, h) // (REFERENCE_OVERSAMPLE * max(working)))


def _open_image(path: Path):
    from PIL import Image

    try:
        with warnings.catch_warnings():  # large images are ours to handle (shrunk on read), not Pillow's to warn about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError:
        raise VideoReadError(f"image file {path} has more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
                             f"(Pillow's limit for untrusted images): shrink it first") from None


def _image_size(path: Path) -> Size:
    """The upright (width, height) of a still image, from its header (nothing decoded)."""
    from PIL import UnidentifiedImageError

    try:
        with _open_image(path) as im:
            w, h = im.size
            transposed = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the axes
    except UnidentifiedImageError:
        raise VideoReadError(f"cannot read image file {path} (not an image or unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VideoReadError(f"image file {path} is truncated or corrupt ({e})") from None
    return (h, w) if transposed else (w, h)


def _read_image(path: Path, working: Optional[Size] = None) -> np.ndarray:
    """RGB uint8 of a still image: EXIF orientation applied, transparency composited on
    BACKGROUND_GREY (the colour hidden under transparent pixels is never shown); a truncated or
    corrupt file is an error saying so. With ``working`` a large image is shrunk on read by
    :func:`image_shrink_factor` (JPEG: decoded at the reduced scale)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _open_image(path) as im:
            k = image_shrink_factor(im.size, working)
            if k > 1 and im.format == "JPEG":
                im.draft(im.mode, (im.size[0] // k, im.size[1] // k))  # DCT scaling: at least that size
            im.load()  # decodes everything: a truncated file fails here, not later as "no person"
            k = image_shrink_factor(im.size, working)
            if k > 1:
                if im.mode in ("P", "1"):
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                im = im.reduce(k)
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


def read_first_frame(path: PathLike, working: Optional[Size] = None) -> np.ndarray:
    """A reference picture: a still image (a large one shrunk on read for the working size
    ``working`` = (w, h), see :func:`image_shrink_factor`) or a video's first frame; uint8 RGB."""
    p = _check_exists(path)
    if _is_image(p):
        return _read_image(p, working)
    return read_video(p, frame_count=1)[0][0]


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


# An upright transform: (swap axes, reverse rows, reverse columns), applied in that order.
Upright = Tuple[bool, bool, bool]
AS_STORED: Upright = (False, False, False)


def _upright_from_matrix(m) -> Optional[Upright]:
    """The transform FFmpeg's player applies for a display matrix (9 int32, AV_PKT_DATA_DISPLAYMATRIX):
    a display point is (x', y') = (a x + c y, b x + d y) shifted into the canvas, with a, b, c, d =
    m[0], m[1], m[3], m[4]. None when it is not a quarter turn (with or without a mirror)."""
    a, b, c, d = (int(v) for v in (m[0], m[1], m[3], m[4]))
    if b == 0 and c == 0 and a and d:
        return False, d < 0, a < 0
    if a == 0 and d == 0 and b and c:
        return True, b < 0, c < 0  # transposed: rows follow x (sign of b), columns follow y (sign of c)
    return None


def _upright_from_tag(degrees: str) -> Optional[Upright]:
    """The old ``rotate`` tag: degrees to turn the stored picture clockwise for display."""
    try:
        turn = float(degrees) % 360
    except ValueError:
        return None
    return {0: AS_STORED, 90: (True, False, True), 180: (False, True, True), 270: (True, True, False)}.get(turn)


def _side_data(frame):
    """A decoded frame's side data entries: PyAV <= 18 iterates them, PyAV 19+ maps type -> entry."""
    container = frame.side_data if frame is not None else ()
    for item in container:
        yield item if hasattr(item, "type") else container[item]


def _display_transform(stream, frame, p) -> Upright:
    """How frames of ``stream`` turn upright: the display matrix the first decoded ``frame`` carries
    (FFmpeg copies the container's onto every frame), else the stream's ``rotate`` tag."""
    for sd in _side_data(frame):
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            m = np.frombuffer(bytes(sd), dtype=np.int32)
            t = _upright_from_matrix(m) if m.size == 9 else None
            if t is None:
                raise VideoReadError(f"video {p} asks for a rotation of {-getattr(frame, 'rotation', 0)} degrees "
                                     f"(only quarter turns are supported): re-encode it upright")
            return t
    tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
    if tag is not None:
        t = _upright_from_tag(tag)
        if t is None:
            raise VideoReadError(f"video {p} has rotate={tag!r} (only quarter turns are supported): "
                                 f"re-encode it upright")
        return t
    return AS_STORED


def _to_upright(a: np.ndarray, t: Upright) -> np.ndarray:
    if t == AS_STORED:
        return a
    swap, rows, cols = t
    if swap:
        a = a.transpose(1, 0, 2)
    return np.ascontiguousarray(a[::-1 if rows else 1, ::-1 if cols else 1])


def _plausible(rate) -> bool:
    return bool(rate) and 0 < float(rate) <= MAX_FPS


def _rate_text(rate) -> str:
    return f"{rate.numerator}/{rate.denominator}" if isinstance(rate, Fraction) and rate.denominator != 1 \
        else f"{float(rate):g}"


def _frame_rate(stream, packet_pts, p, fps: Optional[float]) -> Tuple[float, Optional[str]]:
    """(frames per second, note or None). The average rate, unless the timestamps are broken; then
    the declared rate (the codec's, else the container's) with a note saying so."""
    if fps is not None:
        return float(fps), None  # the caller's rate (the command line's --fps) overrides the file's
    avg = stream.average_rate
    repeated = len(packet_pts) > 1 and len(set(packet_pts)) < len(packet_pts)
    if _plausible(avg) and not repeated:
        return float(avg), None
    reasons = [f"packets share timestamps (the first {len(packet_pts)}: pts {sorted(set(packet_pts))[:3]})"] \
        if repeated else []
    if not _plausible(avg):
        reasons.append(f"its stream rate is {_rate_text(avg)} fps" if avg else "it states no stream rate")
    why = "; ".join(reasons)
    name = p.name if isinstance(p, Path) else "the video"
    for rate, what in ((stream.guessed_rate, "declared"), (stream.base_rate, "declared"), (avg, "average")):
        if _plausible(rate):
            return float(rate), (f"{name}: broken timestamps ({why}): read at its {what} rate of "
                                 f"{float(rate):g} fps")
    raise VideoReadError(f"video {p} has broken timestamps ({why}) and declares no usable frame rate: "
                         f"give the rate (command line: --fps) or re-encode it")


def _first_frame_and_pts(container, stream):
    """The first decoded frame (None if none) and the pts of the first TIMESTAMP_PACKETS packets."""
    pts, frame = [], None
    for packet in container.demux(stream):
        if packet.pts is not None and len(pts) < TIMESTAMP_PACKETS:
            pts.append(int(packet.pts))
        if frame is None:
            frame = next(iter(packet.decode()), None)
        if frame is not None and len(pts) >= TIMESTAMP_PACKETS:
            break
    if frame is None:  # a short clip: the decoder still holds its frames
        frame = next(iter(stream.codec_context.decode(None)), None)
    return frame, pts


def probe_video(path: Source, fps: Optional[float] = None) -> VideoInfo:
    """Frame rate, frame count (if the container knows it) and the upright size; decodes at most the
    first frame (its display matrix). ``fps``: the rate to use instead of the file's (then broken
    timestamps are neither repaired nor refused)."""
    import av

    p = _check_exists(path)
    if _is_image(p):
        w, h = _image_size(p)  # the header only: the image is decoded once, by the read
        return VideoInfo(str(p), STILL_IMAGE_FPS, 1, w, h, None, True)
    container = _open(p)
    try:
        stream = container.streams.video[0]
        try:
            first, packet_pts = _first_frame_and_pts(container, stream)
        except av.error.FFmpegError as e:
            raise VideoReadError(f"decoding the first frame of {p} failed: {e}") from None
        rate, note = _frame_rate(stream, packet_pts, p, fps)
        count = int(stream.frames) if stream.frames else None
        duration = None
        if note is not None:  # the container's duration comes from the broken timestamps
            duration = count / rate if count else None
        elif stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        if count is None and duration is not None:
            count = int(round(duration * rate))
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoReadError(f"video {p} has no frame size")
        if _display_transform(stream, first, p)[0]:
            width, height = height, width
        return VideoInfo(str(p), rate, count, width, height, duration, notes=(note,) if note else ())
    finally:
        container.close()


def _check_read_args(stride, start, frame_count, size) -> Optional[Size]:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if frame_count is not None and (not isinstance(frame_count, int) or frame_count < 1):
        raise ValueError(f"frame_count must be None or an integer >= 1, got {frame_count!r}")
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
    total: Optional[int], stride: int = 1, start: int = 0, frame_count: Optional[int] = None
) -> Optional[int]:
    """How many frames a read with these limits yields, from the container's total (None if unknown)."""
    if total is None:
        return frame_count
    n = max(0, math.ceil((total - start) / stride))
    return n if frame_count is None else min(n, frame_count)


def iter_frames(
    path: Source,
    stride: int = 1,
    start: int = 0,
    frame_count: Optional[int] = None,
    size: Optional[Size] = None,
    cover: Optional[Size] = None,
) -> Iterator[np.ndarray]:
    """Yield frames start, start+stride, ... (decode-order indices), at most frame_count of them,
    as uint8 RGB (H, W, 3), upright (the display matrix or rotate tag applied), resized to size=(width, height) if given, or shrunk (aspect kept) to
    :func:`cover_size` of ``cover`` = (width, height) as they are decoded.

    Arguments and the file are checked at call time (not at the first next()); a decode error
    in the middle raises VideoReadError naming the file and the frame index.
    """
    size = _check_read_args(stride, start, frame_count, size)
    cover = _check_read_args(1, 0, None, cover)
    p = _check_exists(path)
    if _is_image(p):
        img = _read_image(p)
        return _iter_image(img, start, size, cover)
    _open(p).close()  # fail now on an unreadable file, not at the first next()
    return _iter_video(p, stride, start, frame_count, size, cover)


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


def _iter_video(p, stride, start, frame_count, size, cover=None):
    import av

    container = _open(p)
    index = -1
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads; keeps decode order
        yielded = 0
        upright = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                if upright is None:
                    upright = _display_transform(stream, frame, p)
                if index < start or (index - start) % stride:
                    continue  # skipped frames are decoded but never converted to RGB
                yield _fit(_to_upright(frame.to_ndarray(format="rgb24"), upright), size, cover)
                yielded += 1
                if frame_count is not None and yielded >= frame_count:
                    return
        except av.error.FFmpegError as e:
            raise VideoReadError(f"decoding {p} failed after frame {index}: {e}") from None
    finally:
        container.close()


def read_video(
    path: PathLike,
    stride: int = 1,
    start: int = 0,
    frame_count: Optional[int] = None,
    size: Optional[Size] = None,
) -> Tuple[np.ndarray, float]:
    """Decode into one uint8 array (N, H, W, 3) RGB; returns (frames, source fps).

    The fps is the source's; frames taken every `stride` play at fps / stride.
    Raises VideoReadError when no frame is left (e.g. start beyond the end).
    """
    info = probe_video(path)
    frames = iter_frames(path, stride=stride, start=start, frame_count=frame_count, size=size)
    estimate = expected_frame_count(info.frame_count, stride, start, frame_count)
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

    ``audio=(samples, rate)``: float32 (channels, samples) in -1..1 (what span.read_audio_span gives)
    muxed as AAC, cut or padded with silence to the frames' duration (count / fps) so the sound covers
    exactly the frames written; more than two channels keep the first two.
    """

    def __init__(self, path: PathLike, fps: float, crf: int = 18, preset: str = "medium",
                 audio: Optional[Tuple[np.ndarray, int]] = None):
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
        self._audio, self._audio_stream = _check_audio(audio), None

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
            if self._audio is not None:   # every stream before the first packet: the mp4 header lists them
                self._audio_stream = self._container.add_stream("aac", rate=self._audio[1])
                self._audio_stream.layout = "stereo" if len(self._audio[0]) == 2 else "mono"
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
                        if self._audio_stream is not None:
                            self._write_audio()
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

    def _write_audio(self) -> None:
        import av

        samples, rate = self._audio
        n = int(round(self.count / self.fps * rate))          # the frames' duration, in samples
        if samples.shape[1] < n:
            samples = np.pad(samples, ((0, 0), (0, n - samples.shape[1])))
        samples = np.ascontiguousarray(samples[:, :n])
        layout = self._audio_stream.layout.name
        for i in range(0, n, 1024):   # AAC frames hold 1024 samples
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 1024]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
        for packet in self._audio_stream.encode(None):
            self._container.mux(packet)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def _check_audio(audio) -> Optional[Tuple[np.ndarray, int]]:
    if audio is None:
        return None
    samples, rate = audio
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2 or samples.shape[0] < 1 or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"write_video: audio must be (float32 (channels, samples), sample rate), got "
                         f"{samples.shape} at {rate!r}")
    return samples[:2], int(rate)


def write_video(
    path: PathLike,
    frames: Union[np.ndarray, Iterable[np.ndarray]],
    fps: float,
    crf: int = 18,
    preset: str = "medium",
    audio: Optional[Tuple[np.ndarray, int]] = None,
) -> int:
    """Encode uint8 RGB frames (an (N, H, W, 3) array or any iterable of (H, W, 3) arrays, consumed
    lazily) to an h264 yuv420p mp4, with ``audio`` as its sound (see VideoWriter). Returns the number of
    frames written."""
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(f"write_video: expected frames (N, H, W, 3), got shape {frames.shape}")
    with VideoWriter(path, fps, crf=crf, preset=preset, audio=audio) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.count
