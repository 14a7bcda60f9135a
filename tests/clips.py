"""Driving clips the tests build with PyAV: numbered frames (frame i is a flat grey ``frame_level(i)``)
and, optionally, a sound whose every sample says when it plays (a ramp of period ``RAMP_SECONDS``),
so a test can tell exactly which frames and which stretch of sound a reader returned."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

RAMP_SECONDS = 4.0


def frame_level(i: int) -> int:
    return 16 + 8 * (i % 28)  # 16..232: survives h264 within a few levels


def frame_index(frame: np.ndarray, modulo: int = 28) -> int:
    """Which frame (modulo 28) a decoded flat frame is."""
    return int(round((float(frame.mean()) - 16) / 8)) % modulo


def sound_at(t: np.ndarray) -> np.ndarray:
    """The ramp sample value at time t (seconds): -0.5..0.5 over RAMP_SECONDS."""
    return (np.mod(t, RAMP_SECONDS) / RAMP_SECONDS - 0.5).astype(np.float32)


def write_clip(path, seconds: float, fps: int, width: int, height: int, audio_rate: int = 0,
               audio_codec: str = "aac", crf: int = 0, preset: str = "ultrafast", level=frame_level) -> int:
    """Write the clip (h264 yuv420p; stereo sound when ``audio_rate`` > 0: left the ramp, right its
    negative). Returns the frame count. Frames are made one at a time (a long 1080p clip stays small);
    ``level(i)`` is frame i's grey."""
    import av

    n = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": str(crf), "preset": preset}
        a = None
        if audio_rate:
            a = out.add_stream(audio_codec, rate=audio_rate, layout="stereo")
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), level(i), np.uint8), format="rgb24")
            for p in v.encode(frame):
                out.mux(p)
        if a is not None:
            chunk = 1024
            total = int(round(seconds * audio_rate))
            for s in range(0, total, chunk):
                k = np.arange(s, min(total, s + chunk))
                ramp = sound_at(k / audio_rate)
                data = np.stack([ramp, -ramp])  # planar float
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout="stereo")
                af.sample_rate = audio_rate
                af.pts = s
                af.time_base = Fraction(1, audio_rate)
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return n


def encode_frames(path, frames, fps: int = 10, fmt=None, pix_fmt: str = "yuv444p", display_rotation=None,
                  stream_tags=None, zero_pts: bool = False) -> None:
    """Write uint8 RGB ``frames`` losslessly (x264 qp 0; yuv444p keeps every pixel's own colour, so a
    rotated copy decodes to the rotated pixels). ``display_rotation``: counter-clockwise degrees put
    into the display matrix, as phones record (PyAV's ``set_display_rotation``); ``stream_tags``: stream
    metadata (e.g. the old ``rotate`` tag); ``zero_pts``: every packet at pts/dts 0 (broken timestamps)."""
    import av

    frames = [np.ascontiguousarray(f) for f in frames]
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.options = {"qp": "0", "preset": "ultrafast", "bf": "0"}
        if display_rotation is not None:
            v.set_display_rotation(display_rotation)
        if stream_tags:
            v.metadata.update(stream_tags)

        def mux(packets):
            for p in packets:
                if zero_pts:
                    p.pts = p.dts = 0
                out.mux(p)
        for f in frames:
            mux(v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        mux(v.encode(None))


def can_write_display_matrix() -> bool:
    from av.video.stream import VideoStream

    return hasattr(VideoStream, "set_display_rotation")  # newer PyAV only (not 14.2)
