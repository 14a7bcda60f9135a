"""X-Dyna Load Driving Video: only the picked frames, shrunk to the working size as they stream, the sound
of exactly those frames, the output fps; the working size comes from the encoded reference and is
checked (rule and mismatch) at the first node, before any decoding, detection or encoding."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tests.clips import frame_index, sound_at, write_clip
from tests.nodes_ci.fake_comfy import run_node

W, H = 136, 200  # a multiple of 8 that is not one of 64


def ref_of(w=W, h=H):
    return {"width": w, "height": h}  # what the node reads of an XDYNA_REFERENCE


@pytest.fixture
def clip(comfy):
    """4 s of 320x240 at 30 fps with lossless stereo sound, in ComfyUI's input folder."""
    folder = comfy.models_dir.parent / "input"
    folder.mkdir(exist_ok=True)
    write_clip(folder / "dance.mkv", 4, 30, 320, 240, audio_rate=16000, audio_codec="pcm_s16le")
    return folder / "dance.mkv"


def load(**kw):
    from nodes.driving import XDynaLoadDrivingVideo

    args = dict(reference=ref_of(), start=0, frame_count=8, stride=1, target_fps=0.0, file="dance.mkv")
    args.update(kw)
    return XDynaLoadDrivingVideo().load(**args)


@pytest.mark.parametrize("start,count,stride,target,want_stride", [
    (0, 8, 1, 0.0, 1), (31, 6, 2, 0.0, 2), (10, 5, 1, 10.0, 3),
])
def test_picked_frames_sound_and_fps(clip, start, count, stride, target, want_stride):
    frames, audio, fps, width, height = load(start=start, frame_count=count, stride=stride, target_fps=target)
    # shrunk as they stream: the smallest 4:3 size covering 136x200
    assert frames.dtype == torch.float32 and tuple(frames.shape) == (count, 200, 267, 3)
    got = [frame_index((f.numpy() * 255).round()) for f in frames]
    assert got == [(start + i * want_stride) % 28 for i in range(count)]
    assert fps == pytest.approx(30 / want_stride) and (width, height) == (W, H)
    wave, rate = audio["waveform"], audio["sample_rate"]
    t0, dur = start / 30, count * want_stride / 30
    assert rate == 16000 and tuple(wave.shape) == (1, 2, round(dur * rate))
    want = sound_at(t0 + np.arange(wave.shape[-1]) / rate)
    assert np.abs(wave[0, 0].numpy() - want).max() < 1e-4


def test_native_video_input_streams_from_its_source(clip):
    class VideoFromBytes:  # ComfyUI's VideoFromFile over an uploaded BytesIO
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def get_stream_source(self):
            return self.data

    by_file = load(start=3, frame_count=4)
    by_video = load(start=3, frame_count=4, file="none", video=VideoFromBytes(clip.read_bytes()))
    assert torch.equal(by_file[0], by_video[0]) and torch.equal(by_file[1]["waveform"], by_video[1]["waveform"])


def test_whole_clip_silent_clip_and_errors(clip, comfy):
    frames, audio, _, _, _ = load(frame_count=0, stride=10)  # 0 = to the end
    assert frames.shape[0] == 12 and audio["waveform"].shape[-1] == 4 * 16000
    write_clip(clip.parent / "silent.mp4", 1, 10, 64, 48)
    assert load(file="silent.mp4", frame_count=2)[1] is None  # Create Video then writes a silent video
    with pytest.raises(ValueError, match="no driving frames from start 500"):
        load(start=500)
    with pytest.raises(ValueError, match="no driving video"):
        load(file="none")

    class Components:  # a VIDEO made of decoded frames has no file to stream
        pass

    with pytest.raises(ValueError, match="holds decoded frames"):
        load(video=Components())


def test_bad_working_size_fails_before_decoding(clip, monkeypatch):
    from xdyna_core.preprocess import video

    monkeypatch.setattr(video, "probe_video", lambda *a: pytest.fail("decoding started"))
    with pytest.raises(ValueError, match=r"working size 130x200: .*multiples of 8"):
        load(reference=ref_of(130, 200))


def test_reference_encode_checks_the_size_before_encoding(comfy):
    from nodes.reference import XDynaReferenceEncode

    never = type("Never", (), {"__getattr__": lambda self, name: pytest.fail("encoding started")})()
    with pytest.raises(ValueError, match=r"working size 512x900"):
        XDynaReferenceEncode().encode(torch.zeros(1, 64, 64, 3), never, never, never, 512, 900, "sample")


