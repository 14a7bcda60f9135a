"""Run a job list over one or several ComfyUI servers: upload, fill, queue, follow, download, resume.

ComfyUI is the engine; this only hands jobs out. Each server gets ``per_server`` jobs at a time
(ComfyUI runs one prompt at a time, so 1 keeps each GPU busy without piling up its queue); the next
job goes to whichever server is free. A job whose server dropped (connection refused or lost, HTTP
5xx, an answer that is not JSON, no answer in time, out of memory) goes back to the queue for
another server, up to ``retries`` times. A job that fails on its own (invalid workflow, a node
error) is reported, not retried.

Servers: all are probed (GET /system_stats) at the start and after each job they drop; one that
does not answer is set aside and probed again every ``probe_every`` seconds for the whole run, and
rejoins when it answers. Every request is bounded (client.py: connect and answer timeouts). When no
server is usable, no job runs, and none has answered (nor a job ended) for ``server_wait`` seconds,
the waiting jobs fail, each with the servers' last errors: a server silent from the start fails its
jobs after ``server_wait`` (tests/core/test_batch.py measures it), not minutes per job.

Progress is kept in ``<out>/batch_state.json`` (state.py), so whatever stops the run a second run
resumes. Results go to ``<out>/<job name>/`` whatever server made them. The log (outcome.py) lists
a few jobs of each class and counts the rest.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import aiohttp

from ..outputs import write_atomic
from .client import ComfyClient, ComfyError, ComfyServer, execution_error
from .jobs import Job, JobListError, fill_workflow
from .limits import ANSWER_TIMEOUT, CONNECT_TIMEOUT, HISTORY_WAIT, PROBE_EVERY, SERVER_WAIT
from .outcome import PROGRESS_EVERY, BatchLog, BatchResult
from .state import STATE_FILE, BatchState

__all__ = ["run_batch", "BatchResult", "STATE_FILE"]

_TICK = 0.05  # how often idle workers and the supervisor look again


def output_files(history: dict) -> List[dict]:
    files = []
    for node_out in history.get("outputs", {}).values():
        for items in node_out.values():
            if isinstance(items, list):
                files += [i for i in items if isinstance(i, dict) and "filename" in i
                          and i.get("type", "output") == "output"]
    return files


@dataclass
class _Server:
    client: ComfyServer
    running: Dict[str, float] = field(default_factory=dict)  # job -> start time
    done: int = 0
    failed: int = 0
    dropped: int = 0
    seconds: List[float] = field(default_factory=list)
    aside: Optional[ComfyError] = None   # why it is set aside; None while it takes jobs
    times_aside: int = 0
    next_probe: float = 0.0
    probing: bool = False

    @property
    def url(self) -> str:
        return self.client.url


class _Batch:
    def __init__(self, jobs, workflow, servers: List[_Server], out_dir: Path, log: BatchLog, job_timeout,
                 per_server, retries, probe_every, server_wait):
        self.workflow, self.servers, self.out_dir, self.log = workflow, servers, out_dir, log
        self.job_timeout, self.per_server, self.retries = job_timeout, per_server, retries
        self.probe_every, self.server_wait = probe_every, server_wait
        self.state = BatchState(out_dir)
        self.result = BatchResult()
        self.pending: deque = deque()
        self.avoid: Dict[str, set] = {}
        self.total = len(jobs)
        self.finished_event = asyncio.Event()
        for job in jobs:
            if self.state.finished(job):
                log.job("skipped (done before)", f"[{job.name}] already done, skipped")
                self.result.skipped.append(job.name)
            else:
                self.pending.append(job)
                self.avoid[job.name] = set()
        self.open = len(self.pending)
        self.started = self.last_job_end = time.monotonic()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _close(self):
        self.open -= 1
        self.progress()
        if self.open == 0:
            self.finished_event.set()

    def progress(self):
        self.log.progress(self.progress_line)

    def progress_line(self) -> str:
        r = self.result
        running = sum(len(s.running) for s in self.servers)
        secs = [x for s in self.servers for x in s.seconds]
        slots = max(1, sum(self.per_server for s in self.servers if s.aside is None))
        eta = ""
        if secs and self.open:
            left = sum(secs) / len(secs) * self.open / slots
            eta = f", ETA {int(left // 60)}:{int(left % 60):02d}"
        per = " | ".join(f"{s.url}: {s.done} done, {len(s.running)} running, {s.failed} failed"
                         + (f" (set aside: {s.aside.reason})" if s.aside else "") for s in self.servers)
        return (f"progress: {len(r.done) + len(r.skipped)}/{self.total} done, {running} running, "
                f"{len(r.failed)} failed{eta} | {per}")

    def summary(self) -> List[str]:
        lines = []
        for s in self.servers:
            mean = f", {sum(s.seconds) / len(s.seconds):.1f} s/job" if s.seconds else ""
            aside = (f", set aside {s.times_aside} time(s)" if s.times_aside else "") + \
                    (f" (still: {s.aside.reason})" if s.aside else "")
            lines.append(f"  {s.url}: {s.done} done, {s.failed} failed, {s.dropped} dropped{mean}{aside}")
        return lines + self.result.summary()

    # -- servers -------------------------------------------------------------------------------
    async def check(self, server: _Server) -> bool:
        """Probe the server now: it takes jobs if it answers, else it is set aside (and probed
        again every ``probe_every`` s). True when it answers."""
        server.probing = True
        try:
            error = await server.client.probe()
        finally:
            server.probing = False
        if error is None:
            if server.aside is not None:
                self.log.event(server.url, f"{server.url} answers again; it gets jobs again")
            server.aside = None
            return True
        if server.aside is None:
            server.times_aside += 1
            self.log.event(server.url, f"{server.url} set aside ({error.reason}): {error}; "
                                       f"probed again every {self.probe_every:g} s")
        server.aside = error
        server.next_probe = time.monotonic() + self.probe_every
        return False

    def last_usable(self) -> float:
        """The last moment a server answered (or a job ended): the no-server wait counts from it."""
        return max([self.last_job_end] + [s.client.last_answer for s in self.servers])

    def _fail_waiting(self):
        """No server usable for ``server_wait`` s: the waiting jobs fail, all in one line."""
        why = "; ".join(f"{s.aside}" for s in self.servers if s.aside)
        reason = "no usable server: " + ", ".join(dict.fromkeys(s.aside.reason for s in self.servers if s.aside))
        message = f"no server usable for {self.server_wait:g} s ({why})"
        jobs = list(self.pending)
        self.pending.clear()
        self.log(f"{len(jobs)} waiting job(s) fail: {message}")
        for job in jobs:
            self.result.fail(job.name, f"job {job.name}: {message}", reason)
            self.state.set(job.name, "failed", save=False, error=message, reason=reason)
        self.state.save()
        for _ in jobs:
            self._close()

    async def supervise(self):
        """Probe the servers set aside when due, fail waiting jobs when no server is usable for
        too long, show a held progress line when its turn comes."""
        probes = set()
        try:
            while not self.finished_event.is_set():
                now = time.monotonic()
                for s in self.servers:
                    if s.aside is not None and not s.probing and now >= s.next_probe:
                        task = asyncio.ensure_future(self.check(s))
                        probes.add(task)
                        task.add_done_callback(probes.discard)
                if (self.pending and all(s.aside is not None for s in self.servers)
                        and not any(s.running for s in self.servers)
                        and now - self.last_usable() >= self.server_wait):
                    self._fail_waiting()
                self.log.flush()
                await asyncio.sleep(_TICK)
        finally:
            for task in list(probes):
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)

    # -- one job on one server -------------------------------------------------------------------
    async def _follow(self, events, prompt_id: str, job: Job, server: _Server, shown: bool):
        while True:
            ev = await events.next()
            if ev is None:
                raise ComfyError(f"{server.url} closed the websocket before the job ended (server gone?)",
                                 server_side=True, reason="connection lost")
            data = ev.get("data", {}) or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = ev.get("type")
            if kind == "progress":
                if shown:
                    self.log.event(job.name, f"[{job.name}] {server.url} node {data.get('node')}: "
                                             f"{data.get('value')}/{data.get('max')}")
            elif kind == "execution_error":
                raise execution_error(data)
            elif kind == "execution_interrupted":
                raise ComfyError(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})", data,
                                 server_side=True, reason="interrupted")
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                                 and data.get("prompt_id") == prompt_id):
                return

    async def _record(self, client: ComfyServer, prompt_id: str, deadline: float) -> dict:
        """The prompt's /history record once ComfyUI has written its status."""
        while True:
            record = await client.history(prompt_id)
            status = record.get("status", {})
            if status.get("completed") or status.get("status_str") in ("success", "error"):
                if status.get("status_str") == "error":
                    msgs = [m for m in status.get("messages", []) if m and m[0] == "execution_error"]
                    raise execution_error(msgs[-1][1] if msgs else {})
                return record
            if time.monotonic() > deadline:
                raise ComfyError(f"{client.url}: no history record for prompt {prompt_id} "
                                 f"within {HISTORY_WAIT:g} s", server_side=True, reason="no history")
            await asyncio.sleep(0.1)

    async def _run(self, job: Job, server: _Server) -> List[str]:
        client = server.client
        ref = await client.upload(job.reference)
        drv = await client.upload(job.driving)
        filled = fill_workflow(self.workflow, job, ref, drv)
        events = await client.open_events()
        try:
            prompt_id = await client.queue(filled, events.client_id)
            self.log.job("queued", f"[{job.name}] queued on {client.url} as {prompt_id}")
            shown = self.log.count["queued"] <= self.log.listed   # node progress for the jobs listed
            self.state.update(job.name, prompt_id=prompt_id)
            try:
                await asyncio.wait_for(self._follow(events, prompt_id, job, server, shown), self.job_timeout)
            except asyncio.TimeoutError:
                try:
                    await client.interrupt()
                except ComfyError:
                    pass
                raise ComfyError(f"no result after {self.job_timeout:g} s on {client.url}; interrupted",
                                 server_side=True, reason="job timeout") from None
        finally:
            await events.close()
        record = await self._record(client, prompt_id, time.monotonic() + HISTORY_WAIT)
        files = output_files(record)
        if not files:
            raise ComfyError("the workflow finished but saved no output file", reason="no output")
        saved = []
        for f in files:
            target = Path(job.name) / f["filename"]
            write_atomic(self.out_dir / target, await client.download(f["filename"], f.get("subfolder", ""), "output"))
            saved.append(str(target))
        return saved

    async def _attempt(self, job: Job, server: _Server):
        attempt = self.result.attempts.get(job.name, 0) + 1
        self.result.attempts[job.name] = attempt
        started = time.monotonic()
        server.running[job.name] = started
        self.state.set(job.name, "running", server=server.url, attempt=attempt)
        try:
            saved = await self._run(job, server)
        except (ComfyError, JobListError, OSError) as e:
            server.running.pop(job.name, None)
            self.last_job_end = time.monotonic()
            reason = e.reason if isinstance(e, ComfyError) else "invalid job" if isinstance(e, JobListError) \
                else "local file"
            where = f"job {job.name} (reference {job.reference.name}, driving {job.driving.name})" + \
                ("" if server.url in str(e) else f" on {server.url}")
            if isinstance(e, ComfyError) and e.server_side:
                server.dropped += 1
                await self.check(server)
                if attempt <= self.retries:
                    self.avoid[job.name].add(server.url)
                    self.log.job(f"sent back ({reason})",
                                 f"[{job.name}] {server.url} dropped the job ({e}); it goes back to the queue "
                                 f"(attempt {attempt} of {self.retries + 1})")
                    self.state.set(job.name, "queued", attempt=attempt, last_error=f"{where}: {e}", reason=reason)
                    self.pending.appendleft(job)
                    self.progress()
                    return
            server.failed += 1
            message = f"{where}: {e}"
            self.result.fail(job.name, message, reason)
            self.state.set(job.name, "failed", error=message, reason=reason, server=server.url, attempt=attempt)
            self.log.job(f"failed ({reason})", f"[{job.name}] FAILED: {message}")
            self._close()
            return
        self.last_job_end = time.monotonic()
        seconds = self.last_job_end - started
        server.running.pop(job.name, None)
        server.done += 1
        server.seconds.append(seconds)
        self.result.done.append(job.name)
        self.result.servers[job.name] = server.url
        self.state.set(job.name, "done", outputs=saved, server=server.url, attempt=attempt,
                       prompt_id=self.state.jobs[job.name].get("prompt_id"), seconds=round(seconds, 1))
        self.log.job("done", f"[{job.name}] done on {server.url}: {', '.join(saved)}")
        self._close()

    # -- hand-out ----------------------------------------------------------------------------------
    def _take(self, server: _Server) -> Optional[Job]:
        others_usable = any(s.aside is None and s is not server for s in self.servers)
        for job in self.pending:
            if server.url not in self.avoid[job.name] or not others_usable:
                self.pending.remove(job)
                return job
        return None

    async def worker(self, server: _Server):
        while not self.finished_event.is_set():
            job = self._take(server) if server.aside is None else None
            if job is None:
                await asyncio.sleep(_TICK)
                continue
            await self._attempt(job, server)

    async def interrupt_running(self):
        for s in self.servers:
            for name in list(s.running):
                self.log(f"[{name}] stopped; interrupting ComfyUI at {s.url}. Run the same command again to resume.")
                self.state.set(name, "interrupted", save=False, server=s.url)
            if s.running:
                try:
                    await asyncio.wait_for(s.client.interrupt(), 5.0)
                except (ComfyError, asyncio.TimeoutError):
                    pass
        self.state.save()


