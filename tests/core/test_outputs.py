"""Outputs appear whole or not at all (issue 12): a temporary file beside the target, renamed into
place with the umask's permissions; a SIGKILL mid-write leaves no file at --out; Ctrl-C at any moment
exits 130 with no partial output (MediaPipe / onnxruntime threads included)."""
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.conftest import REPO, assets_dir
from xdyna_core.loading.tiny import write_tiny_set
from xdyna_core.outputs import check_output_path, default_file_mode, partial_path
from xdyna_core.preprocess.video import read_video, write_video


def partials(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_video_and_convert_outputs_get_the_umask_permissions(tmp_path, umask_022):
    from xdyna_core.loading.convert import convert_file

    os.umask(0o002)  # a group-writable umask: the files must follow it, not a fixed 0600/0644
    out = tmp_path / "v.mp4"
    write_video(out, np.zeros((2, 16, 16, 3), np.uint8), fps=8)
    assert out.stat().st_mode & 0o777 == 0o664 == default_file_mode()
    models = tmp_path / "m"
    write_tiny_set(models, seed=0)
    conv = tmp_path / "pose.safetensors"
    convert_file(models / "xdyna" / "xdyna_pose_controlnet.safetensors", conv)
    assert conv.stat().st_mode & 0o777 == 0o664
    assert partials(tmp_path) == []


def test_failed_write_leaves_nothing_and_stale_partials_are_swept(tmp_path):
    out = tmp_path / "r.mp4"

    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        write_video(out, frames(), fps=8)
    assert list(tmp_path.iterdir()) == []
    # a leftover of a killed run (its process gone) is removed by the next write to the same target
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".r.mp4.partial-{dead.pid}.mp4"
    stale.write_bytes(b"half a video")
    alive = tmp_path / f".r.mp4.partial-{os.getppid()}.mp4"  # a live process's file is left alone
    alive.write_bytes(b"in progress")
    write_video(out, np.zeros((1, 16, 16, 3), np.uint8), fps=8)
    assert out.exists() and not stale.exists() and alive.exists()


def test_check_output_path_refuses_hard_link_and_wrong_suffix(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    link = tmp_path / "other.mp4"
    os.link(src, link)
    with pytest.raises(ValueError, match="is the input"):
        check_output_path(link, [src])
    with pytest.raises(ValueError, match="must end in .mp4"):
        check_output_path(tmp_path / "a.webm", [src])
    assert check_output_path(tmp_path / "new" / "deeper" / "a.mp4", [src]).name == "a.mp4"
    assert partial_path(tmp_path / "a.mp4").name == f".a.mp4.partial-{os.getpid()}.mp4"


# ------------------------------------------------------------------ kills and interrupts of the CLI

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    pytest.importorskip("mediapipe")  # the default pose/face extractor of the job below
    root = tmp_path_factory.mktemp("models")
    write_tiny_set(root, seed=4)
    return root


# The job with every packet's mux into the mp4 slowed by 0.1 s (in the child only): the encoder holds
# packets back (lookahead) until the file is closed, so without this the file exists for milliseconds;
# with it the test sees the temporary file and kills the process while data is going into it.
SLOW_WRITE = """
import sys, time
import av
open_container = av.open


class SlowMux:
    def __init__(self, container):
        self._container = container

    def __getattr__(self, name):
        return getattr(self._container, name)

    def mux(self, packet):
        time.sleep(0.1)
        return self._container.mux(packet)


av.open = lambda *a, **k: SlowMux(open_container(*a, **k))
from xdyna_core.cli import run
run()
"""


def start_job(models, out, length=2, panels=False, slow_write=False):
    entry = ["-c", SLOW_WRITE] if slow_write else ["-m", "xdyna_core"]
    cmd = [sys.executable, *entry, "animate",
           "--reference", assets_dir() / "reference_image" / "example_2.jpg",
           "--driving", assets_dir() / "driving_video" / "example_2_driving_2.mp4",
           "--models", models, "--out", out, "--frame-count", length, "--steps", 1, "--size", "128x192", "--quiet"]
    cmd += ["--panels"] if panels else []
    return subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def handler_installed(proc, timeout=120.0) -> bool:
    """Wait until the child's own code runs: its SIGTERM handler (installed with the SIGINT one, and
    which the bare interpreter does not have) shows in /proc/PID/status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                    return True
        except OSError:
            return False
        time.sleep(0.005)
    return False


@pytest.fixture(scope="module")
def killed_mid_write(tiny_models, tmp_path_factory):
    """One job SIGKILLed while its video is being written; also times the run up to that point."""
    out_dir = tmp_path_factory.mktemp("killed")
    out = out_dir / "result.mp4"
    proc = start_job(tiny_models, out, slow_write=True)  # the same job as the SIGINT runs below
    assert handler_installed(proc)
    t0 = time.monotonic()
    seen = None
    while proc.poll() is None:
        if partials(out_dir):
            seen = time.monotonic() - t0
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=60)
    return {"rc": proc.returncode, "seen_s": seen, "out": out, "stderr": proc.stderr.read()}


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_file_at_out(killed_mid_write):
    k = killed_mid_write
    assert k["seen_s"] is not None, f"the run ended before writing was seen (rc {k['rc']}): {k['stderr']}"
    assert k["rc"] == -signal.SIGKILL
    assert not k["out"].exists()


@pytest.mark.slow
def test_sigint_at_random_moments_exits_130_without_partial_output(tiny_models, killed_mid_write, tmp_path):
    """20 SIGINTs delivered at random moments of a run (after the interpreter started our code, up to
    the video write): every one exits 130 at once and leaves no partial file."""
    span = (killed_mid_write["seen_s"] or 10.0) * 1.05
    rng = random.Random(12)

    def one(i):
        out = tmp_path / f"r{i}" / "out.mp4"
        out.parent.mkdir()
        for _ in range(3):  # a run that ended before its signal does not count: draw again
            delay = rng.uniform(0.0, span)
            proc = start_job(tiny_models, out)
            if not handler_installed(proc):
                proc.kill()
                continue
            time.sleep(delay)
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT)
            t_sent = time.monotonic()
            rc = proc.wait(timeout=60)
            return {"rc": rc, "delay": delay, "exit_s": time.monotonic() - t_sent, "stderr": proc.stderr.read(),
                    "partials": partials(out.parent), "out": out if out.exists() else None}
        return None

    with ThreadPoolExecutor(2) as pool:  # two at a time: the machine has few cores
        results = [r for r in pool.map(one, range(20)) if r is not None]
    assert len(results) >= 18, "too few runs were still going when their signal was due"
    bad = [r for r in results if r["rc"] != 130 or r["partials"] or "Fatal Python error" in r["stderr"]]
    assert not bad, bad[:3]
    for r in results:
        if r["out"]:  # interrupted after the rename: then the file is complete
            assert len(read_video(r["out"])[0]) == 2
    print(f"\n{len(results)} SIGINTs, delays {min(r['delay'] for r in results):.1f}-"
          f"{max(r['delay'] for r in results):.1f} s, slowest exit {max(r['exit_s'] for r in results):.2f} s")
