"""The headless job (`python -m xdyna_core animate|demo`) on the tiny model set and a shared video."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, assets_dir
from xdyna_core.loading.tiny import write_tiny_set
from xdyna_core.preprocess.video import probe_video, read_video

pytest.importorskip("mediapipe")  # the zero-download pose/face default

FAST = ["--steps", "2", "--size", "192x320", "--quiet"]


def run(*args, cwd=REPO, **env):
    return subprocess.run([sys.executable, "-m", "xdyna_core", *map(str, args)], cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **env), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_set(root, seed=3)
    return root


@pytest.fixture(scope="module")
def driving():
    return assets_dir() / "driving_video" / "example_2_driving_2.mp4"


@pytest.fixture(scope="module")
def reference():
    return assets_dir() / "reference_image" / "example_2.jpg"


def test_animate_writes_requested_frames_and_fps(tiny_models, driving, reference, tmp_path):
    out = tmp_path / "out.mp4"
    r = run("animate", "--reference", reference, "--driving", driving, "--models", tiny_models, "--out", out,
            "--frame-count", 5, "--stride", 2, "--fps", 6, *FAST)
    assert r.returncode == 0, r.stderr
    info = probe_video(out)
    frames, fps = read_video(out)
    assert len(frames) == 5 and abs(fps - 6) < 1e-6 and (info.width, info.height) == (192, 320)
    assert frames.std() > 1.0  # not a black or constant video


def one_error_line(r):
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[-1].startswith("error: ")
    return lines[-1]


def test_wrong_models_folder(driving, reference, tmp_path):
    (tmp_path / "models" / "xdyna").mkdir(parents=True)
    line = one_error_line(run("animate", "--reference", reference, "--driving", driving,
                              "--models", tmp_path / "models", "--out", tmp_path / "o.mp4", *FAST))
    assert "X-Dyna UNet" in line and str(tmp_path / "models" / "xdyna") in line


def test_unreadable_video(tiny_models, reference, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    line = one_error_line(run("animate", "--reference", reference, "--driving", bad, "--models", tiny_models,
                              "--out", tmp_path / "o.mp4", *FAST))
    assert "broken.mp4" in line


def test_reference_without_a_person(tiny_models, driving, tmp_path):
    import cv2

    img = np.full((896, 512, 3), 90, np.uint8)
    cv2.rectangle(img, (100, 200), (400, 500), (30, 160, 200), -1)
    ref = tmp_path / "wall.png"
    cv2.imwrite(str(ref), img)
    line = one_error_line(run("animate", "--reference", ref, "--driving", driving, "--models", tiny_models,
                              "--out", tmp_path / "o.mp4", "--frame-count", 2, *FAST))
    assert "no person" in line and "wall.png" in line


def test_demo_runs_on_tiny_models_and_says_so(tmp_path):
    out = tmp_path / "demo.mp4"
    r = run("demo", "--work", tmp_path / "work", "--out", out, "--frame-count", 3, "--steps", 2, "--quiet",
            XDYNA_MODELS_DIR=str(tmp_path / "no_models"))  # the default place holds no weights: fallback
    assert r.returncode == 0, r.stderr
    assert "PIPELINE CHECK" in r.stderr and "NOT AN ANIMATION" in r.stderr
    assert "W0000" not in r.stderr and "XNNPACK" not in r.stderr  # MediaPipe's native log lines hidden
    frames, _ = read_video(out)
    # five panels side by side: reference | driving | pose | face | result
    assert frames.shape == (3, 448, 5 * 256, 3)
    assert str(out) in r.stdout
    # the banner is burnt into every frame: yellow text at the bottom left, over the reference panel
    band = frames[:, -24:, :250].astype(int)
    yellow = (band[..., 0] > 170) & (band[..., 1] > 150) & (band[..., 2] < 90)
    assert yellow.reshape(3, -1).sum(axis=1).min() > 50
    # each panel is labelled: light text on a dark box at its top left, in the black pose panel too
    label = frames[:, 4:22, 2 * 256 + 6:2 * 256 + 40]
    assert (label > 200).any(axis=-1).reshape(3, -1).sum(axis=1).min() > 10


def test_clip_with_broken_timestamps_plays_at_its_declared_rate_with_a_note(tiny_models, driving, reference,
                                                                             tmp_path):
    """Every packet at pts 0 (the file's stream rate: hundreds of fps): the result plays at the declared
    12 fps and one note says why; --fps still decides when given."""
    from tests.clips import encode_frames

    clip = tmp_path / "pts0.mp4"
    encode_frames(clip, read_video(driving, frame_count=4)[0], fps=12, pix_fmt="yuv420p", zero_pts=True)
    out = tmp_path / "out.mp4"
    r = run("animate", "--reference", reference, "--driving", clip, "--models", tiny_models, "--out", out,
            "--frame-count", 3, *FAST)
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "broken timestamps" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "12 fps" in notes[0], r.stderr
    frames, fps = read_video(out)
    assert len(frames) == 3 and fps == 12.0


def _sound(path):
    """(float32 (channels, samples), rate) of a result's sound."""
    import av

    with av.open(str(path)) as c:
        assert c.streams.audio, "the result has no sound"
        rate = c.streams.audio[0].codec_context.sample_rate
        parts = [f.to_ndarray() for f in c.decode(audio=0)]
    return np.concatenate(parts, axis=1), rate


@pytest.mark.parametrize("picking, stride, fps", [(["--stride", "2"], 2, 12.0), (["--target-fps", "8"], 3, 8.0)])
def test_result_carries_the_driving_sound_of_exactly_its_frames(tiny_models, reference, tmp_path, picking, stride, fps):
    """Issue 21: `animate` writes the driving clip's sound under its frames (the same span plan as the
    driving node), with --stride and with --target-fps."""
    from tests.clips import sound_at, write_clip

    drive, pose = tmp_path / "drive.mp4", assets_dir() / "poses" / "example_2_pose_2.mp4"
    write_clip(drive, 3, 24, 64, 112, audio_rate=16000)                    # 24 fps, a ramp as its sound
    out = tmp_path / "out.mp4"
    start, n = 6, 6
    r = run("animate", "--reference", reference, "--driving", drive, "--pose", pose, "--models", tiny_models,
            "--out", out, "--start", start, "--frame-count", n, "--face", "off", *picking, *FAST)
    assert r.returncode == 0, r.stderr
    frames, got_fps = read_video(out)
    assert len(frames) == n and got_fps == pytest.approx(fps)
    sound, rate = _sound(out)
    seconds = n / fps
    assert abs(sound.shape[1] / rate - seconds) <= 1 / fps, (sound.shape[1] / rate, seconds)
    # the sound of those frames: the ramp from start / 24 s on (AAC: compare means, not samples)
    t = start / 24 + np.arange(int(seconds * rate)) / rate
    assert abs(float(sound[0, :len(t)].mean()) - float(sound_at(t).mean())) < 0.03
    assert abs(float(sound[1, :len(t)].mean()) + float(sound_at(t).mean())) < 0.03