@pytest.mark.parametrize("node", ["extract", "align"])
def test_size_mismatch_fails_at_the_pose_node_before_detection(comfy, monkeypatch, node):
    """The mismatch that used to surface at the sampler (pose at one size, reference at another)."""
    from nodes import pose
    from xdyna_core.preprocess import driving as drv

    monkeypatch.setattr(drv, "open_pose_detector", lambda *a, **k: pytest.fail("detection started"))
    monkeypatch.setattr(drv, "parse_keypoints", lambda *a, **k: pytest.fail("preprocessing started"))
    images = torch.zeros(2, 64, 64, 3)
    run = {
        "extract": lambda: pose.XDynaPoseExtract().extract(images, 128, 256, "crop", "auto",
                                                           encoded_reference=ref_of()),
        "align": lambda: pose.XDynaPoseAlign().align([], images, 128, 256, "auto", encoded_reference=ref_of()),
    }[node]
    with pytest.raises(ValueError, match=r"is 128x256 but the reference was encoded at 136x200"):
        run()


def test_pose_from_keypoints_takes_the_size_from_the_reference(comfy, tmp_path):
    """Connected, the encoded reference sets the skeleton size: the width/height widgets (512x896 by default,
    as left on the node in the keypoints workflow) cannot contradict it."""
    import json

    from nodes import pose
    from tests.real_comfyui.standins import write_keypoints_json

    keypoints = json.loads(write_keypoints_json(tmp_path / "kp.json", 2, 512, 896).read_text())
    (images,) = pose.XDynaPoseFromKeypoints().render(keypoints, 512, 896, "stretch", encoded_reference=ref_of())
    assert tuple(images.shape) == (2, H, W, 3) and images.max() > 0.5
    (alone,) = pose.XDynaPoseFromKeypoints().render(keypoints, 256, 448, "stretch")
    assert tuple(alone.shape) == (2, 448, 256, 3)
    # run as ComfyUI runs it: the same frames, and the animated preview web/xdyna.js shows on the node
    out = run_node(pose.XDynaPoseFromKeypoints, pose_keypoint=keypoints, width=512, height=896, fit="stretch",
                   encoded_reference=ref_of())
    assert torch.equal(out.args[0], images)
    (shown,) = out.ui["xdyna_preview"]
    assert shown["frames"] == 2 and (tmp_path / "temp" / "xdyna" / shown["filename"]).is_file()


class TrimmedVideo:
    """ComfyUI 0.33's VideoFromFile after Trim Video (Video Slice): the file and its trim window."""

    def __init__(self, path, start_time, duration):
        self.path, self.window = str(path), (start_time, duration)

    def get_stream_source(self):
        return self.path

    def get_active_trim_window(self):
        return self.window


def test_trimmed_video_start_and_count_inside_the_slice(clip):
    """Video Slice (1.0 s, 1.0 s) of a 30 fps clip is source frames 30..59: frame_count 0 takes exactly those,
    start/frame_count/stride count inside the slice, and the sound is that of the frames taken."""
    frames, audio, fps, _, _ = load(file="none", frame_count=0, video=TrimmedVideo(clip, 1.0, 1.0))
    assert [frame_index((f.numpy() * 255).round()) for f in frames] == [i % 28 for i in range(30, 60)]
    assert audio["waveform"].shape[-1] == 16000 and fps == 30
    want = sound_at(1.0 + np.arange(16000) / 16000)
    assert np.abs(audio["waveform"][0, 0].numpy() - want).max() < 1e-4
    inner, _, _, _, _ = load(file="none", start=5, frame_count=100, stride=4, video=TrimmedVideo(clip, 1.0, 1.0))
    assert [frame_index((f.numpy() * 255).round()) for f in inner] == [i % 28 for i in range(35, 60, 4)]
    tail, _, _, _, _ = load(file="none", start=2, frame_count=0, video=TrimmedVideo(clip, 3.5, 0.0))
    assert [frame_index((f.numpy() * 255).round()) for f in tail] == [i % 28 for i in range(107, 120)]
    with pytest.raises(ValueError, match="start 30 is past the end of the trimmed video"):
        load(file="none", start=30, video=TrimmedVideo(clip, 1.0, 1.0))
