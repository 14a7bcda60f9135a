"""XDynaLoadDrivingVideo: the driving clip, decoded only where X-Dyna uses it.

Thin adapter over xdyna_core.preprocess.video.iter_frames (the decoder the command line's job uses,
frames shrunk to the working size while they stream) and xdyna_core.preprocess.span (which frames,
at what fps, and the sound of exactly those frames). The working size comes from the encoded
reference, so it is set once, on X-Dyna Reference Encode.
"""
from __future__ import annotations

import os

import torch

from ..xdyna_core.preprocess import span as spans
from ..xdyna_core.preprocess import video as vid
from . import comfy_bridge as bridge
from .reference import reference_size, uint8_to_image

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")


def video_source(video):
    """A ComfyUI VIDEO -> what PyAV can open (its file path or BytesIO), without decoding it."""
    get = getattr(video, "get_stream_source", None)
    if get is None:
        raise ValueError("video: this VIDEO holds decoded frames, not a file (e.g. the output of Create Video); "
                         "connect Load Video or pick a file on this node instead")
    return get()


class XDynaLoadDrivingVideo:
    DESCRIPTION = ("Decodes the driving clip for X-Dyna: only the frames used (start, frame_count, every "
                   "stride-th frame, or the stride closest to target_fps), each shrunk to the working size while "
                   "it streams, so memory follows the frames used and not the source clip. Also returns the "
                   "sound of exactly those frames and their frame rate for Create Video. The working size is "
                   "the reference's (set on X-Dyna Reference Encode).")
    CATEGORY = "X-Dyna/preprocess"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT", "INT", "INT")
    RETURN_NAMES = ("frames", "audio", "fps", "width", "height")
    OUTPUT_TOOLTIPS = (
        "The picked driving frames, shrunk (aspect kept) to just cover width x height: the images input of "
        "X-Dyna Pose Extract.",
        "The sound of the picked span (start to start + duration), for Create Video; none (a silent video) "
        "when the clip has no audio.",
        "Frame rate of the picked frames (source fps / stride): the fps of Create Video.",
        "Working width from the reference: connect to the width of the pose nodes.",
        "Working height from the reference: connect to the height of the pose nodes.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("XDYNA_REFERENCE", {"tooltip": "The encoded reference (X-Dyna Reference Encode): "
                                                             "its width x height is the working size."}),
                "start": ("INT", {"default": 0, "min": 0, "max": 10_000_000,
                                  "tooltip": "First source frame to use (0 = the first frame)."}),
                "frame_count": ("INT", {"default": 48, "min": 0, "max": 100_000,
                                        "tooltip": "How many frames to animate; 0 = to the end of the clip."}),
                "stride": ("INT", {"default": 1, "min": 1, "max": 1000,
                                   "tooltip": "Use every stride-th source frame (ignored when target_fps > 0)."}),
                "target_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 1.0,
                                         "tooltip": "0 = use stride. Otherwise the stride closest to this rate "
                                                    "(never below 1); the fps output is source fps / stride."}),
            },
            "optional": {
                "file": (["none"] + bridge.input_files(VIDEO_EXTENSIONS),
                         {"default": "none", "video_upload": True,
                          "tooltip": "A video in ComfyUI's input folder (the upload button adds one). Used when "
                                     "no video is connected."}),
                "video": ("VIDEO", {"tooltip": "A native VIDEO (e.g. Load Video); decoded here, frame by frame. "
                                               "Takes precedence over file."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, file="none", **_):
        try:
            return os.path.getmtime(bridge.input_path(file)) if file != "none" else ""
        except FileNotFoundError:
            return float("nan")

    def load(self, reference, start, frame_count, stride, target_fps, file="none", video=None):
        width, height = reference_size(reference)  # checked before anything is decoded
        if video is not None:
            source = video_source(video)
        elif file and file != "none":
            source = bridge.input_path(file)
        else:
            raise ValueError("no driving video: connect a VIDEO or pick a file (upload one with the button)")
        info = vid.probe_video(source)
        span = spans.plan_span(info.fps, start, frame_count or None, stride, target_fps)
        tick = _progress_of(vid.expected_frame_count(info.frame_count, span.stride, span.start, span.frame_count))
        frames = vid.iter_frames(source, stride=span.stride, start=span.start, frame_count=span.frame_count,
                                 cover=(width, height))
        batch = _collect(frames, tick)
        if batch is None:
            known = f" (it has {info.frame_count} frames)" if info.frame_count else ""
            raise ValueError(f"no driving frames from start {start} with stride {span.stride}{known}")
        n = int(batch.shape[0])
        sound = spans.read_audio_span(source, span.start_seconds, span.duration_seconds(n))
        return (batch, _audio(sound), span.fps, width, height)


def _progress_of(total):
    bar = bridge.Progress(total or 1, previews=False) if total else None

    def tick():
        bridge.raise_if_interrupted()
        if bar is not None:
            bar.update(1)
    return tick


def _collect(frames, tick):
    """uint8 frames -> one float IMAGE batch, converted frame by frame (no uint8 copy of the clip)."""
    out = []
    for frame in frames:
        out.append(uint8_to_image(frame)[0])
        tick()
    return torch.stack(out) if out else None


def _audio(sound) -> dict:
    """ComfyUI AUDIO: {"waveform": float [1, C, T], "sample_rate": int}; None when the clip has no sound
    (Create Video then writes a silent video)."""
    if sound is None:
        return None
    samples, rate = sound
    return {"waveform": torch.from_numpy(samples)[None], "sample_rate": int(rate)}


NODE_CLASS_MAPPINGS = {"XDynaLoadDrivingVideo": XDynaLoadDrivingVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"XDynaLoadDrivingVideo": "X-Dyna Load Driving Video"}
