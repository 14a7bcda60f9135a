"""Batch job lists, the ComfyUI API client and the multi-server runner, against in-process fake
ComfyUI servers speaking the real protocol on loopback (tests/core/comfy_api_fake.py)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.core.comfy_api_fake import FakeComfyServer
from xdyna_core.batch import JobListError, fill_workflow, load_jobs, run_batch
from xdyna_core.batch.client import ComfyClient, ComfyError

REPO = Path(__file__).resolve().parents[2]

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "reference"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
    "3": {"class_type": "XDynaSampler", "inputs": {"steps": 25, "cfg": 7.5, "seed": 0, "model": ["4", 0]}},
    "5": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "ComfyUI", "video": ["6", 0]}},
}


@pytest.fixture
def files(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"png")
    (tmp_path / "d.mp4").write_bytes(b"mp4")
    return tmp_path


def write_jobs(tmp_path, obj):
    p = tmp_path / "jobs.json"
    p.write_text(json.dumps(obj))
    return p


def test_job_list_defaults_names_and_paths(files):
    jobs = load_jobs(write_jobs(files, {"defaults": {"steps": 10},
                                        "jobs": [{"reference": "a.png", "driving": "d.mp4", "seed": 3},
                                                 {"name": "second", "reference": "b.png", "driving": "d.mp4", "steps": 4}]}))
    assert [j.name for j in jobs] == ["001_a_d", "second"]
    assert jobs[0].options == {"steps": 10, "seed": 3} and jobs[1].options == {"steps": 4}
    assert jobs[0].reference == (files / "a.png").resolve()


@pytest.mark.parametrize("obj,message", [
    ([{"reference": "a.png"}], "missing driving"),
    ([{"reference": "nope.png", "driving": "d.mp4"}], "reference file not found"),
    ([{"name": "x", "reference": "a.png", "driving": "d.mp4"}, {"name": "x", "reference": "b.png", "driving": "d.mp4"}], "unique"),
    ([{"name": "../evil", "reference": "a.png", "driving": "d.mp4"}], "must be letters"),
    ([], "non-empty"),
])
def test_job_list_errors(files, obj, message):
    with pytest.raises(JobListError, match=message):
        load_jobs(write_jobs(files, obj))


def test_fill_workflow(files):
    job = load_jobs(write_jobs(files, [{"name": "j", "reference": "a.png", "driving": "d.mp4", "steps": 5, "seed": 9}]))[0]
    wf = fill_workflow({"prompt": WORKFLOW}, job, "up/a.png", "d.mp4")
    assert wf["1"]["inputs"]["image"] == "up/a.png" and wf["2"]["inputs"]["file"] == "d.mp4"
    assert wf["3"]["inputs"]["steps"] == 5 and wf["3"]["inputs"]["seed"] == 9
    assert wf["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert wf["5"]["inputs"]["filename_prefix"] == "xdyna/j"
    assert WORKFLOW["3"]["inputs"]["steps"] == 25  # the template is not modified
    bad = load_jobs(write_jobs(files, [{"reference": "a.png", "driving": "d.mp4", "stepz": 5}]))[0]
    with pytest.raises(JobListError, match="stepz"):
        fill_workflow(WORKFLOW, bad, "a", "b")
    with pytest.raises(JobListError, match="API format"):
        fill_workflow({"nodes": [], "links": []}, job, "a", "b")



# --- against fake ComfyUI servers ------------------------------------------------------------------

@pytest.fixture
def servers():
    made = []

    def make(**kw):
        made.append(FakeComfyServer(name=f"s{len(made)}", **kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


def many_jobs(files, n):
    return load_jobs(write_jobs(files, [{"name": f"job{i:02d}", "reference": "a.png", "driving": "d.mp4", "seed": i}
                                        for i in range(n)]))


def queued_counts(fakes):
    return Counter(j for f in fakes for j in f.queued)


def test_batch_runs_reports_failures_and_resumes(files, servers, tmp_path):
    jobs = load_jobs(write_jobs(files, [{"name": n, "reference": r, "driving": "d.mp4"}
                                        for n, r in (("one", "a.png"), ("two", "b.png"), ("three", "c.png"))]))
    fake = servers(fail_on={"b.png"})
    out = tmp_path / "out"
    logs = []
    result = run_batch(jobs, WORKFLOW, ComfyClient(fake.url, timeout=10), out, log=logs.append)
    assert result.done == ["one", "three"]
    failure = result.failed["two"]
    # the error names the node, the server, the job and its files
    for part in ("frame counts disagree", "XDynaSampler", fake.url, "job two", "b.png", "d.mp4"):
        assert part in failure, (part, failure)
    assert (out / "one" / "one_00001.mp4").read_bytes() == b"video-bytes:s0:one_00001.mp4"
    assert any("4/4" in line for line in logs)
    assert any(line.startswith("progress: ") and "ETA" in line for line in logs)
    state = json.loads((out / "batch_state.json").read_text())
    assert state["jobs"]["two"]["status"] == "failed"

    # Resume: the finished jobs are skipped, the failed one is retried (and now succeeds).
    fake.fail_on.clear()
    queued_before = len(fake.queued)
    result = run_batch(jobs, WORKFLOW, fake.url, out, log=logs.append)
    assert result.skipped == ["one", "three"] and result.done == ["two"]
    assert len(fake.queued) == queued_before + 1


def test_bad_server_reply_names_server_job_and_file(files, servers, tmp_path):
    fake = servers(reply=b"<html>proxy error</html>")
    jobs = load_jobs(write_jobs(files, [{"name": "solo", "reference": "a.png", "driving": "d.mp4"}]))
    result = run_batch(jobs, WORKFLOW, fake.url, tmp_path / "out", log=lambda s: None, retries=0)
    msg = result.failed["solo"]
    for part in (fake.url, "POST /prompt", "not JSON", "proxy error", "job solo", "a.png", "d.mp4"):
        assert part in msg, (part, msg)
    assert "Expecting value" not in msg


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(ComfyError, match="cannot reach ComfyUI at http://127.0.0.1:9"):
        ComfyClient("http://127.0.0.1:9", timeout=2).queue({})


def test_sync_client_follows_events(servers, tmp_path):
    fake = servers()
    with ComfyClient(fake.url, timeout=10) as client:
        events = client.open_events()
        pid = client.queue({"5": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "xdyna/x"}}})
        kinds = []
        for ev in events:  # the binary preview frame the fake sends first is skipped
            kinds.append(ev["type"])
            if ev["type"] == "executing" and ev["data"]["node"] is None:
                break
        events.close()
        assert kinds[0] == "status" and "progress" in kinds and "execution_success" in kinds
        assert client.history(pid)["status"]["status_str"] == "success"
        assert client.download("x_00001.mp4", "xdyna") == b"video-bytes:s0:x_00001.mp4"


def test_twelve_jobs_over_three_servers_run_each_once(files, servers, tmp_path):
    fakes = [servers(seconds=0.1) for _ in range(3)]
    jobs = many_jobs(files, 12)
    out = tmp_path / "out"
    logs = []
    result = run_batch(jobs, WORKFLOW, [f.url for f in fakes], out, log=logs.append)
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    assert queued_counts(fakes) == Counter({j.name: 1 for j in jobs})
    assert all(f.executed for f in fakes), [len(f.executed) for f in fakes]  # every server worked
    state = json.loads((out / "batch_state.json").read_text())
    for j in jobs:  # same layout as with one server: <out>/<job>/<file>
        rec = state["jobs"][j.name]
        assert rec["status"] == "done" and rec["outputs"] == [f"{j.name}/{j.name}_00001.mp4"]
        server = next(f for f in fakes if f.url == rec["server"])
        assert (out / rec["outputs"][0]).read_bytes() == f"video-bytes:{server.name}:{j.name}_00001.mp4".encode()
    assert any(line.startswith(f"  {fakes[0].url}: ") for line in logs)  # per-server summary


def test_per_server_holds_k_jobs(files, servers, tmp_path):
    fake = servers(seconds=0.2)
    result = run_batch(many_jobs(files, 4), WORKFLOW, fake.url, tmp_path / "out", log=lambda s: None, per_server=2)
    assert len(result.done) == 4 and queued_counts([fake]) == Counter({f"job{i:02d}": 1 for i in range(4)})


def test_jobs_with_same_file_names_each_run_on_their_own_files(tmp_path, servers):
    """Two jobs whose files share names (a/driving.mp4, b/driving.mp4) queued together on one server:
    the second upload must not replace the first job's input while that job waits or runs."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "ref.png").write_bytes(f"png of {folder}".encode())
        (tmp_path / folder / "driving.mp4").write_bytes(f"mp4 of {folder}".encode())
    jobs = load_jobs(write_jobs(tmp_path, [{"name": f"job_{f}", "reference": f"{f}/ref.png",
                                            "driving": f"{f}/driving.mp4"} for f in ("a", "b")]))
    fake = servers(seconds=0.3)
    result = run_batch(jobs, WORKFLOW, fake.url, tmp_path / "out", log=lambda s: None, per_server=2)
    assert sorted(result.done) == ["job_a", "job_b"]
    for f in ("a", "b"):
        assert sorted(fake.read_at_start[f"job_{f}"].values()) == [f"mp4 of {f}".encode(), f"png of {f}".encode()]
    # an identical re-upload keeps its name (no "(1)" copy) and leaves the stored file as it is
    again = run_batch(jobs, WORKFLOW, fake.url, tmp_path / "out2", log=lambda s: None, per_server=2)
    assert sorted(again.done) == ["job_a", "job_b"] and len(fake.input_dir) == 4


