"""`xdyna batch --engine ray`: the job list through the headless job on a Ray cluster, no ComfyUI.

One actor per GPU (or per ``cpus_per_actor`` CPUs on a cluster without GPUs) loads the model set once
and runs jobs one after another; the driver hands a job to each free actor. Inputs and results move
through Ray's object store (``transfer="store"``: the driver reads the inputs and writes the results)
or a shared folder (``"shared"``: the actors read the inputs and write ``out`` themselves). Either
way a result appears whole at ``out/<job>/<job>.mp4`` (written to a temporary name, then renamed).

Faults, and what becomes of the job:

* its actor's process or node dies mid-job: Ray restarts the actor (at most ``max_restarts`` times
  per actor) and the driver gives the job to a free actor, another one when there is one, at most
  ``retries`` times; the state file keeps each lost attempt under ``retries``;
* the job fails on its own (its inputs or options: an XDynaError, a ValueError, an OSError): reported
  once, never retried; any other error of the job is reported as ``error``, not retried either;
* it runs past ``job_timeout``: its actor is killed (Ray restarts it) and the job fails (timed out);
* Ctrl-C on the driver: running jobs are recorded ``interrupted``, the actors end, KeyboardInterrupt
  propagates (the command line exits 130). The state file is batch/state.py's, the ComfyUI engine's
  too: a second run of either engine skips the jobs done and runs the rest.

Ray is imported only here, only when this engine runs (:func:`import_ray`).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import XDynaError
from .jobs import Job
from .outcome import PROGRESS_EVERY, BatchLog, BatchResult
from .state import BatchState

INSTALL_HINT = "pip install \".[ray]\" in the ComfyUI-XDyna folder (or pip install \"ray>=2.40\")"
#: seconds the driver waits for a result before it looks at timeouts and the bar again
_TICK = 0.5


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(f"--engine ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def result_path(name: str) -> str:
    """Where a job's result lands, relative to the out folder (one folder per job)."""
    return f"{name}/{name}.mp4"


@dataclass
class RaySettings:
    address: Optional[str] = None         # None: a local Ray for this run; "auto"; "HOST:PORT"; "ray://HOST:PORT"
    actors: Optional[int] = None          # None: one per GPU (per gpus_per_actor), else per cpus_per_actor CPUs
    cpus_per_actor: float = 1.0
    gpus_per_actor: Optional[float] = None  # None: 1 when the cluster has GPUs, else 0
    transfer: str = "store"               # store | shared
    retries: int = 2                      # times a job whose actor died is handed out again
    max_restarts: int = 3                 # times Ray restarts one actor
    job_timeout: float = 6 * 3600


class JobWorker:
    """The actor (made remote by :func:`run_ray_batch`): the model set loaded once, then one job per call."""

    def __init__(self, models_dir: str, load_opts, face: bool, prompts: Sequence[str]):
        from ..cli.animate import _is_random_set, _load
        from ..job_checks import check_models

        self.bundle = _load(check_models(models_dir, face, tuple(prompts)), load_opts, quiet=True)
        self.random_set = _is_random_set(models_dir)

    def where(self) -> dict:
        import ray

        return {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}

    def run(self, name: str, opts, inputs: Dict[str, Tuple[str, object]], out_dir: str, transfer: str) -> dict:
        """Run one job. ``inputs``: role -> (file name, object ref) for "store", role -> (path, None) for
        "shared". Returns where it ran, and the result's bytes for "store"."""
        from ..cli.animate import animate_to_file

        t0 = time.perf_counter()
        if transfer == "shared":
            paths = {role: path for role, (path, _) in inputs.items()}
            self._animate(paths, opts, Path(out_dir) / result_path(name), animate_to_file)
            data = None
        else:
            import ray

            with tempfile.TemporaryDirectory(prefix="xdyna-ray-") as tmp:
                paths = {}
                for role, (file_name, ref) in inputs.items():
                    paths[role] = Path(tmp) / role / file_name
                    paths[role].parent.mkdir()
                    paths[role].write_bytes(ray.get(ref))
                out = Path(tmp) / "result.mp4"
                self._animate(paths, opts, out, animate_to_file)
                data = out.read_bytes()
        return {**self.where(), "data": data, "seconds": time.perf_counter() - t0}

    def _animate(self, paths, opts, out, animate_to_file):
        opts = replace(opts, pose_video=str(paths["pose"]) if "pose" in paths else None,
                       keypoints=str(paths["keypoints"]) if "keypoints" in paths else None)
        animate_to_file(str(paths["reference"]), str(paths["driving"]), self.bundle, opts, out,
                        random_set=self.random_set)


