"""The plan of the driving clip a run uses (:func:`plan_clip`): which frames (start, stride, frame_count), at
what output frame rate, and the audio of exactly that stretch of time.

ONE plan for every reader of a driving clip: the ComfyUI driving-video node, ``xdyna animate``,
``xdyna preprocess`` and ``xdyna report`` pick frames the same way (``--start/--stride/--frame-count``,
``--target-fps`` like the node's ``target_fps``), and the node and ``animate`` hand the sound of the
picked frames to the video writer, so a result plays in sync with its driving clip.

Frame ``i`` of the source starts at ``i / fps``; the picked frames ``start, start+stride, ...`` (``frame_count``
of them) cover ``frame_count * stride`` source frames, so their audio runs from ``start / fps`` for
``frame_count * stride / fps`` seconds and the output plays at ``fps / stride``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from .video import (Source, VideoInfo, VideoReadError, _check_exists, _is_file_object, _open, expected_frame_count,
                    iter_frames, probe_video)


@dataclass(frozen=True)
class Span:
    start: int          # first source frame (decode order)
    stride: int         # every stride-th frame
    frame_count: Optional[int]  # frames to take; None = to the end
    source_fps: float

    @property
    def fps(self) -> float:
        """Frame rate of the picked frames (they play at the source's speed)."""
        return self.source_fps / self.stride

    @property
    def start_seconds(self) -> float:
        return self.start / self.source_fps

    def duration_seconds(self, frames: int) -> float:
        """Duration of ``frames`` picked frames (each stands for ``stride`` source frames)."""
        return frames * self.stride / self.source_fps


def plan_span(source_fps: float, start: int = 0, frame_count: Optional[int] = None, stride: int = 1,
              target_fps: float = 0.0) -> Span:
    """The span for these choices. ``target_fps > 0`` picks the stride that brings the source closest to
    that rate (never below 1: frames are not invented), and then the output plays at source_fps / stride."""
    if not source_fps or source_fps <= 0:
        raise ValueError(f"the driving clip states no usable frame rate ({source_fps!r})")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a frame index >= 0, got {start!r}")
    if frame_count is not None and (not isinstance(frame_count, int) or frame_count < 1):
        raise ValueError(f"frame count must be >= 1 (or None for all), got {frame_count!r}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if target_fps and target_fps > 0:
        stride = max(1, int(round(source_fps / float(target_fps))))
    return Span(start, stride, frame_count, float(source_fps))



@dataclass(frozen=True)
class DrivingClip:
    """A driving clip and the span a run takes of it (see the module docstring)."""
    source: Source
    span: Span
    info: VideoInfo           # what the reader found (rate, size, notes on repaired timestamps)

    @property
    def fps(self) -> float:
        """The rate the picked frames play at."""
        return self.span.fps

    @property
    def notes(self) -> Tuple[str, ...]:
        return self.info.notes

    def frames(self, cover: Optional[Tuple[int, int]] = None) -> Iterator[np.ndarray]:
        """The picked frames, uint8 (H, W, 3); ``cover=(W, H)`` shrinks them while they stream to the
        smallest size that still covers W x H (memory follows the working size, not the source's)."""
        s = self.span
        return iter_frames(self.source, stride=s.stride, start=s.start, frame_count=s.frame_count, cover=cover)

    def expected_frames(self) -> Optional[int]:
        """How many frames :meth:`frames` gives, when the container says how long the clip is."""
        s = self.span
        return expected_frame_count(self.info.frame_count, s.stride, s.start, s.frame_count)

    def sound(self, frames: int) -> Optional[Tuple[np.ndarray, int]]:
        """The audio under the first ``frames`` picked frames: float32 (channels, samples) and its rate,
        or None when the clip has no sound."""
        return read_audio_span(self.source, self.span.start_seconds, self.span.duration_seconds(frames))


def plan_clip(source: Source, start: int = 0, frame_count: Optional[int] = None, stride: int = 1,
              target_fps: float = 0.0, fps: Optional[float] = None) -> DrivingClip:
    """The plan for these choices. ``fps``: the rate the picked frames play at, instead of the file's
    rate / stride (the source is then taken to run at ``fps * stride``: broken timestamps are neither
    repaired nor refused); ``target_fps``: pick the stride nearest to that rate (see :func:`plan_span`)."""
    if fps and target_fps:
        raise ValueError("give the output rate (fps) or a target rate to pick the stride by (target_fps), not both")
    info = probe_video(source, fps=fps * stride if fps else None)
    return DrivingClip(source, plan_span(info.fps, start, frame_count, stride, target_fps), info)


def frames_in_window(source: Source, start_seconds: float, duration_seconds: float) -> Tuple[int, Optional[int]]:
    """(first frame index, frame count or None = to the end) of the video frames inside a trim window
    [start, start + duration) (duration 0: to the end), by the rule ComfyUI's trimmed VIDEO decodes with:
    a frame belongs when ``int(start / time_base) <= pts < int((start + duration) / time_base)``.
    Only packets are read (no decoding), so a clip is indexed in a fraction of its decode time."""
    if start_seconds <= 0 and duration_seconds <= 0:
        return 0, None
    src = _check_exists(source)
    container = _open(src)
    try:
        stream = container.streams.video[0]
        base = stream.time_base
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
    finally:
        container.close()
        if _is_file_object(src):
            src.seek(0)
    lo = int(start_seconds / base)
    hi = int((start_seconds + duration_seconds) / base) if duration_seconds > 0 else None
    inside = [i for i, t in enumerate(pts) if t >= lo and (hi is None or t < hi)]
    if not inside:
        raise ValueError(f"the trim window {start_seconds:g} s + {duration_seconds:g} s holds no frame of the clip "
                         f"({len(pts)} frames)")
    return inside[0], (len(inside) if hi is not None else None)


_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}


def _to_float(frame) -> np.ndarray:
    """A decoded PyAV audio frame -> float32 (channels, samples) in -1..1."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: (1, samples * channels), interleaved
        arr = arr.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if name in _INT_SCALE:
        return (arr.astype(np.float64) / _INT_SCALE[name]).astype(np.float32)
    return arr.astype(np.float32)


def read_audio_span(source: Source, start_seconds: float, duration_seconds: float
                    ) -> Optional[Tuple[np.ndarray, int]]:
    """The first audio stream of ``source`` from ``start_seconds`` for ``duration_seconds``, as float32
    (channels, samples) in -1..1 and its sample rate; None when the file has no audio stream. Decoding
    stops at the end of the span (memory follows the span, not the file); a span that runs past the
    end of the sound is cut there."""
    import av

    src = _check_exists(source)
    container = _open(src)
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            return None
        first = int(round(start_seconds * rate))
        last = first + int(round(duration_seconds * rate))
        if start_seconds > 1.0 and stream.time_base:  # jump near the span instead of decoding the lead-in
            container.seek(int((start_seconds - 1.0) / stream.time_base), stream=stream, backward=True)
        parts, pos = [], None
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                pos = int(round(float(frame.pts * frame.time_base) * rate))
            elif pos is None:
                pos = 0
            n = frame.samples
            lo, hi = max(first, pos), min(last, pos + n)
            if hi > lo:
                parts.append(_to_float(frame)[:, lo - pos:hi - pos])
            pos += n
            if pos >= last:
                break
        if not parts:
            channels = stream.codec_context.channels or 1
            return np.zeros((channels, 0), np.float32), rate
        return np.ascontiguousarray(np.concatenate(parts, axis=1)), rate
    except av.error.FFmpegError as e:
        raise VideoReadError(f"decoding the audio of {src} failed: {e}") from None
    finally:
        container.close()
