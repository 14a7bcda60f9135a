"""Video I/O (PyAV): strided/limited lazy decoding, h264 encoding, still images, clear errors."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tests.conftest import assets_dir
from xdyna_core.preprocess.video import (
    VideoReadError,
    expected_frame_count,
    iter_frames,
    probe_video,
    read_video,
    write_video,
)

N = 12


def level(i):
    return 10 + 20 * i  # frame i is a flat grey of this value


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """12 frames 64x48 at 12 fps; frame i is flat grey level(i) (survives h264 within a few levels)."""
    path = tmp_path_factory.mktemp("video") / "numbered.mp4"
    frames = np.stack([np.full((48, 64, 3), level(i), np.uint8) for i in range(N)])
    assert write_video(path, frames, fps=12, crf=0) == N
    return path


def frame_ids(frames):
    return [int(round((float(f.mean()) - 10) / 20)) for f in frames]


def test_probe(numbered):
    info = probe_video(numbered)
    assert (info.fps, info.frame_count, info.width, info.height) == (12.0, N, 64, 48)
    assert info.duration == pytest.approx(1.0, abs=0.1) and not info.is_image


def test_roundtrip_all_frames(numbered):
    frames, fps = read_video(numbered)
    assert frames.shape == (N, 48, 64, 3) and frames.dtype == np.uint8 and fps == 12.0
    assert frame_ids(frames) == list(range(N))
    expected = np.array([level(i) for i in range(N)], float)
    assert np.abs(frames.reshape(N, -1).mean(1) - expected).max() < 3


@pytest.mark.parametrize("stride,start,max_frames,ids", [
    (3, 2, 3, [2, 5, 8]),
    (2, 0, None, [0, 2, 4, 6, 8, 10]),
    (5, 1, 100, [1, 6, 11]),
    (1, 11, None, [11]),
])
def test_stride_start_limit(numbered, stride, start, max_frames, ids):
    frames, fps = read_video(numbered, stride=stride, start=start, max_frames=max_frames)
    assert frame_ids(frames) == ids
    assert fps == 12.0  # the source's rate; the caller divides by stride
    assert expected_frame_count(N, stride, start, max_frames) == len(ids)
    assert frame_ids(iter_frames(numbered, stride=stride, start=start, max_frames=max_frames)) == ids


def test_resize(numbered):
    frames, _ = read_video(numbered, max_frames=2, size=(32, 40))
    assert frames.shape == (2, 40, 32, 3)
    assert frame_ids(frames) == [0, 1]


def test_start_past_end_is_an_error_for_read_and_empty_for_iter(numbered):
    with pytest.raises(VideoReadError, match=r"numbered\.mp4.*start=20.*12 frames"):
        read_video(numbered, start=20)
    assert list(iter_frames(numbered, start=20)) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=0), r"stride must be an integer >= 1, got 0"), (dict(start=-1), r"start must be an integer >= 0"),
    (dict(max_frames=0), r"max_frames must be None or an integer >= 1"),
    (dict(size=(0, 10)), r"size must be \(width, height\) with positive integers, got \(0, 10\)"),
    (dict(stride=1.5), r"stride must be an integer >= 1, got 1.5"), (dict(size=(10,)), r"size must be \(width, height\)")])
def test_bad_arguments(numbered, kwargs, message):
    with pytest.raises(ValueError, match=message):
        iter_frames(numbered, **kwargs)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(VideoReadError, match="not found.*nothere.mp4"):
        read_video(tmp_path / "nothere.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("this is not a video")
    with pytest.raises(VideoReadError, match="junk.mp4"):
        probe_video(junk)
    with pytest.raises(VideoReadError, match="junk.mp4"):
        iter_frames(junk)  # raised at call time, not at the first next()
    with pytest.raises(VideoReadError, match="directory"):
        read_video(tmp_path)
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG nope")
    with pytest.raises(VideoReadError, match="bad.png"):
        read_video(bad_png)


def test_still_image_is_a_one_frame_video(tmp_path):
    import cv2

    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :, 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "still.png"), img[:, :, ::-1])
    frames, fps = read_video(tmp_path / "still.png")
    assert frames.shape == (1, 30, 40, 3) and fps == 1.0
    np.testing.assert_array_equal(frames[0], img)  # RGB order, lossless
    info = probe_video(tmp_path / "still.png")
    assert info.is_image and info.frame_count == 1 and (info.width, info.height) == (40, 30)
    assert read_video(tmp_path / "still.png", size=(20, 15))[0].shape == (1, 15, 20, 3)


def test_one_frame_video(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    frame = np.stack([xx * 8, yy * 8, 255 - xx * 4], axis=-1).astype(np.uint8)  # smooth colours
    assert write_video(tmp_path / "one.mp4", frame[None], fps=8, crf=0) == 1
    frames, fps = read_video(tmp_path / "one.mp4")
    assert frames.shape == (1, 32, 32, 3) and fps == 8.0
    assert np.abs(frames[0].astype(int) - frame).mean() < 3  # yuv420 chroma subsampling only


def test_write_odd_size_pads_by_one_edge_pixel(tmp_path):
    frames = np.zeros((3, 35, 51, 3), np.uint8)
    frames[:, :, :, 1] = 180
    write_video(tmp_path / "odd.mp4", frames, fps=25)
    back, fps = read_video(tmp_path / "odd.mp4")
    assert back.shape == (3, 36, 52, 3) and fps == 25.0
    assert abs(float(back[:, :35, :51, 1].mean()) - 180) < 3
    assert abs(float(back[:, 35, :, 1].mean()) - 180) < 3  # repeated edge, not a black line


def test_write_from_generator_and_fractional_fps(tmp_path):
    gen = (np.full((16, 16, 3), level(i), np.uint8) for i in range(5))
    assert write_video(tmp_path / "gen.mp4", gen, fps=29.97) == 5
    info = probe_video(tmp_path / "gen.mp4")
    assert info.frame_count == 5 and info.fps == pytest.approx(29.97, abs=0.01)


def test_write_rejects_bad_frames_and_leaves_no_file(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="frame 0 must be uint8"):
        write_video(out, np.zeros((2, 8, 8, 3), np.float32), fps=8)
    mixed = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1 has shape"):
        write_video(out, mixed, fps=8)
    with pytest.raises(ValueError, match="no frames"):
        write_video(out, [], fps=8)
    with pytest.raises(ValueError, match="fps"):
        write_video(out, np.zeros((1, 8, 8, 3), np.uint8), fps=0)
    assert list(tmp_path.iterdir()) == []  # no partial files left behind


def test_decoding_a_long_video_holds_only_the_frames_asked_for():
    path = assets_dir() / "driving_video" / "example_1_driving_1.mp4"  # 233 frames of the official 571
    info = probe_video(path)
    assert (info.fps, info.frame_count, info.width, info.height) == (8.0, 233, 512, 896)
    frame_bytes = 512 * 896 * 3
    tracemalloc.start()
    try:
        n = 0
        for _ in iter_frames(path, max_frames=200):
            n += 1
        _, peak_iter = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        frames, _ = read_video(path, stride=4, start=100, max_frames=10)
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 200
    assert peak_iter < 3 * frame_bytes, peak_iter  # streaming: one frame at a time
    assert frames.shape == (10, 896, 512, 3)
    assert peak_read < 13 * frame_bytes, peak_read  # the 10 frames asked for (+ a working frame)


def test_video_writer_incremental_and_discard_on_error(tmp_path):
    from xdyna_core.preprocess.video import VideoWriter

    with VideoWriter(tmp_path / "a.mp4", 8) as wa, VideoWriter(tmp_path / "b.mp4", 8) as wb:
        for i in range(3):
            wa.write(np.full((16, 16, 3), level(i), np.uint8))
            wb.write(np.full((16, 16, 3), level(5 - i), np.uint8))
    assert frame_ids(read_video(tmp_path / "a.mp4")[0]) == [0, 1, 2]
    assert frame_ids(read_video(tmp_path / "b.mp4")[0]) == [5, 4, 3]
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "c.mp4", 8) as wc:
            wc.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]  # nothing half-written
