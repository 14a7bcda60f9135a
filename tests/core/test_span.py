"""The driving span: which frames (start, stride or target fps, frame_count), the output fps, and the sound of
exactly those frames, read sample-exact from the clip (also from an open file object)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from tests.clips import sound_at, write_clip
from xdyna_core.preprocess.span import plan_span, read_audio_span


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3 s at 30 fps, lossless stereo sound at 16 kHz (left: the time ramp, right: its negative)."""
    path = tmp_path_factory.mktemp("span") / "clip.mkv"
    write_clip(path, 3, 30, 64, 48, audio_rate=16000, audio_codec="pcm_s16le")
    return path


@pytest.mark.parametrize("fps,stride,target,want_stride", [
    (30.0, 1, 0.0, 1), (30.0, 3, 0.0, 3), (30.0, 7, 10.0, 3), (29.97, 1, 15.0, 2), (24.0, 1, 60.0, 1),
])
def test_stride_and_fps(fps, stride, target, want_stride):
    span = plan_span(fps, 5, 16, stride, target)
    assert span.stride == want_stride and span.fps == pytest.approx(fps / want_stride)
    assert span.start_seconds == pytest.approx(5 / fps)
    assert span.duration_seconds(16) == pytest.approx(16 * want_stride / fps)


@pytest.mark.parametrize("kwargs,match", [
    (dict(source_fps=0.0), "frame rate"), (dict(source_fps=30.0, start=-1), "start"),
    (dict(source_fps=30.0, frame_count=0), "frame count"), (dict(source_fps=30.0, stride=0), "stride"),
])
def test_bad_span_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_span(**kwargs)


@pytest.mark.parametrize("start", [0.0, 0.5, 1.7, 2.5])  # beyond 1 s the reader seeks
def test_audio_of_the_span_is_sample_exact(clip, start):
    samples, rate = read_audio_span(clip, start, 0.4)
    assert rate == 16000 and samples.dtype == np.float32 and samples.shape == (2, 6400)
    want = sound_at(start + np.arange(6400) / rate)
    assert np.abs(samples[0] - want).max() < 1e-4 and np.abs(samples[1] + want).max() < 1e-4


def test_audio_span_past_the_end_is_cut_and_file_objects_work(clip):
    samples, rate = read_audio_span(io.BytesIO(clip.read_bytes()), 2.5, 2.0)
    assert samples.shape == (2, 8000)  # only 0.5 s of sound is left
    assert np.abs(samples[0] - sound_at(2.5 + np.arange(8000) / rate)).max() < 1e-4


def test_clip_without_sound_has_no_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    write_clip(path, 1, 10, 32, 32)
    assert read_audio_span(path, 0.0, 1.0) is None