def _inputs(job: Job, opts) -> Dict[str, str]:
    files = {"reference": job.reference, "driving": job.driving}
    if opts.pose_video:
        files["pose"] = opts.pose_video
    if opts.keypoints:
        files["keypoints"] = opts.keypoints
    return {role: str(p) for role, p in files.items()}


def _plan(ray, settings: RaySettings, jobs: int) -> Tuple[int, float]:
    """(actors, GPUs per actor) for the cluster's resources."""
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    per_gpu = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    if per_gpu and per_gpu > gpus:
        raise XDynaError(f"--gpus-per-actor {per_gpu:g}: the Ray cluster has {gpus:g} GPU(s)")
    if settings.actors:
        n = settings.actors
    elif per_gpu:
        n = int(gpus // per_gpu)
    else:
        n = int(float(res.get("CPU", 1)) // settings.cpus_per_actor)
    if n < 1:
        raise XDynaError(f"--cpus-per-actor {settings.cpus_per_actor:g}: the Ray cluster has "
                         f"{res.get('CPU', 0):g} CPU(s)")
    return min(n, jobs), per_gpu


class _Run:
    def __init__(self, ray, prepared, models_dir, out_dir: Path, settings: RaySettings, log: BatchLog):
        self.ray, self.settings, self.out_dir, self.log = ray, settings, out_dir, log
        self.models_dir = str(models_dir)
        self.state = BatchState(out_dir)
        self.result = BatchResult()
        self.todo: deque = deque()
        for job, opts in prepared:
            if self.state.finished(job):
                log.job("skipped (done before)", f"[{job.name}] already done, skipped")
                self.result.skipped.append(job.name)
            else:
                self.todo.append((job, opts))
        self.running: Dict[object, tuple] = {}          # result ref -> (job, opts, actor, start, attempt)
        self.where_refs: Dict[object, int] = {}         # where() ref -> actor
        self.where: Dict[int, dict] = {}
        self.lost: Dict[str, List[dict]] = {}           # job -> its attempts lost with their worker
        self.avoid: Dict[str, set] = {}
        self.timed_out: set = set()
        self.deaths: Dict[int, int] = {}
        self.actors: list = []
        self.idle: deque = deque()
        self.alive: set = set()
        self.restarting: Dict[int, float] = {}         # actor -> when to ask whether it is back (0: asked)
        self.last_loss = ""
        self.objects: Dict[str, object] = {}            # input path -> object ref (each file put once)
        self.bar = None

    # -- actors ----------------------------------------------------------------------------------
    def start_actors(self, prepared):
        n, per_gpu = _plan(self.ray, self.settings, len(self.todo))
        opts = [o for _, o in prepared]
        load_opts = replace(opts[0], quiet=True)          # device/precision/weights/memory: the batch's
        prompts = sorted({p for o in opts for p in (o.prompt, o.negative_prompt) if p})
        worker = self.ray.remote(JobWorker).options(num_cpus=self.settings.cpus_per_actor, num_gpus=per_gpu,
                                                    max_restarts=self.settings.max_restarts, max_task_retries=0)
        self.actors = [worker.remote(self.models_dir, load_opts, any(o.face for o in opts), prompts)
                       for _ in range(n)]
        for i, actor in enumerate(self.actors):
            self.where_refs[actor.where.remote()] = i
        self.idle.extend(range(n))
        self.alive = set(range(n))
        self.log(f"{len(self.todo)} job(s) on {n} actor(s) ({self.settings.cpus_per_actor:g} CPU"
                 + (f", {per_gpu:g} GPU" if per_gpu else "") + " each; each loads the model set once), "
                 f"{self.settings.transfer} transfer; a job whose worker dies goes to another actor up to "
                 f"{self.settings.retries} time(s)")

    def label(self, i: int) -> str:
        w = self.where.get(i)
        return f"actor {i}" + (f" ({w['node']}, pid {w['pid']})" if w else "")

    # -- hand-out --------------------------------------------------------------------------------
    def hand_out(self):
        while self.todo and self.idle:
            job, opts = self.todo[0]
            avoid = self.avoid.get(job.name, set())
            i = next((a for a in self.idle if a not in avoid), self.idle[0])
            self.idle.remove(i)
            self.todo.popleft()
            attempt = self.result.attempts.get(job.name, 0) + 1
            self.result.attempts[job.name] = attempt
            ref = self.actors[i].run.remote(job.name, opts, self.job_inputs(job, opts), str(self.out_dir.resolve()),
                                            self.settings.transfer)
            self.running[ref] = (job, opts, i, time.monotonic(), attempt)
            self.state.set(job.name, "running", attempt=attempt, **self.worker_fields(i),
                           **({"retries": self.lost[job.name]} if job.name in self.lost else {}))

    def worker_fields(self, i: int) -> dict:
        w = self.where.get(i, {})
        return {"worker": f"actor {i}", **({"node": w["node"], "pid": w["pid"]} if w else {})}

    def job_inputs(self, job: Job, opts) -> dict:
        files = _inputs(job, opts)
        if self.settings.transfer == "shared":
            return {role: (path, None) for role, path in files.items()}
        for path in files.values():
            if path not in self.objects:
                self.objects[path] = self.ray.put(Path(path).read_bytes())
        return {role: (Path(path).name, self.objects[path]) for role, path in files.items()}

    # -- results ---------------------------------------------------------------------------------
    def on_where(self, ref):
        """An actor answered (it is up: back to work after a restart) or is gone for good."""
        ray = self.ray
        i = self.where_refs.pop(ref)
        try:
            self.where[i] = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:    # still restarting: ask again shortly
            self.restarting[i] = time.monotonic() + _TICK
            return
        except ray.exceptions.RayError as e:            # dead for good (restarts spent, or its constructor raised)
            self.alive.discard(i)
            self.restarting.pop(i, None)
            self.last_loss = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self.log(f"actor {i} is gone for good: {self.last_loss}")
            return
        if self.restarting.pop(i, None) is not None:
            self.idle.append(i)
            self.log(f"{self.label(i)} is back (restarted)")
        for job, _, a, _, _ in self.running.values():
            if a == i:
                self.state.update(job.name, **self.worker_fields(i))

    def probe_restarting(self):
        now = time.monotonic()
        for i, at in list(self.restarting.items()):
            if at and at <= now and i not in self.where_refs.values():
                self.restarting[i] = 0.0
                self.where_refs[self.actors[i].where.remote()] = i

    def advance(self):
        self.bar.status(self.status())
        self.bar.update()

    def fail(self, job: Job, i: Optional[int], message: str, reason: str, attempt: int):
        self.result.fail(job.name, message, reason)
        self.state.set(job.name, "failed", error=message, reason=reason, attempt=attempt,
                       **(self.worker_fields(i) if i is not None else {}),
                       **({"retries": self.lost[job.name]} if job.name in self.lost else {}))
        self.log.job(f"failed ({reason})", f"[{job.name}] FAILED: {message}")
        self.advance()

    def on_result(self, ref):
        ray = self.ray
        job, opts, i, started, attempt = self.running.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayTaskError as e:          # the job itself raised: reported once
            cause = getattr(e, "cause", None) or e
            reason = "bad input" if isinstance(cause, (XDynaError, ValueError, OSError)) else "error"
            self.idle.append(i)
            first = str(cause).strip().splitlines()
            self.fail(job, i, f"job {job.name}: {first[0] if first else type(cause).__name__}", reason, attempt)
            return
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError) as e:     # its process or node died
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if job.name in self.timed_out:
                self.actor_lost(i, e)
                self.fail(job, i, f"job {job.name}: no result after {self.settings.job_timeout:g} s", "timed out",
                          attempt)
                return
            self.lost.setdefault(job.name, []).append({"attempt": attempt, **self.worker_fields(i),
                                                       "error": f"{type(e).__name__}: {first}"})
            died = self.label(i)
            self.actor_lost(i, e)
            self.avoid.setdefault(job.name, set()).add(i)
            if attempt <= self.settings.retries:
                self.todo.appendleft((job, opts))
                self.state.set(job.name, "queued", attempt=attempt, retries=self.lost[job.name],
                               reason="worker lost")
                self.log.job("sent back (worker lost)", f"[{job.name}] {died} died ({type(e).__name__}); "
                             f"the job goes to another actor (attempt {attempt} of {self.settings.retries + 1})")
            else:
                self.fail(job, i, f"job {job.name}: its worker died {attempt} time(s); last: {first}",
                          "worker lost", attempt)
            return
        saved = result_path(job.name)
        if out["data"] is not None:
            from ..outputs import write_atomic

            write_atomic(self.out_dir / saved, out["data"])
        self.where[i] = {"node": out["node"], "pid": out["pid"]}
        self.idle.append(i)
        seconds = time.monotonic() - started
        self.result.done.append(job.name)
        self.result.servers[job.name] = self.label(i)
        self.state.set(job.name, "done", outputs=[saved], attempt=attempt, seconds=round(seconds, 1),
                       **self.worker_fields(i), **({"retries": self.lost[job.name]} if job.name in self.lost else {}))
        retried = f" (attempt {attempt})" if attempt > 1 else ""
        self.log.job("done", f"[{job.name}] done on {self.label(i)} in {seconds:.1f} s{retried}: {saved}")
        self.advance()

    def actor_lost(self, i: int, error):
        """Its process or node died mid-job (Ray reports ActorUnavailableError while it restarts the
        actor, ActorDiedError when it will not): it gets jobs again once it answers (:meth:`on_where`)."""
        self.where.pop(i, None)
        self.last_loss = (str(error).strip().splitlines() or [type(error).__name__])[0]
        self.deaths[i] = self.deaths.get(i, 0) + 1
        if i in self.alive:   # ask whether it is back (a dead one answers ActorDiedError: gone for good)
            self.restarting[i] = time.monotonic()

    def check_timeouts(self):
        now = time.monotonic()
        for job, _, i, started, _ in list(self.running.values()):
            if job.name not in self.timed_out and now - started > self.settings.job_timeout:
                self.timed_out.add(job.name)
                self.ray.kill(self.actors[i], no_restart=False)

    def fail_unplaceable(self):
        """No actor left: the waiting jobs fail (they would wait forever)."""
        while self.todo:
            job, _ = self.todo.popleft()
            self.fail(job, None, f"job {job.name}: no actor left ({self.last_loss})", "no worker",
                      self.result.attempts.get(job.name, 0))

    def status(self) -> str:
        return f"done {len(self.result.done)}, running {len(self.running)}, failed {len(self.result.failed)}"

    def loop(self):
        from ..progress import Progress

        self.bar = Progress(len(self.todo), "batch", unit="job")
        try:
            while self.todo or self.running:
                self.idle = deque(a for a in self.idle if a in self.alive)
                if not self.alive:
                    self.fail_unplaceable()
                    break
                self.hand_out()
                self.bar.status(self.status())
                refs = list(self.running) + list(self.where_refs)
                if not refs:                      # only actors restarting, not asked yet
                    time.sleep(_TICK)
                ready, _ = self.ray.wait(refs, num_returns=1, timeout=_TICK) if refs else ([], [])
                for ref in ready:
                    if ref in self.where_refs:
                        self.on_where(ref)
                    else:
                        self.on_result(ref)
                self.check_timeouts()
                self.probe_restarting()
            self.bar.status(self.status())
        except KeyboardInterrupt:
            for job, _, i, _, _ in self.running.values():
                self.log(f"[{job.name}] stopped on {self.label(i)}. Run the same command again to resume.")
                self.state.set(job.name, "interrupted", save=False, **self.worker_fields(i))
            self.state.save()
            raise
        finally:
            self.bar.close()

    def summary(self) -> List[str]:
        lines = []
        for i in range(len(self.actors)):
            done = [n for n, s in self.result.servers.items() if s.startswith(f"actor {i} ") or s == f"actor {i}"]
            lines.append(f"  actor {i}: {len(done)} done, restarted {self.deaths.get(i, 0)} time(s)")
        return lines + self.result.summary()


def run_ray_batch(prepared: List[tuple], models_dir, out_dir, settings: RaySettings = RaySettings(),
                  log: Callable[[str], None] = print, progress_every: float = PROGRESS_EVERY) -> BatchResult:
    """Run ``prepared`` ((Job, AnimateOptions) pairs, checked: cli/batch.py prepare_ray_jobs) on Ray;
    blocks until every job is done or failed. Jobs done by an earlier run of the same ``out_dir``
    (either engine) are skipped."""
    ray = import_ray()
    if settings.transfer not in ("store", "shared"):
        raise ValueError(f"transfer must be store or shared, got {settings.transfer!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_log = BatchLog(log, listed=sys.maxsize, progress_every=progress_every)   # a line per finished job
    run = _Run(ray, prepared, models_dir, out_dir, settings, batch_log)
    if run.todo:
        ray.init(address=settings.address, log_to_driver=False, configure_logging=False)
        try:
            run.start_actors(prepared)
            run.loop()
        finally:
            for actor in run.actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:   # already gone, or the cluster unreachable: nothing left to end
                    pass
            ray.shutdown()
    for line in run.summary():
        log(line)
    return run.result
