"""Memory stays bounded on long high-resolution driving videos (issue 12): driving frames are
shrunk to the working size as they stream, so `animate` on 150 frames of a 1080p clip peaks within
300 MB of the same job on 8 frames (peak RSS of each child process, from os.wait4)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, assets_dir
from xdyna_core.loading.tiny import write_tiny_set
from xdyna_core.preprocess.video import VideoWriter, iter_frames

pytest.importorskip("mediapipe")  # the default pose extractor of the job

LIMIT_MB = 300


@pytest.fixture(scope="module")
def clip_1080p(tmp_path_factory):
    """150 frames of 1920x1080: the shared dancer enlarged into a 1080p frame (fast preset: the
    test measures the reader, not the encoder)."""
    path = tmp_path_factory.mktemp("clip") / "dance_1080p.mp4"
    import cv2

    src = list(iter_frames(assets_dir() / "driving_video" / "example_2_driving_2.mp4", frame_count=30))
    with VideoWriter(path, 30, crf=28, preset="ultrafast") as w:
        for i in range(150):
            f = src[i % len(src)]
            h = 1080
            wid = int(round(f.shape[1] * h / f.shape[0]))
            frame = np.full((1080, 1920, 3), 40, np.uint8)
            x0 = (1920 - wid) // 2
            frame[:, x0:x0 + wid] = cv2.resize(f, (wid, h), interpolation=cv2.INTER_LINEAR)
            w.write(frame)
    return path


def peak_rss_mb(models, clip, out, length):
    cmd = [sys.executable, "-m", "xdyna_core", "animate", "--reference",
           assets_dir() / "reference_image" / "example_2.jpg", "--driving", clip, "--models", models,
           "--out", out, "--frame-count", length, "--steps", 1, "--size", "128x192", "--face", "off", "--quiet"]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN would mix runs)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    return usage.ru_maxrss / 1024  # Linux: KiB


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_1080p_frames(clip_1080p, tmp_path):
    models = tmp_path / "models"
    write_tiny_set(models, seed=0)
    short = peak_rss_mb(models, clip_1080p, tmp_path / "a.mp4", 8)
    long = peak_rss_mb(models, clip_1080p, tmp_path / "b.mp4", 150)
    print(f"\npeak RSS: 8 frames {short:.0f} MB, 150 frames {long:.0f} MB (+{long - short:.0f} MB)")
    # before streaming: ~6.5 MB per 1080p frame kept, i.e. ~900 MB more for 142 more frames
    assert long - short < LIMIT_MB
