"""The API twin of every shipped workflow runs to a saved video in a real ComfyUI (harness `run`, CPU,
test model set, 4 frames at 128x192, 2 steps)."""
import json
import re
import subprocess
import time

import numpy as np
import pytest

from tools import make_workflows as make_ui
from tests.real_comfyui.support import (
    TEST_FRAMES,
    TEST_H,
    TEST_W,
    read_video,
    record,
    variant_of,
)

NAMES = sorted(make_ui.WORKFLOWS)


@pytest.fixture(scope="module")
def runs(comfy_env, comfy_models, comfy_inputs, tmp_path_factory):
    """Run all twins in one harness call (one server start); {name: (summary, kept run folder)}."""
    tmp = tmp_path_factory.mktemp("runs")
    files = []
    for name in NAMES:
        path = tmp / f"{name}_api.json"
        path.write_text(json.dumps(variant_of(name)))
        files.append(str(path))
    run_dir = tmp / "harness"
    env = comfy_env.harness_env(comfy_models, comfy_inputs, HARNESS_RUN_DIR=run_dir,
                                HARNESS_OUTPUT_JSON=tmp / "summary.json", HARNESS_QUIET="0", HARNESS_TIMEOUT=600)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(comfy_env.harness), "run", *files], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    record("harness run of all API twins (incl. server start)", time.perf_counter() - t0)
    out = proc.stdout + proc.stderr
    for name, secs in re.findall(r"OK (\S+)_api\.json in ([\d.]+)s", out):
        record(f"  workflow {name} (in ComfyUI)", float(secs))
    assert proc.returncode == 0, out[-6000:]
    summary = {rec["workflow"].rsplit("/", 1)[-1][: -len("_api.json")]: rec
               for rec in json.loads((tmp / "summary.json").read_text())}
    return summary, run_dir


@pytest.mark.parametrize("name", NAMES)
def test_twin_runs_to_a_saved_video(runs, name, comfy_inputs):
    summary, _ = runs
    rec = summary[name]
    assert rec["status"] == "success", rec
    videos = [f for f in rec["files"] if f.endswith(".mp4")]
    assert len(videos) == 1, rec
    frames, fps = read_video(videos[0])
    assert frames.shape == (TEST_FRAMES, TEST_H, TEST_W, 3)
    _, source_fps = read_video(comfy_inputs / "example_1_driving_1.mp4")
    assert fps == pytest.approx(source_fps)  # CreateVideo takes the driving video's fps
    assert frames.std() > 5 and len({f.tobytes() for f in frames}) == TEST_FRAMES  # not blank, frames differ


def test_sface_workflow_uses_the_face_controlnet(runs):
    summary, run_dir = runs
    log = (run_dir / "comfyui.log").read_text(errors="replace")
    assert re.search(rf"face landmarks \(pose_keypoint\) in {TEST_FRAMES}/{TEST_FRAMES} frames", log), log[-3000:]
    # same seed, inputs and pose as xdyna_pose: only the S-Face ControlNet differs
    pose, _ = read_video(next(f for f in summary["xdyna_pose"]["files"] if f.endswith(".mp4")))
    sface, _ = read_video(next(f for f in summary["xdyna_pose_sface"]["files"] if f.endswith(".mp4")))
    assert np.abs(pose.astype(int) - sface.astype(int)).mean() > 0.5
