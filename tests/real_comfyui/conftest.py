"""Real-ComfyUI tier: skipped unless COMFYUI_DIR and COMFY_VENV name a ComfyUI checkout and its venv.

    COMFYUI_DIR=/path/to/ComfyUI COMFY_VENV=/path/to/venv python -m pytest tests/real_comfyui -v

Nothing here imports ComfyUI: the tests drive real servers through tests/real_comfyui/comfy_harness.sh
(override with COMFY_HARNESS), its HTTP API and, for the frontend checks, headless Chromium
(`node` with playwright-core on NODE_PATH, Chromium at XDYNA_CHROMIUM or `chromium` on PATH).

Model files come from tests/real_comfyui/tiny_comfy.py (sizes ComfyUI's native loaders accept) plus
stand-in DWPose detectors; they are written once into XDYNA_COMFY_TEST_MODELS, else pytest's cache
folder (.pytest_cache/d/xdyna_comfy_models), and reused while current (~1.2 GB, ~15 s to write).
Inputs are short clips cut from ../shared/assets (4-6 frames, 256x448). Timings of every step are
printed at the end of the session (and written to XDYNA_COMFY_TIMINGS as JSON when set).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.real_comfyui.standins import write_keypoints_json
from tests.real_comfyui.support import EXT_NAME, HERE, REPO, TEST_FRAMES, TIMINGS, Server, cut_clip, record

ENV_OK = bool(os.environ.get("COMFYUI_DIR") and os.environ.get("COMFY_VENV"))
SKIP_REASON = "real-ComfyUI tier: set COMFYUI_DIR and COMFY_VENV"


def pytest_collection_modifyitems(config, items):
    if ENV_OK:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    terminalreporter.section("X-Dyna real-ComfyUI timings (seconds)")
    for key, value in TIMINGS.items():
        terminalreporter.write_line(f"{key:58s} {value:9.3f}" if isinstance(value, float) else f"{key:58s} {value}")
    out = os.environ.get("XDYNA_COMFY_TIMINGS")
    if out:
        Path(out).write_text(json.dumps(TIMINGS, indent=1))


# ---------------------------------------------------------------------------------------- env

class ComfyEnv:
    def __init__(self):
        self.dir = Path(os.environ["COMFYUI_DIR"]).resolve()
        self.venv = Path(os.environ["COMFY_VENV"]).resolve()
        self.harness = Path(os.environ.get("COMFY_HARNESS", Path(__file__).with_name("comfy_harness.sh")))
        for p, what in ((self.dir / "main.py", "COMFYUI_DIR"), (self.venv / "bin" / "python", "COMFY_VENV"),
                        (self.harness, "COMFY_HARNESS")):
            if not p.exists():
                pytest.fail(f"{what}: {p} not found")
        version_file = self.dir / "comfyui_version.py"
        found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text()) if version_file.exists() else None
        self.version = found.group(1) if found else "unknown"
        TIMINGS.setdefault("ComfyUI version", self.version)

    def harness_env(self, models: Path, inputs: Path, **extra) -> dict:
        env = dict(os.environ)
        env.update(COMFYUI_DIR=str(self.dir), COMFY_VENV=str(self.venv), EXT_DIR=str(REPO), EXT_NAME=EXT_NAME,
                   COMFY_MODELS_DIR=str(models), COMFY_INPUT_DIR=str(inputs), HARNESS_QUIET="1")
        env.update({k: str(v) for k, v in extra.items()})
        return env


@pytest.fixture(scope="session")
def comfy_env():
    if not ENV_OK:
        pytest.skip(SKIP_REASON)
    return ComfyEnv()


@pytest.fixture(scope="session")
def comfy_models(comfy_env, request, tmp_path_factory):
    """models/ folder with the native-size test set and the stand-in DWPose detectors (cached)."""
    from tests.real_comfyui.standins import write_standin_dwpose
    from tests.real_comfyui.tiny_comfy import (
        comfy_test_set_ready,
        ensure_comfy_test_set,
    )

    root = os.environ.get("XDYNA_COMFY_TEST_MODELS")
    if root:
        root = Path(root)
    elif getattr(request.config, "cache", None) is not None:
        root = Path(request.config.cache.mkdir("xdyna_comfy_models"))
    else:
        root = tmp_path_factory.mktemp("xdyna_comfy_models")
    reused = comfy_test_set_ready(root)
    t0 = time.perf_counter()
    ensure_comfy_test_set(root)
    write_standin_dwpose(root / "xdyna" / "detectors")  # tiny, always rewritten
    record("test model set " + ("(cached)" if reused else "(written)"), time.perf_counter() - t0)
    return root


@pytest.fixture(scope="session")
def comfy_inputs(comfy_env, tmp_path_factory):
    """ComfyUI input/ folder holding the files the shipped workflows name (short cuts of the assets)."""
    from tests.conftest import assets_dir

    assets = assets_dir()
    d = tmp_path_factory.mktemp("comfy_input")
    shutil.copy(assets / "reference_image" / "example_1.png", d / "example_1.png")
    cut_clip(assets / "driving_video" / "example_1_driving_1.mp4", d / "example_1_driving_1.mp4")
    cut_clip(assets / "poses" / "example_1_pose_1.mp4", d / "example_1_pose_1.mp4")
    write_keypoints_json(d / "example_1_keypoints.json", TEST_FRAMES)  # the keypoints workflow's input
    return d


# ---------------------------------------------------------------------------------------- server

@contextlib.contextmanager
def serve(comfy_env, models: Path, inputs: Path):
    """A ComfyUI process (harness 'serve') until the block ends."""
    run_dir = Path(tempfile.mkdtemp(prefix="xdyna_serve_"))
    env = comfy_env.harness_env(models, inputs, HARNESS_RUN_DIR=run_dir)
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", str(comfy_env.harness), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url_file = run_dir / "url"
    try:
        while not (url_file.exists() and url_file.read_text().strip()):
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI did not start:\n{proc.stdout.read().decode(errors='replace')[-3000:]}")
            if time.perf_counter() - t0 > 240:
                pytest.fail("ComfyUI did not answer within 240 s")
            time.sleep(0.3)
        record("server start (harness serve)", time.perf_counter() - t0)
        yield Server(proc, url_file.read_text().strip(), run_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the harness stops its ComfyUI and cleans up
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def comfy_server(comfy_env, comfy_models, comfy_inputs):
    """One ComfyUI (harness 'serve') for the API, batch and frontend tests of the session."""
    with serve(comfy_env, comfy_models, comfy_inputs) as server:
        yield server


@pytest.fixture(scope="session")
def comfy_server2(comfy_env, comfy_models, comfy_inputs, tmp_path_factory):
    """A second ComfyUI on another port (own input folder) for the multi-server batch test."""
    inputs = tmp_path_factory.mktemp("comfy_input2")
    for f in comfy_inputs.iterdir():
        if f.is_file():  # ComfyUI adds sub-folders of its own
            shutil.copy(f, inputs / f.name)
    with serve(comfy_env, comfy_models, inputs) as server:
        yield server
