"""Jobs per minute of `xdyna batch --engine ray` with 1 and 2 actors against a plain `animate` loop,
on the tiny model set (CPU), and the overhead per job the engine adds.

    OMP_NUM_THREADS=1 python bench/bench_ray_batch.py --jobs 6           # local Ray started per run

Three ways to run the same N jobs (the repository's clips with their pose videos, 128x192, 1 step,
3 frames, face off, a seed per job), each timed as a whole (wall clock, what a user waits):

* ``loop``: ``xdyna animate`` once per job (a process per job: load the models, run, exit);
* ``loop-in-process``: one process, the models loaded once, then ``animate_to_file`` per job (the
  lower bound of what any engine can do with one worker);
* ``ray xN``: ``xdyna batch --engine ray --actors N`` (Ray started and stopped by the command).

Overhead per job = (ray x1 - loop-in-process) / N: Ray's start, the actor's start, the object store
round trips. Ratios are printed; numbers depend on the machine's load (a shared 2-core machine
gives noisy seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OPTS = {"size": "128x192", "steps": 1, "length": 3, "face": "off"}


def jobs(n: int):
    a = REPO / "tests" / "data" / "assets"
    clips = [("example_1.png", "example_1_driving_1.mp4", "example_1_pose_1.mp4"),
             ("example_2.jpg", "example_2_driving_2.mp4", "example_2_pose_2.mp4"),
             ("example_3.png", "example_3_driving_3.mp4", "example_3_pose_3.mp4")]
    return [{"name": f"job{k}", "reference": str(a / "reference_image" / clips[k % 3][0]),
             "driving": str(a / "driving_video" / clips[k % 3][1]), "pose": str(a / "poses" / clips[k % 3][2]),
             "seed": 100 + k} for k in range(n)]


def timed(cmd, env):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=6)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(REPO))
    from xdyna_core.loading.tiny import write_tiny_set

    work = Path(tempfile.mkdtemp(prefix="xdyna-bench-ray-"))
    models = work / "models"
    write_tiny_set(models, seed=3)
    job_list = jobs(args.jobs)
    (work / "jobs.json").write_text(json.dumps({"defaults": OPTS, "jobs": job_list}))
    flags = [f"--{k}={v}" for k, v in OPTS.items()]
    seconds = {}

    def loop():
        for j in job_list:
            subprocess.run([sys.executable, "-m", "xdyna_core", "animate", "--reference", j["reference"],
                            "--driving", j["driving"], "--pose", j["pose"], "--seed", str(j["seed"]), "--models",
                            str(models), "--out", str(work / "loop" / f"{j['name']}.mp4"), "--quiet", *flags],
                           cwd=REPO, env=env, check=True, capture_output=True, timeout=600)

    t0 = time.perf_counter()
    loop()
    seconds["loop"] = time.perf_counter() - t0

    code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
t0 = time.perf_counter()
from xdyna_core.cli import build_parser
from xdyna_core.cli.animate import _load, _options, _is_random_set, animate_to_file
from xdyna_core.job_checks import check_models
jobs = json.loads(open({str(work / 'jobs.json')!r}).read())["jobs"]
bundle = None
for j in jobs:
    a = build_parser().parse_args(["animate", "--reference", j["reference"], "--driving", j["driving"], "--pose",
        j["pose"], "--seed", str(j["seed"]), "--models", {str(models)!r}, "--out", "x.mp4", "--quiet", *{flags!r}])
    opts = _options(a)
    if bundle is None:
        bundle = _load(check_models(a.models, opts.face), opts, True)
    animate_to_file(j["reference"], j["driving"], bundle, opts, {str(work)!r} + "/inproc/" + j["name"] + ".mp4",
                    random_set=True)
print(time.perf_counter() - t0)
"""
    seconds["loop-in-process"] = timed([sys.executable, "-c", code], env)
    for n in (1, 2):
        seconds[f"ray x{n}"] = timed([sys.executable, "-m", "xdyna_core", "batch", "--engine", "ray", "--actors",
                                      str(n), "--jobs", str(work / "jobs.json"), "--models", str(models),
                                      "--out", str(work / f"ray{n}")], env)
    import statistics

    per_job = {n: statistics.median(r["seconds"] for r in json.loads((work / f"ray{n}" / "batch_state.json")
                                                                       .read_text())["jobs"].values())
               for n in (1, 2)}
    same = all((work / "ray2" / j["name"] / f"{j['name']}.mp4").read_bytes() ==
               (work / "loop" / f"{j['name']}.mp4").read_bytes() for j in job_list)
    n = args.jobs
    print(f"{n} jobs (tiny set, {OPTS}), {os.cpu_count()} CPU(s), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    for k, s in seconds.items():
        print(f"  {k:16s} {s:7.1f} s  {n / s * 60:6.1f} jobs/min")
    base = seconds["loop-in-process"]
    print(f"  ray x1 / loop-in-process: {seconds['ray x1'] / base:.2f}x time; overhead per job "
          f"{(seconds['ray x1'] - base) / n:.1f} s")
    print(f"  ray x2 / ray x1: {seconds['ray x1'] / seconds['ray x2']:.2f}x jobs/min; ray x1 / loop (process per "
          f"job): {seconds['loop'] / seconds['ray x1']:.2f}x jobs/min")
    print(f"  median job time inside the run (hand-out to result on the driver, Ray's start excluded): "
          f"ray x1 {per_job[1]:.2f} s, ray x2 {per_job[2]:.2f} s; loop-in-process {base / n:.2f} s per job "
          f"(its model load included)")
    print(f"  results bit-identical to animate's: {same}")


if __name__ == "__main__":
    main()
