"""`xdyna batch --engine ray` on a two-node Ray cluster on this machine (a head and a worker node,
1 CPU each, loopback ports), the tiny model set and the repository's clips with their pose videos
(no extractor for the driving pose).

What the engine promises, each tested: every job runs exactly once and gives the very file `animate`
gives; a worker process killed mid-job costs a retry on another actor and nothing else, and the state
file says so; a driver stopped (Ctrl-C: exit 130) or killed resumes from the state file, skipping the
jobs done. Every Ray process the tests start is ended (their process groups) even on failure.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, assets_dir

pytest.importorskip("ray")
pytest.importorskip("mediapipe")   # the reference's pose (auto backend)

pytestmark = pytest.mark.slow

# 6 jobs over the 3 clips, each job its own seed; the sizes keep a job at a few seconds on one CPU.
DEFAULTS = {"size": "128x192", "steps": 1, "length": 3, "face": "off"}
START_TIMEOUT = 120     # one `ray start`
RUN_TIMEOUT = 420       # one batch run (6 jobs on 2 one-CPU actors of a shared 2-core machine)
# RAY_AUTH_MODE: a loopback test cluster needs no token (Ray turns tokens on when ~/.ray/auth_token exists)
ENV = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (ray start --block stops its node), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _ray_start(args, log: Path) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen([str(ray), "start", "--block", "--num-cpus", "1", "--num-gpus", "0",
                             "--disable-usage-stats", *args], env=ENV, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _nodes_alive(address: str) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
            f"print(sum(1 for n in ray.nodes() if n['Alive']))")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a worker node (1 CPU each); its address. Both process groups end afterwards."""
    root = Path(f"/tmp/xray{os.getpid()}")  # short: Ray's unix socket paths must stay under 108 bytes
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("ray_logs")
    procs = []
    try:
        procs.append(_ray_start(["--head", "--port", str(port), "--include-dashboard", "false",
                                 "--temp-dir", str(root)], logs / "head.log"))
        deadline = time.monotonic() + START_TIMEOUT
        while _nodes_alive(address) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()[-2000:]
            time.sleep(2)
        procs.append(_ray_start(["--address", address], logs / "worker.log"))
        while _nodes_alive(address) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(2)
        yield address
    finally:
        for p in reversed(procs):
            _end_group(p)
        subprocess.run(["rm", "-rf", str(root)], timeout=60)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from xdyna_core.loading.tiny import write_tiny_set

    root = tmp_path_factory.mktemp("models")
    write_tiny_set(root, seed=3)
    return root


def _jobs():
    a = assets_dir()
    clips = [("example_1.png", "example_1_driving_1.mp4", "example_1_pose_1.mp4"),
             ("example_2.jpg", "example_2_driving_2.mp4", "example_2_pose_2.mp4"),
             ("example_3.png", "example_3_driving_3.mp4", "example_3_pose_3.mp4")]
    jobs = []
    for k in range(6):
        ref, drv, pose = clips[k % 3]
        jobs.append({"name": f"job{k}", "reference": str(a / "reference_image" / ref),
                     "driving": str(a / "driving_video" / drv), "pose": str(a / "poses" / pose), "seed": 100 + k})
    return jobs


@pytest.fixture(scope="module")
def job_list(tmp_path_factory):
    path = tmp_path_factory.mktemp("jobs") / "jobs.json"
    path.write_text(json.dumps({"defaults": DEFAULTS, "jobs": _jobs()}))
    return path


@pytest.fixture(scope="module")
def expected(models, tmp_path_factory):
    """Each job's result from `xdyna animate` with the same inputs, options and seed: job -> bytes."""
    out = tmp_path_factory.mktemp("animate")
    results = {}
    for job in _jobs():
        target = out / f"{job['name']}.mp4"
        r = subprocess.run([sys.executable, "-m", "xdyna_core", "animate", "--reference", job["reference"],
                            "--driving", job["driving"], "--pose", job["pose"], "--seed", str(job["seed"]),
                            "--models", str(models), "--out", str(target), "--quiet",
                            *[f"--{k}={v}" for k, v in DEFAULTS.items()]],
                           cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        results[job["name"]] = target.read_bytes()
    return results


def _batch(job_list, models, out, address, *extra):
    return subprocess.Popen([sys.executable, "-m", "xdyna_core", "batch", "--engine", "ray", "--address", address,
                             "--jobs", str(job_list), "--models", str(models), "--out", str(out), *extra],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc, timeout=RUN_TIMEOUT):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"batch still running after {timeout} s:\n{out}\n{err[-3000:]}")
    return proc.returncode, out, err


def _state(out) -> dict:
    try:
        return json.loads((Path(out) / "batch_state.json").read_text())["jobs"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}


def _wait_state(out, proc, predicate, timeout=RUN_TIMEOUT, poll=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(out)
        found = predicate(state)
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"batch ended (rc {proc.returncode}) first: {proc.stdout.read()}\n{proc.stderr.read()[-3000:]}")
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"state never got there within {timeout} s: {state}")