def test_killed_server_job_finishes_elsewhere(files, servers, tmp_path):
    fast = [servers(seconds=0.1) for _ in range(2)]
    slow = servers(seconds=60)  # its job is still running when it is killed
    jobs = many_jobs(files, 6)
    out = tmp_path / "out"
    killer = threading.Thread(target=lambda: (slow.started.wait(20), slow.kill()))
    killer.start()
    logs = []
    result = run_batch(jobs, WORKFLOW, [f.url for f in fast + [slow]], out, log=logs.append, probe_every=0.2)
    killer.join()
    assert slow.queued and not slow.executed  # it took a job and died with it
    (lost,) = slow.queued
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    # every job ran to completion exactly once; the dropped one was sent twice
    assert Counter(j for f in fast for j in f.executed) == Counter({j.name: 1 for j in jobs})
    assert result.attempts[lost] == 2 and result.servers[lost] != slow.url
    assert any(f"[{lost}] {slow.url} dropped the job" in line for line in logs)
    state = json.loads((out / "batch_state.json").read_text())
    assert all(r["status"] == "done" for r in state["jobs"].values())


def test_out_of_memory_goes_to_another_server_but_a_node_error_does_not(files, servers, tmp_path):
    oom = servers(error_type="torch.OutOfMemoryError")
    good = servers(seconds=0.05)
    jobs = many_jobs(files, 4)
    result = run_batch(jobs, WORKFLOW, [oom.url, good.url], tmp_path / "out", log=lambda s: None)
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    assert Counter(good.executed) == Counter({j.name: 1 for j in jobs})
    assert all(result.servers[j.name] == good.url for j in jobs)

    broken = servers(error_type="ValueError")  # the job's own fault: reported, not retried
    result = run_batch(many_jobs(files, 1), WORKFLOW, [broken.url, servers().url], tmp_path / "out2",
                       log=lambda s: None)
    msg = result.failed["job00"]
    assert "ValueError: failed on purpose" in msg and broken.url in msg and result.attempts["job00"] == 1


