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


@pytest.mark.parametrize("stride,start,frame_count,ids", [
    (3, 2, 3, [2, 5, 8]),
    (2, 0, None, [0, 2, 4, 6, 8, 10]),
    (5, 1, 100, [1, 6, 11]),
    (1, 11, None, [11]),
])
def test_stride_start_limit(numbered, stride, start, frame_count, ids):
    frames, fps = read_video(numbered, stride=stride, start=start, frame_count=frame_count)
    assert frame_ids(frames) == ids
    assert fps == 12.0  # the source's rate; the caller divides by stride
    assert expected_frame_count(N, stride, start, frame_count) == len(ids)
    assert frame_ids(iter_frames(numbered, stride=stride, start=start, frame_count=frame_count)) == ids


def test_resize(numbered):
    frames, _ = read_video(numbered, frame_count=2, size=(32, 40))
    assert frames.shape == (2, 40, 32, 3)
    assert frame_ids(frames) == [0, 1]


def test_start_past_end_is_an_error_for_read_and_empty_for_iter(numbered):
    with pytest.raises(VideoReadError, match=r"numbered\.mp4.*start=20.*12 frames"):
        read_video(numbered, start=20)
    assert list(iter_frames(numbered, start=20)) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=0), r"stride must be an integer >= 1, got 0"), (dict(start=-1), r"start must be an integer >= 0"),
    (dict(frame_count=0), r"frame_count must be None or an integer >= 1"),
    (dict(size=(0, 10)), r"size must be \(width, height\) with positive integers, got \(0, 10\)"),
    (dict(stride=1.5), r"stride must be an integer >= 1, got 1.5"), (dict(size=(10,)), r"size must be \(width, height\)")])
def test_bad_arguments(numbered, kwargs, message):
    with pytest.raises(ValueError, match=message):
        iter_frames(numbered, **kwargs)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(VideoReadError, match="^video file not found.*nothere.mp4"):
        read_video(tmp_path / "nothere.mp4")
    with pytest.raises(VideoReadError, match="^image file not found.*nothere.PNG"):  # an image named as one
        read_video(tmp_path / "nothere.PNG")
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
        for _ in iter_frames(path, frame_count=200):
            n += 1
        _, peak_iter = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        frames, _ = read_video(path, stride=4, start=100, frame_count=10)
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


# ------------------------------------------------------------------ phone clips: rotation, broken timestamps