async def _run_batch(jobs, workflow, urls, out_dir, log: BatchLog, job_timeout, per_server, retries, timeout,
                     connect_timeout, probe_every, server_wait):
    async with aiohttp.ClientSession() as session:
        servers = [_Server(ComfyServer(u, session, timeout, connect_timeout)) for u in urls]
        batch = _Batch(jobs, workflow, servers, out_dir, log, job_timeout, per_server, retries, probe_every,
                       server_wait)
        if batch.open == 0:
            return batch.result, batch.summary()
        log(f"{batch.open} job(s) over {len(servers)} server(s); a server that does not connect within "
            f"{connect_timeout:g} s or answer within {timeout:g} s is set aside and probed every {probe_every:g} s; "
            f"waiting jobs fail after {server_wait:g} s with no usable server")
        tasks = []
        try:
            await asyncio.gather(*(batch.check(s) for s in servers))
            tasks = [asyncio.ensure_future(batch.worker(s)) for s in servers for _ in range(per_server)]
            tasks.append(asyncio.ensure_future(batch.supervise()))
            waiter = asyncio.ensure_future(batch.finished_event.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:  # a bug in a worker must surface, not hang the run
                if t.done() and not t.cancelled() and t.exception():
                    raise t.exception()
            waiter.cancel()
        except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels the main task)
            await batch.interrupt_running()
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        batch.progress()
        log.flush(force=True)
        return batch.result, batch.summary()