def test_job_fails_when_its_only_server_dies(files, servers, tmp_path):
    slow = servers(seconds=60)
    threading.Thread(target=lambda: (slow.started.wait(20), slow.kill()), daemon=True).start()
    result = run_batch(many_jobs(files, 2), WORKFLOW, slow.url, tmp_path / "out", log=lambda s: None,
                       probe_every=0.2, server_wait=1.0)
    assert set(result.failed) == {"job00", "job01"}
    assert all(f"no server usable for 1 s (cannot reach ComfyUI at {slow.url}" in m and "connection refused" in m
               for m in result.failed.values()), result.failed
    assert set(result.reasons.values()) == {"no usable server: refused"}


def _cli(files, urls, out):
    jobs = write_jobs(files, [{"name": f"job{i:02d}", "reference": "a.png", "driving": "d.mp4", "seed": i}
                              for i in range(9)])
    wf = files / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    cmd = [sys.executable, "-m", "xdyna_core", "batch", "--jobs", str(jobs), "--workflow", str(wf), "--out", str(out)]
    for u in urls:
        cmd += ["--server", u]
    return cmd


def test_client_killed_and_restarted_skips_done_and_redoes_running(files, servers, tmp_path):
    fakes = [servers(seconds=0.8) for _ in range(3)]
    out = tmp_path / "out"
    cmd = _cli(files, [f.url for f in fakes], out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = out / "batch_state.json"
    deadline = time.monotonic() + 60
    state = {}
    while time.monotonic() < deadline:  # kill -9 once some jobs are done and others running
        if state_file.exists():
            state = json.loads(state_file.read_text())["jobs"]
            statuses = Counter(r["status"] for r in state.values())
            if statuses["done"] >= 2 and statuses["running"] >= 1:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads(state_file.read_text())["jobs"]  # as the client left it (jobs may have ended since)
    done_before = {n for n, r in state.items() if r["status"] == "done"}
    running_before = {n for n, r in state.items() if r["status"] == "running"}
    assert done_before and running_before, state
    queued_before = queued_counts(fakes)

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{9 - len(done_before)} done, {len(done_before)} skipped, 0 failed" in again.stdout
    final = json.loads(state_file.read_text())["jobs"]
    assert all(final[f"job{i:02d}"]["status"] == "done" for i in range(9))
    queued_after = queued_counts(fakes)
    for name in done_before:  # finished jobs are not sent again
        assert queued_after[name] == queued_before[name] == 1
    for name in running_before:  # running ones are redone
        assert queued_after[name] == queued_before[name] + 1
    for i in range(9):
        assert (out / final[f"job{i:02d}"]["outputs"][0]).is_file()


def _terminal_sigint():
    """The child gets Ctrl-C as a terminal process does, whatever the test runner's own signal state
    (a runner started in the background ignores SIGINT, and children inherit an ignored signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def test_ctrl_c_interrupts_running_prompts_and_resumes(files, servers, tmp_path):
    fakes = [servers(seconds=60) for _ in range(2)]
    out = tmp_path / "out"
    cmd = _cli(files, [f.url for f in fakes], out)
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_terminal_sigint)
    queued = 0
    for line in proc.stdout:  # Ctrl-C once both servers run a job
        queued += " queued on " in line
        if queued == 2:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert rest.count("stopped; interrupting ComfyUI at") == 2, rest
    assert all(f.interrupts == 1 for f in fakes)
    state = json.loads((out / "batch_state.json").read_text())["jobs"]
    assert sorted(r["status"] for r in state.values()) == ["interrupted", "interrupted"]
    for f in fakes:
        f.seconds = 0.05
    again = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "9 done, 0 skipped, 0 failed" in again.stdout, again.stdout + again.stderr


def test_wall_time_one_vs_three_servers(files, servers, tmp_path, capsys):
    walls = {}
    for n in (1, 3):
        fakes = [servers(seconds=0.4) for _ in range(n)]
        t0 = time.perf_counter()
        result = run_batch(many_jobs(files, 6), WORKFLOW, [f.url for f in fakes], tmp_path / f"out{n}",
                           log=lambda s: None)
        walls[n] = time.perf_counter() - t0
        assert len(result.done) == 6
    with capsys.disabled():
        print(f"\n6 jobs of 0.4 s: 1 server {walls[1]:.2f} s, 3 servers {walls[3]:.2f} s")
    assert walls[3] < 0.6 * walls[1]


# --- servers that fail: bounded waits, rejoining, reasons, short logs (issue 22) -------------------------

@pytest.fixture
def silent_server():
    """A loopback server that accepts connections, reads nothing and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    stop, held = threading.Event(), []

    def accept():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:  # the 0.1 s accept timeout: look at `stop` again
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", held
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def closed_port_url():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"   # nothing listens there once closed


@pytest.mark.slow
def test_silent_server_fails_its_jobs_within_a_minute_with_default_limits(files, silent_server, tmp_path):
    from xdyna_core.batch.limits import ANSWER_TIMEOUT, SERVER_WAIT

    url, held = silent_server
    logs = []
    t0 = time.monotonic()
    result = run_batch(many_jobs(files, 3), WORKFLOW, url, tmp_path / "out", log=logs.append)
    wall = time.monotonic() - t0
    assert held, "the test server never got a connection"
    assert set(result.failed) == {"job00", "job01", "job02"}
    assert SERVER_WAIT <= wall < 60, wall
    # the limits are shown up front and the reason says which one ran out
    assert f"answer within {ANSWER_TIMEOUT:g} s" in logs[0] and f"after {SERVER_WAIT:g} s" in logs[0], logs[0]
    for message in result.failed.values():
        assert f"GET /system_stats: no answer within {ANSWER_TIMEOUT:g} s" in message, message
    assert set(result.reasons.values()) == {"no usable server: timed out"}
    assert any(line.startswith("failed (no usable server: timed out): 3 (job00, job01, job02)") for line in logs), logs


@pytest.mark.parametrize("how", ["HTTP 503", "refused"])
def test_server_back_after_refusing_gets_jobs_again(files, servers, tmp_path, how):
    good = servers(seconds=0.3)
    back = servers(seconds=0.3, unavailable=how == "HTTP 503")
    if how == "refused":
        back.kill()

    def come_back():  # "refuses for 20 s", scaled to 2 s (probe_every 0.25 s instead of 15 s)
        time.sleep(2.0)
        if how == "refused":
            back.revive()
        back.unavailable = False
    threading.Thread(target=come_back, daemon=True).start()
    jobs = many_jobs(files, 14)   # ~4.2 s of work on the good server alone
    logs = []
    result = run_batch(jobs, WORKFLOW, [good.url, back.url], tmp_path / "out", log=logs.append, probe_every=0.25)
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    assert back.executed, "the server that came back got no job"
    assert Counter(good.executed + back.executed) == Counter({j.name: 1 for j in jobs})
    reason = "HTTP 503" if how == "HTTP 503" else "refused"
    assert any(line.startswith(f"{back.url} set aside ({reason})") for line in logs), logs
    assert f"{back.url} answers again; it gets jobs again" in logs


def test_server_hung_mid_job_is_noticed_by_its_websocket_pings(files, servers, tmp_path):
    good = servers(seconds=0.1)
    hung = servers(seconds=60)   # its job runs when it freezes: no more messages, pings unanswered
    threading.Thread(target=lambda: (hung.started.wait(20), hung.freeze()), daemon=True).start()
    jobs = many_jobs(files, 4)
    logs = []
    t0 = time.monotonic()
    result = run_batch(jobs, WORKFLOW, [good.url, hung.url], tmp_path / "out", log=logs.append, timeout=0.5,
                       probe_every=0.2)
    wall = time.monotonic() - t0
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    (lost,) = hung.queued
    assert result.attempts[lost] == 2 and result.servers[lost] == good.url
    assert wall < 10, wall   # the 60 s job is given up within about 3 x 0.5 s, not at its end
    assert any(line.startswith(f"[{lost}] {hung.url} dropped the job ({hung.url}: the websocket: no answer within 0.5 s")
               for line in logs), logs
    assert any(line.startswith(f"{hung.url} set aside (timed out)") for line in logs), logs


def test_thousand_jobs_without_server_print_a_few_lines(files, tmp_path):
    jobs = write_jobs(files, [{"name": f"job{i:04d}", "reference": "a.png", "driving": "d.mp4"} for i in range(1000)])
    wf = files / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    cmd = [sys.executable, "-m", "xdyna_core", "batch", "--jobs", str(jobs), "--workflow", str(wf),
           "--out", str(tmp_path / "out"), "--server", closed_port_url(), "--server-wait", "1", "--probe-every", "0.2"]
    run = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    assert run.returncode == 1, run.stdout + run.stderr
    assert len(lines) < 30, "\n".join(lines)
    assert "0 done, 0 skipped, 1000 failed" in run.stdout
    assert any(line.startswith("failed (no usable server: refused): 1000 (job0000, job0001") and "995 more" in line
               for line in lines), lines
    state = json.loads((tmp_path / "out" / "batch_state.json").read_text())["jobs"]
    assert len(state) == 1000 and {r["status"] for r in state.values()} == {"failed"}


@pytest.mark.parametrize("status,body,reason", [
    (500, b"<html>Internal Server Error</html>", "HTTP 500"),
    (200, b"<html>proxy login</html>", "not JSON"),
])
def test_summary_names_http_status_or_not_json(files, servers, tmp_path, status, body, reason):
    fake = servers(reply=body, reply_status=status)
    logs = []
    result = run_batch(many_jobs(files, 2), WORKFLOW, fake.url, tmp_path / "out", log=logs.append, probe_every=0.1)
    assert set(result.reasons.values()) == {reason}
    assert result.attempts == {"job00": 3, "job01": 3}   # a server-side failure is retried, then reported
    summary = [line for line in logs if line.startswith("failed (")]
    assert summary == [f"failed ({reason}): 2 (job00, job01)"], logs
    example = logs[logs.index(summary[0]) + 1]
    assert "POST /prompt" in example and body.decode()[6:20] in example and fake.url in example, example
    assert not any("no answer" in line for line in logs), logs


def test_each_progress_line_once(files, servers, tmp_path):
    fake = servers(seconds=0.2)
    logs = []
    run_batch(many_jobs(files, 2), WORKFLOW, fake.url, tmp_path / "out", log=logs.append, progress_every=0)
    for job in ("job00", "job01"):   # the fake sends each value twice, as ComfyUI with previews does
        for i in range(1, 5):
            assert logs.count(f"[{job}] {fake.url} node 3: {i}/4") == 1, logs
    progress = [line for line in logs if line.startswith("progress: ")]
    assert progress and all(a != b for a, b in zip(progress, progress[1:])), progress