def _portrait(n=3, w=32, h=48):
    """Upright portrait frames with content that shows any turn or mirror: colour ramps plus a marker."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        f = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 40 * i)], -1).astype(np.uint8)
        f[2:8, 3:6] = 255  # top-left marker
        out.append(f)
    return np.stack(out)


# (how the clip is stored from the upright picture, what the file says) -> reading gives the upright frames
ROTATIONS = [
    (lambda a: np.rot90(a, 1), dict(display_rotation=-90)),   # phone portrait: stored landscape, turn clockwise
    (lambda a: np.rot90(a, -1), dict(display_rotation=90)),
    (lambda a: a[::-1, ::-1], dict(display_rotation=180)),
    (lambda a: np.rot90(a, 1), dict(stream_tags={"rotate": "90"}, fmt="matroska")),  # the old rotate tag
    (lambda a: np.rot90(a, -1), dict(stream_tags={"rotate": "270"}, fmt="matroska")),
]


@pytest.mark.parametrize("store,how", ROTATIONS, ids=["matrix-90", "matrix+90", "matrix180", "tag90", "tag270"])
def test_rotated_clip_reads_upright(tmp_path, store, how):
    from tests.clips import can_write_display_matrix, encode_frames

    if "display_rotation" in how and not can_write_display_matrix():
        pytest.skip("this PyAV cannot write a display matrix")
    upright = _portrait()
    suffix = ".mkv" if how.get("fmt") else ".mp4"
    encode_frames(tmp_path / f"upright{suffix}", upright, fmt=how.get("fmt"))
    encode_frames(tmp_path / f"phone{suffix}", [np.ascontiguousarray(store(f)) for f in upright], **how)
    a, _ = read_video(tmp_path / f"upright{suffix}")
    b, _ = read_video(tmp_path / f"phone{suffix}")
    assert np.abs(a.astype(int) - upright).max() <= 2  # upright content (RGB<->YUV rounding only)
    assert b.shape == a.shape == (3, 48, 32, 3)
    np.testing.assert_array_equal(b, a)  # the same pixels as the clip stored upright
    info = probe_video(tmp_path / f"phone{suffix}")
    assert (info.width, info.height) == (32, 48) and info.notes == ()
    sized = list(iter_frames(tmp_path / f"phone{suffix}", size=(16, 24), frame_count=1))[0]
    assert sized.shape == (24, 16, 3)  # size is the upright size


def test_rotated_phone_clip_gives_the_upright_pose(tmp_path):
    """Pose keypoints of the rotated clip equal the upright clip's (DWPose stand-ins: every point lands
    on the white dot of the frame); the frames as stored would put the dot elsewhere."""
    pytest.importorskip("onnx")
    from tests.clips import can_write_display_matrix, encode_frames
    from tests.core.test_dwpose import dot_image, make_dot_pose_onnx, standard_detector
    from xdyna_core.preprocess.dwpose import DWPoseDetector

    if not can_write_display_matrix():
        pytest.skip("this PyAV cannot write a display matrix")
    upright = dot_image()[None]  # 512 x 896 portrait, the X-Dyna size
    encode_frames(tmp_path / "upright.mp4", upright)
    encode_frames(tmp_path / "phone.mp4", [np.rot90(upright[0], 1)], display_rotation=-90)
    det = DWPoseDetector(standard_detector(tmp_path / "yolox_l.onnx"), make_dot_pose_onnx(tmp_path / "pose.onnx"))
    a = det(read_video(tmp_path / "upright.mp4")[0][0])
    b = det(read_video(tmp_path / "phone.mp4")[0][0])
    assert len(a.people) == len(b.people) == 1 and (b.width, b.height) == (512, 896)
    for pa, pb in zip(a.people, b.people):
        for part in ("body", "left_hand", "right_hand", "face"):
            np.testing.assert_array_equal(getattr(pa, part), getattr(pb, part))
    assert abs(float(b.main.body[0, 0]) - 251.5) < 2 and abs(float(b.main.body[0, 1]) - 401.5) < 2
    import av

    with av.open(str(tmp_path / "phone.mp4")) as c:  # as stored: landscape, the dot somewhere else
        stored = next(c.decode(video=0)).to_ndarray(format="rgb24")
    s = det(stored)
    assert stored.shape == (512, 896, 3)
    assert not s.people or np.abs(s.main.body[:, :2] - a.main.body[:, :2]).max() > 50


def test_pts0_clip_is_read_at_its_declared_rate_with_a_note(tmp_path):
    """Every packet at pts 0: the mp4's stream rate becomes frames / one frame's duration (30 frames
    -> 750 fps here, "4500 fps" for a 180-frame clip); the reader takes the declared 25 fps and says so."""
    import av

    from tests.clips import encode_frames

    frames = [np.full((16, 16, 3), 10 + 8 * i, np.uint8) for i in range(30)]
    encode_frames(tmp_path / "pts0.mp4", frames, fps=25, zero_pts=True)
    with av.open(str(tmp_path / "pts0.mp4")) as c:
        assert float(c.streams.video[0].average_rate) > 240  # the broken rate the file states
    info = probe_video(tmp_path / "pts0.mp4")
    assert info.fps == 25.0 and info.frame_count == 30
    assert info.duration == pytest.approx(30 / 25)
    assert len(info.notes) == 1 and "broken timestamps" in info.notes[0] and "25 fps" in info.notes[0]
    assert "pts0.mp4" in info.notes[0]
    got, fps = read_video(tmp_path / "pts0.mp4")
    assert fps == 25.0 and len(got) == 30
    assert probe_video(tmp_path / "pts0.mp4", fps=12).fps == 12.0  # the caller's rate overrides
    assert probe_video(tmp_path / "pts0.mp4", fps=12).notes == ()


def test_pts0_clip_with_a_plausible_stream_rate_still_gets_the_note(tmp_path):
    """Matroska reports 25 fps for the same broken clip: the repeated timestamps are what is noticed."""
    from tests.clips import encode_frames

    encode_frames(tmp_path / "pts0.mkv", [np.full((16, 16, 3), 9 * i, np.uint8) for i in range(12)], fps=25,
                  fmt="matroska", zero_pts=True)
    info = probe_video(tmp_path / "pts0.mkv")
    assert info.fps == 25.0 and len(info.notes) == 1 and "share timestamps" in info.notes[0]


def test_healthy_clip_has_no_note(numbered):
    assert probe_video(numbered).notes == ()


def test_broken_timestamps_without_a_usable_declared_rate_are_refused():
    """Every rate the stream states is implausible (e.g. the time base taken as the rate): refused,
    saying how to give one; a caller's rate is taken as is."""
    from fractions import Fraction
    from pathlib import Path
    from types import SimpleNamespace

    from xdyna_core.preprocess.video import _frame_rate

    stream = SimpleNamespace(average_rate=Fraction(4500), guessed_rate=Fraction(12800), base_rate=None)
    with pytest.raises(VideoReadError, match=r"clip\.mp4 has broken timestamps \(packets share timestamps .*; "
                                             r"its stream rate is 4500 fps\)"
                                             r".*--fps"):
        _frame_rate(stream, [0, 0, 0], Path("clip.mp4"), None)
    assert _frame_rate(stream, [0, 0, 0], Path("clip.mp4"), 30.0) == (30.0, None)
