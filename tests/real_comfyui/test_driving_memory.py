"""The shipped workflows on a long phone-size clip: X-Dyna Load Driving Video decodes only the frames
used, at the working size, so ComfyUI's peak memory for 16 frames of a 60 s 1080p30 clip stays
within 1.5 GB of the same run on a 2 s clip; the saved video carries the sound of exactly those frames.

Peak memory is the server process's VmHWM (/proc/<pid>/status), reset before each run through
/proc/<pid>/clear_refs ("5": reset the peak resident set size)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.clips import write_clip
from tools import make_workflows as make_ui
from tests.real_comfyui.support import record, variant_of
from xdyna_core.batch.client import ComfyClient

# the workflows that read a driving clip (the keypoints workflow has none: no clip, no sound to keep)
NAMES = sorted(n for n, (_, api) in make_ui.twin_paths().items()
               if '"XDynaLoadDrivingVideo"' in api.read_text())
FRAMES, FPS, RATE = 16, 30, 44100
GB = 1024 ** 3


@pytest.fixture(scope="module")
def clips(comfy_inputs):
    """60 s and 2 s of 1920x1080 at 30 fps with AAC stereo sound, in ComfyUI's input folder."""
    t0 = time.perf_counter()
    for name, seconds in (("phone_60s.mp4", 60), ("phone_2s.mp4", 2)):
        # bright frames: the stand-in DWPose detector sees a person in a frame whose brightest pixel is
        # above ~140
        write_clip(comfy_inputs / name, seconds, FPS, 1920, 1080, audio_rate=RATE, audio_codec="aac", crf=28,
                   level=lambda i: 160 + 3 * (i % 28))
    record("driving memory: writing the 60 s + 2 s 1080p clips", time.perf_counter() - t0)
    return "phone_60s.mp4", "phone_2s.mp4"


def _server_pid(server) -> int:
    """The ComfyUI process (main.py) under the harness that serves this session."""
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = status.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"main.py" in cmd and any(server.url.rsplit(":", 1)[-1].encode() == a for a in cmd):
            return int(status.parent.name)
    pytest.fail(f"no ComfyUI process found for {server.url}")


def _peak_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _run(client, wf, timeout=900) -> dict:
    prompt_id = client.queue(wf)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = client.history(prompt_id)
        status = rec.get("status") or {}
        if status.get("completed") or status.get("status_str") == "error":
            assert status.get("status_str") == "success", status
            return rec
        time.sleep(0.5)
    client.interrupt()
    pytest.fail(f"no result within {timeout} s")


def _saved_video(client, rec, tmp_path) -> Path:
    saved = [i for o in rec["outputs"].values() for i in o.get("images", []) if i["filename"].endswith(".mp4")]
    assert len(saved) == 1, rec["outputs"]
    path = tmp_path / saved[0]["filename"]
    path.write_bytes(client.download(saved[0]["filename"], saved[0].get("subfolder", "")))
    return path


def _sound_seconds(path: Path):
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        stream = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(stream))
        return samples / stream.codec_context.sample_rate


@pytest.mark.parametrize("name", NAMES)
def test_long_clip_costs_no_more_memory_and_keeps_its_sound(comfy_server, clips, name, tmp_path):
    long_clip, short_clip = clips
    client = ComfyClient(comfy_server.url)
    pid = _server_pid(comfy_server)
    start = 300  # 10 s into the clip: the span's sound is not the clip's start
    wf = {c: variant_of(name, file=c, frame_count=FRAMES, start=start if c == long_clip else 0)
          for c in (long_clip, short_clip)}
    _run(client, wf[short_clip])  # models loaded: the runs below differ only in their driving clip
    peaks = {}
    for clip in (long_clip, short_clip):
        _reset_peak(pid)
        t0 = time.perf_counter()
        rec = _run(client, wf[clip])
        peaks[clip] = _peak_bytes(pid)
        record(f"driving memory: {name} on {clip}", time.perf_counter() - t0)
        record(f"driving memory: {name} peak RSS on {clip} (GB)", peaks[clip] / GB)
        video = _saved_video(client, rec, tmp_path)
        seconds = _sound_seconds(video)
        assert seconds is not None, f"{name}: the result has no audio stream"
        assert seconds == pytest.approx(FRAMES / FPS, abs=0.1), f"{name}: {seconds} s of sound"
    assert peaks[long_clip] - peaks[short_clip] < 1.5 * GB, {k: v / GB for k, v in peaks.items()}
