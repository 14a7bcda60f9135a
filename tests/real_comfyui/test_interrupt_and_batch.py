"""Interrupting a run during sampling, a batch run that is stopped and resumed, a batch over two real
ComfyUI servers, and the quality report node and CLI on a real result."""
import json
import signal
import subprocess
import sys
import time

import pytest

from tools import make_workflows as make_ui
from tests.real_comfyui.support import (
    REPO,
    TEST_FRAMES,
    TEST_H,
    TEST_STEPS,
    TEST_W,
    read_video,
    record,
    variant_of,
)
from xdyna_core.batch.client import ComfyClient
from tests.real_comfyui.tiny_comfy import NATIVE_WIDGETS

SAMPLER = "XDynaSampler"
# longest websocket silence tolerated: a node on a loaded CPU machine can run for minutes without an event
SILENCE = 900


def _sampler_id(wf):
    return next(nid for nid, n in wf.items() if n["class_type"] == SAMPLER)


def _history(client, prompt_id, timeout=10.0):
    """The prompt's /history record once ComfyUI has written its status (shortly after the events)."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.history(prompt_id)
        if record.get("status") or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def _follow(client, events, prompt_id, on_event, timeout=600):
    """Feed this prompt's websocket events to on_event until it returns a value."""
    deadline = time.monotonic() + timeout
    for ev in events:
        data = ev.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        result = on_event(ev.get("type"), data)
        if result is not None:
            return result
        if time.monotonic() > deadline:
            client.interrupt()
            pytest.fail(f"no result within {timeout} s")
    pytest.fail("websocket closed before the prompt ended")


def test_interrupt_during_sampling_returns_promptly_and_next_run_succeeds(comfy_server):
    client = ComfyClient(comfy_server.url)
    wf = variant_of("xdyna_pose", steps=200, seed=1234)  # minutes of sampling if not stopped
    sampler = _sampler_id(wf)
    events = client.open_events(timeout=SILENCE)
    prompt_id = client.queue(wf)
    sent = {}

    def on_event(kind, data):
        if kind == "progress" and str(data.get("node")) == sampler and "t" not in sent:
            sent["t"], sent["value"] = time.perf_counter(), data.get("value")
            client.interrupt()
        elif kind == "execution_interrupted":
            return ("interrupted", data)
        elif kind in ("execution_error", "execution_success"):
            return (kind, data)

    kind, data = _follow(client, events, prompt_id, on_event)
    latency = time.perf_counter() - sent["t"]
    record("interrupt: POST /interrupt -> execution_interrupted", latency)
    assert kind == "interrupted" and str(data.get("node_id")) == sampler, (kind, data)
    assert latency < 10.0
    status = _history(client, prompt_id).get("status", {})
    assert status.get("status_str") == "error" and not status.get("completed"), status
    assert any(m[0] == "execution_interrupted" for m in status.get("messages", [])), status

    events.close()
    # A new client id: ComfyUI forgets a client id's socket when any socket with that id closes.
    client = ComfyClient(comfy_server.url)
    wf = variant_of("xdyna_pose", seed=99)
    t0 = time.perf_counter()
    events = client.open_events(timeout=SILENCE)
    prompt_id = client.queue(wf)
    kind = _follow(client, events, prompt_id,
                      lambda k, d: k if k in ("execution_success", "execution_error", "execution_interrupted") else None)
    record("run after the interrupt (via HTTP, models warm)", time.perf_counter() - t0)
    events.close()
    assert kind == "execution_success"
    outputs = _history(client, prompt_id)["outputs"]
    saved = [i for o in outputs.values() for i in o.get("images", []) if i["filename"].endswith(".mp4")]
    assert len(saved) == 1


def _jobs_file(tmp_path, inputs, count=3):
    defaults = {"width": TEST_W, "height": TEST_H, "frame_count": TEST_FRAMES, "steps": TEST_STEPS}
    for widgets in NATIVE_WIDGETS.values():
        defaults.update(widgets)
    jobs = [{"name": f"job{i}", "reference": str(inputs / "example_1.png"),
             "driving": str(inputs / "example_1_driving_1.mp4"), "seed": 500 + i} for i in range(1, count + 1)]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"defaults": defaults, "jobs": jobs}))
    return path


def test_batch_stops_and_resumes(comfy_server, comfy_inputs, tmp_path):
    jobs = _jobs_file(tmp_path, comfy_inputs)
    out = tmp_path / "out"
    workflow = make_ui.twin_paths()["xdyna_pose"][1]
    cmd = [sys.executable, "-m", "xdyna_core", "batch", "--jobs", str(jobs), "--workflow", str(workflow),
           "--out", str(out), "--server", comfy_server.url]

    # First run: stopped (Ctrl-C) once job1 is done and job2 is queued.
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[job2] queued"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    lines.append(rest)
    first = "".join(lines)
    record("batch: job1 + stop during job2", time.perf_counter() - t0)
    assert proc.returncode == 130, first
    assert "[job1] done" in first and "[job2] stopped; interrupting ComfyUI" in first, first
    state = json.loads((out / "batch_state.json").read_text())
    assert state["jobs"]["job1"]["status"] == "done" and state["jobs"]["job2"]["status"] == "interrupted", state
    job1_files = [out / f for f in state["jobs"]["job1"]["outputs"]]
    stamp = [f.stat().st_mtime_ns for f in job1_files]

    # Second run: job1 is skipped, job2 and job3 are done.
    t0 = time.perf_counter()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    record("batch: resume (skip job1, run job2 + job3)", time.perf_counter() - t0)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[job1] already done, skipped" in again.stdout
    assert "2 done, 1 skipped, 0 failed" in again.stdout, again.stdout
    state = json.loads((out / "batch_state.json").read_text())
    assert all(state["jobs"][f"job{i}"]["status"] == "done" for i in (1, 2, 3))
    # every job was followed on the websocket (its progress events arrived), not found by polling
    for i in (2, 3):
        assert f"[job{i}] {comfy_server.url} node" in again.stdout, again.stdout
    assert [f.stat().st_mtime_ns for f in job1_files] == stamp  # not rewritten
    for i in (1, 2, 3):
        (video,) = [out / f for f in state["jobs"][f"job{i}"]["outputs"] if f.endswith(".mp4")]
        frames, _ = read_video(video)
        assert frames.shape == (TEST_FRAMES, TEST_H, TEST_W, 3) and frames.std() > 5