def _urls(servers) -> List[str]:
    if isinstance(servers, (str, ComfyClient, ComfyServer)):
        servers = [servers]
    urls = [s if isinstance(s, str) else s.url for s in servers]
    if not urls:
        raise ValueError("give at least one ComfyUI server")
    if len(set(u.rstrip("/") for u in urls)) != len(urls):
        raise ValueError(f"a server is listed twice: {', '.join(urls)}")
    return urls


def run_batch(jobs: List[Job], workflow: dict, servers: Union[str, ComfyClient, Sequence], out_dir,
              log: Callable[[str], None] = print, job_timeout: float = 6 * 3600, per_server: int = 1,
              retries: int = 2, timeout: Optional[float] = None, connect_timeout: float = CONNECT_TIMEOUT,
              probe_every: float = PROBE_EVERY, server_wait: float = SERVER_WAIT,
              progress_every: float = PROGRESS_EVERY) -> BatchResult:
    """Run ``jobs`` over ``servers`` (URLs or clients); blocks until every job is done or failed.

    ``timeout``: seconds to wait for the answer to one request (default: the client's, else
    ANSWER_TIMEOUT); ``connect_timeout``: seconds to open a connection; ``probe_every``: seconds
    between probes of a server set aside; ``server_wait``: seconds with no usable server before
    the waiting jobs fail; ``progress_every``: seconds between progress lines."""
    if int(per_server) != per_server or per_server < 1:
        raise ValueError(f"per_server must be a positive integer, got {per_server!r}")
    if int(retries) != retries or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    if timeout is None:
        timeout = getattr(servers, "timeout", ANSWER_TIMEOUT)
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout), ("probe_every", probe_every),
                        ("server_wait", server_wait)):
        if not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch_log = BatchLog(log, progress_every=progress_every)
    result, summary = asyncio.run(_run_batch(jobs, workflow, _urls(servers), out_dir, batch_log, job_timeout,
                                             int(per_server), int(retries), timeout, connect_timeout, probe_every,
                                             server_wait))
    for line in summary:
        log(line)
    return result
