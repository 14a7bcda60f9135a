"""Helpers of the real-ComfyUI tier (imported by conftest.py and the tests under one module name, so
the timings they record end up in one place)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tools import make_workflows as make_ui

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXT_NAME = "ComfyUI-XDyna"

# Test size of every shipped workflow: short and small, same graph.
TEST_W, TEST_H, TEST_FRAMES, TEST_STEPS = 128, 192, 4, 2
CLIP_FRAMES, CLIP_W, CLIP_H = 6, 256, 448
TIMINGS: dict = {}


def record(key: str, seconds: float) -> None:
    TIMINGS[key] = round(float(seconds), 3)


def cut_clip(src: Path, dst: Path, frames: int = CLIP_FRAMES, size=(CLIP_W, CLIP_H)) -> Path:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        rate = inp.streams.video[0].average_rate
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= frames:
                break
            for packet in stream.encode(frame.reformat(width=size[0], height=size[1])):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def variant_of(name: str, **overrides) -> dict:
    """The API twin of a shipped workflow at test size, loading the test set's native files."""
    from tests.real_comfyui.tiny_comfy import NATIVE_WIDGETS

    wf = copy.deepcopy(json.loads(make_ui.twin_paths()[name][1].read_text()))
    for node in wf.values():
        inputs = node["inputs"]
        inputs.update(NATIVE_WIDGETS.get(node["class_type"], {}))
        if "width" in inputs and not isinstance(inputs["width"], list):  # the one place the size is set
            inputs["width"], inputs["height"] = TEST_W, TEST_H
        if node["class_type"] == "XDynaLoadDrivingVideo":
            inputs["frame_count"] = TEST_FRAMES
        if "steps" in inputs:
            inputs["steps"] = TEST_STEPS
        if "filename_prefix" in inputs:
            inputs["filename_prefix"] = f"test/{name}"
        for key, value in overrides.items():
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = value
    return wf



def read_video(path: Path):
    """(frames uint8 [N, H, W, 3], fps) of a saved video."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return frames, fps


class Server:
    def __init__(self, proc, url: str, run_dir: Path):
        self.proc, self.url, self.run_dir = proc, url, run_dir

    @property
    def log(self) -> str:
        return (self.run_dir / "comfyui.log").read_text(errors="replace")

    def get(self, path: str):
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body


def browser_or_skip() -> dict:
    """Environment for ui_check.js, or skip when node / playwright-core / Chromium are missing."""
    node = shutil.which("node")
    chromium = os.environ.get("XDYNA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not node or not chromium:
        pytest.skip("frontend checks need `node` and Chromium (XDYNA_CHROMIUM)")
    env = dict(os.environ, XDYNA_CHROMIUM=chromium)
    probe = subprocess.run([node, "-e", "require.resolve('playwright-core')"], env=env, capture_output=True,
                           check=False)
    if probe.returncode:
        pytest.skip("frontend checks need playwright-core (npm) on NODE_PATH")
    return env


def ui_check(server: Server, workflow: Path, out_png: Path, *args: str, timeout: float = 400) -> dict:
    env = browser_or_skip()
    report = out_png.with_suffix(".json")
    cmd = ["node", str(HERE / "ui_check.js"), "--url", server.url, "--workflow", str(workflow), "--out", str(out_png),
           "--report", str(report), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if not report.exists():
        pytest.fail(f"ui_check.js wrote no report (rc {proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(report.read_text())
    if data.get("fatal"):
        pytest.fail(f"frontend did not load: {data['fatal']}")
    return data