def _assert_results(out, expected):
    for name, data in expected.items():
        got = (Path(out) / name / f"{name}.mp4").read_bytes()
        assert got == data, f"{name}: the batch's result differs from animate's"


def test_each_job_once_and_bit_identical_to_animate(cluster, models, job_list, expected, tmp_path):
    # plus a job that fails on its own in the actor (a 2-frame pose video for 3 frames): reported once
    from xdyna_core.preprocess.video import write_video

    short_pose = tmp_path / "short_pose.mp4"
    write_video(short_pose, np.zeros((2, 192, 128, 3), np.uint8), 8.0)
    jobs = json.loads(job_list.read_text())
    jobs["jobs"].append({**jobs["jobs"][0], "name": "short", "pose": str(short_pose)})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    rc, out, err = _finish(_batch(tmp_path / "jobs.json", models, tmp_path / "out", cluster))
    assert rc == 1, out + err[-3000:]
    state = _state(tmp_path / "out")
    assert {n: (r["status"], r["attempt"]) for n, r in state.items()} == \
        {**{n: ("done", 1) for n in expected}, "short": ("failed", 1)}
    assert state["short"]["reason"] == "bad input" and "pose video gives 2 frames" in state["short"]["error"]
    assert "retries" not in state["short"] and out.count("[short] FAILED") == 1
    tmp_path = tmp_path / "out"
    done_lines = [line for line in out.splitlines() if " done on actor " in line]
    assert sorted(line.split("]")[0][1:] for line in done_lines) == sorted(expected)   # one line per job
    assert len({r["worker"] for r in state.values()}) == 2          # both actors took jobs
    assert "batch: 100%" in err and "7/7" in err                      # the driver's one bar
    _assert_results(tmp_path, expected)


def test_killed_worker_job_retried_on_another_actor(cluster, models, job_list, expected, tmp_path):
    proc = _batch(job_list, models, tmp_path, cluster, "--transfer=shared")

    def running_with_pid(state):
        for name, rec in state.items():
            if rec["status"] == "running" and rec.get("pid"):
                try:   # the actor's process title names the method it runs (Ray sets it)
                    title = Path(f"/proc/{rec['pid']}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"JobWorker.run" in title:
                    return name, rec["pid"]
        return None

    victim, pid = _wait_state(tmp_path, proc, running_with_pid, poll=0.05)
    os.kill(pid, signal.SIGKILL)
    rc, out, err = _finish(proc)
    assert rc == 0, out + err[-3000:]
    state = _state(tmp_path)
    assert all(r["status"] == "done" for r in state.values()) and set(state) == set(expected)
    rec = state[victim]
    assert rec["attempt"] == 2 and len(rec["retries"]) == 1, (pid, state, out)
    assert rec["retries"][0]["pid"] == pid and "Error" in rec["retries"][0]["error"]
    assert rec["pid"] != pid                                          # finished by another process
    assert all(r["attempt"] == 1 for n, r in state.items() if n != victim)
    assert f"[{victim}] actor" in out and "died" in out
    _assert_results(tmp_path, expected)                               # the retried job too


def test_driver_stopped_then_killed_resumes(cluster, models, job_list, expected, tmp_path):
    def done(k):
        return lambda state: sum(r["status"] == "done" for r in state.values()) >= k

    proc = _batch(job_list, models, tmp_path, cluster)
    _wait_state(tmp_path, proc, done(1))
    os.killpg(proc.pid, signal.SIGINT)                               # Ctrl-C
    rc, out, err = _finish(proc, timeout=120)
    assert rc == 130, out + err[-3000:]
    first = {n for n, r in _state(tmp_path).items() if r["status"] == "done"}
    assert first and all(r["status"] in ("done", "interrupted") for r in _state(tmp_path).values())

    proc = _batch(job_list, models, tmp_path, cluster)
    _wait_state(tmp_path, proc, done(len(first) + 1))
    os.killpg(proc.pid, signal.SIGKILL)                              # no goodbye at all
    proc.communicate(timeout=60)
    second = {n for n, r in _state(tmp_path).items() if r["status"] == "done"}
    mtimes = {n: (tmp_path / n / f"{n}.mp4").stat().st_mtime_ns for n in second}

    rc, out, err = _finish(_batch(job_list, models, tmp_path, cluster))
    assert rc == 0, out + err[-3000:]
    assert {line.split("]")[0][1:] for line in out.splitlines() if "already done, skipped" in line} == second
    assert {line.split("]")[0][1:] for line in out.splitlines() if " done on actor " in line} == set(expected) - second
    assert all(r["status"] == "done" for r in _state(tmp_path).values())
    assert {n: (tmp_path / n / f"{n}.mp4").stat().st_mtime_ns for n in second} == mtimes   # not run again
    _assert_results(tmp_path, expected)