def _prompt_prefixes(server):
    """filename prefixes of every prompt in a server's /history (one per queued job)."""
    history = server.get("/history?max_items=100")
    return [n["inputs"]["filename_prefix"] for rec in history.values() for n in rec["prompt"][2].values()
            if "filename_prefix" in n.get("inputs", {})]


def test_batch_over_two_servers(comfy_server, comfy_server2, comfy_inputs, tmp_path):
    jobs = _jobs_file(tmp_path, comfy_inputs, count=4)
    out = tmp_path / "out"
    workflow = make_ui.twin_paths()["xdyna_pose"][1]
    before = {s.url: _prompt_prefixes(s) for s in (comfy_server, comfy_server2)}
    # The jobs name files inside the first server's own input folder (a user's local ComfyUI). An
    # upload with overwrite would truncate and rewrite the file that the upload to the second server
    # is reading at that moment (seen once: the second server got a cut video, "Invalid data found").
    sources = [comfy_inputs / "example_1.png", comfy_inputs / "example_1_driving_1.mp4"]
    stamps = [f.stat().st_mtime_ns for f in sources]
    cmd = [sys.executable, "-m", "xdyna_core", "batch", "--jobs", str(jobs), "--workflow", str(workflow),
           "--out", str(out), "--server", comfy_server.url, "--server", comfy_server2.url]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    record("batch: 4 jobs over 2 servers", time.perf_counter() - t0)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 done, 0 skipped, 0 failed" in run.stdout, run.stdout
    assert [f.stat().st_mtime_ns for f in sources] == stamps   # the uploads left the sources untouched
    state = json.loads((out / "batch_state.json").read_text())
    used = {state["jobs"][f"job{i}"]["server"] for i in range(1, 5)}
    assert used == {comfy_server.url, comfy_server2.url}, state  # both servers worked
    # each job was queued exactly once over the two servers
    after = {s.url: _prompt_prefixes(s) for s in (comfy_server, comfy_server2)}
    for i in range(1, 5):
        runs = sum(after[u].count(f"xdyna/job{i}") - before[u].count(f"xdyna/job{i}") for u in after)
        assert runs == 1, (i, after)
    for i in range(1, 5):
        assert f"[job{i}] " in run.stdout and state["jobs"][f"job{i}"]["attempt"] == 1
        (video,) = [out / f for f in state["jobs"][f"job{i}"]["outputs"] if f.endswith(".mp4")]
        frames, _ = read_video(video)
        assert frames.shape == (TEST_FRAMES, TEST_H, TEST_W, 3)


def test_quality_report_node_and_cli(comfy_server, comfy_models, comfy_inputs, tmp_path):
    """The report node in a real graph (fed by the shipped pose workflow), then the CLI on its video."""
    wf = variant_of("xdyna_pose", seed=7)
    decode = next(nid for nid, n in wf.items() if n["class_type"] == "VAEDecode")
    extract_id = next(nid for nid, n in wf.items() if n["class_type"] == "XDynaPoseExtract")
    extract = wf[extract_id]["inputs"]
    # the run's settings over links: the sampler's latent (seed, steps, windows), Pose Extract's settings
    wf["90"] = {"class_type": "XDynaQualityReport", "inputs": {
        "reference": extract["reference"], "driving_images": extract["images"], "result": [decode, 0],
        "run": [_sampler_id(wf), 0], "pose_settings": [extract_id, 4]}}
    client = ComfyClient(comfy_server.url)
    events = client.open_events(timeout=SILENCE)
    prompt_id = client.queue(wf)
    kind = _follow(client, events, prompt_id,
                   lambda k, d: (k, d) if k in ("execution_success", "execution_error", "execution_interrupted") else None)
    events.close()
    assert kind[0] == "execution_success", kind
    outputs = _history(client, prompt_id)["outputs"]
    shown = outputs["90"]
    assert shown["images"] and shown["images"][0]["type"] == "temp", shown
    assert "pck@0.05" in shown["text"][0] and "replayed from seed 7" in shown["text"][0], shown
    plot = client.download(shown["images"][0]["filename"], shown["images"][0]["subfolder"], "temp")
    assert plot[:8] == b"\x89PNG\r\n\x1a\n"
    (saved,) = [i for o in outputs.values() for i in o.get("images", []) if i["filename"].endswith(".mp4")]
    video = tmp_path / "result.mp4"
    video.write_bytes(client.download(saved["filename"], saved["subfolder"], "output"))
    client.close()

    report = tmp_path / "q.json"
    cmd = [sys.executable, "-m", "xdyna_core", "report", "--reference", str(comfy_inputs / "example_1.png"),
           "--driving", str(comfy_inputs / "example_1_driving_1.mp4"), "--result", str(video), "--align",
           "--backend", "dwpose", "--models", str(comfy_models), "--json", str(report),
           "--context-length", "2", "--context-overlap", "0"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(report.read_text())
    assert figures["frames"] == TEST_FRAMES and figures["pose_backend"] == "dwpose"
    assert "pck@0.05" in figures and figures["seams"]
