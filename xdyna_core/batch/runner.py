"""Run a job list over one or several ComfyUI servers: upload, fill, queue, follow, download, resume.

ComfyUI is the engine; this only hands jobs out. Each server gets ``per_server`` jobs at a time
(ComfyUI runs one prompt at a time, so 1 keeps each GPU busy without piling up its queue); the next
job goes to whichever server is free. A job whose server dropped (connection lost, HTTP 5xx, no
result in time, out of memory) goes back to the queue for another server, up to ``retries`` times;
the dropped server is probed before it gets work again and given up after a few failed probes.
A job that fails on its own (invalid workflow, a node error) is reported, not retried.

Progress is kept in ``<out>/batch_state.json``, written atomically (temporary file, fsync, rename)
whenever a job starts or ends, so whatever stops the run (Ctrl-C, a dying server, the client
killed) a second run resumes: jobs done with their files present are skipped, the others (running,
interrupted, failed) are run again. Results go to ``<out>/<job name>/`` whatever server made them.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import aiohttp

from ..outputs import write_atomic
from .client import ComfyClient, ComfyError, ComfyServer, execution_error
from .jobs import Job, JobListError, fill_workflow

STATE_FILE = "batch_state.json"
#: seconds between liveness probes of a dropped server, and probes before it is given up
PROBE_WAIT = 2.0
PROBE_LIMIT = 3


@dataclass
class BatchResult:
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    servers: Dict[str, str] = field(default_factory=dict)  # job -> server that finished it
    attempts: Dict[str, int] = field(default_factory=dict)  # job -> times it was sent to a server

    @property
    def ok(self) -> bool:
        return not self.failed


def load_state(out_dir: Path) -> dict:
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        return {"jobs": {}}
    try:
        state = json.loads(path.read_text())
    except ValueError:
        raise JobListError(f"{path} is damaged; delete it to start the batch afresh") from None
    if not isinstance(state, dict) or not isinstance(state.get("jobs"), dict):
        raise JobListError(f"{path} is not a batch state file; delete it to start the batch afresh")
    return state


def save_state(out_dir: Path, state: dict):
    """Write the state so that a crash at any moment leaves either the old or the new file."""
    write_atomic(Path(out_dir) / STATE_FILE, json.dumps(state, indent=1))


def finished(state: dict, job: Job, out_dir: Path) -> bool:
    rec = state["jobs"].get(job.name)
    return bool(rec and rec.get("status") == "done" and rec.get("outputs")
                and all((Path(out_dir) / f).exists() for f in rec["outputs"]))


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
    down: bool = False
    gone: bool = False

    @property
    def url(self) -> str:
        return self.client.url


class _Batch:
    def __init__(self, jobs, workflow, servers: List[_Server], out_dir: Path, log, job_timeout, per_server,
                 retries):
        self.workflow, self.servers, self.out_dir, self.log = workflow, servers, out_dir, log
        self.job_timeout, self.per_server, self.retries = job_timeout, per_server, retries
        self.state = load_state(out_dir)
        self.result = BatchResult()
        self.pending: deque = deque()
        self.avoid: Dict[str, set] = {}
        self.total = len(jobs)
        self.finished_event = asyncio.Event()
        for job in jobs:
            if finished(self.state, job, out_dir):
                log(f"[{job.name}] already done, skipped")
                self.result.skipped.append(job.name)
            else:
                self.pending.append(job)
                self.avoid[job.name] = set()
        self.open = len(self.pending)
        self.started = time.monotonic()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _set(self, job: Job, record: dict):
        self.state["jobs"][job.name] = record
        save_state(self.out_dir, self.state)

    def _close(self, job: Job):
        self.open -= 1
        self.progress()
        if self.open == 0:
            self.finished_event.set()

    def progress(self):
        r = self.result
        running = sum(len(s.running) for s in self.servers)
        secs = [x for s in self.servers for x in s.seconds]
        slots = max(1, sum(self.per_server for s in self.servers if not s.gone))
        eta = ""
        if secs and self.open:
            left = sum(secs) / len(secs) * self.open / slots
            eta = f", ETA {int(left // 60)}:{int(left % 60):02d}"
        per = " | ".join(f"{s.url}: {s.done} done, {len(s.running)} running, {s.failed} failed"
                         + (" (gone)" if s.gone else " (down)" if s.down else "") for s in self.servers)
        self.log(f"progress: {len(r.done) + len(r.skipped)}/{self.total} done, {running} running, "
                 f"{len(r.failed)} failed{eta} | {per}")

    def summary(self) -> List[str]:
        lines = []
        for s in self.servers:
            mean = f", {sum(s.seconds) / len(s.seconds):.1f} s/job" if s.seconds else ""
            lines.append(f"  {s.url}: {s.done} done, {s.failed} failed, {s.dropped} dropped{mean}"
                         + (" (given up)" if s.gone else ""))
        return lines

    # -- one job on one server -------------------------------------------------------------------
    async def _follow(self, events, prompt_id: str, job: Job, server: _Server):
        while True:
            ev = await events.next()
            if ev is None:
                raise ComfyError(f"{server.url} closed the websocket before the job ended (server gone?)",
                                 server_side=True)
            data = ev.get("data", {}) or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = ev.get("type")
            if kind == "progress":
                self.log(f"[{job.name}] {server.url} node {data.get('node')}: {data.get('value')}/{data.get('max')}")
            elif kind == "execution_error":
                raise execution_error(data)
            elif kind == "execution_interrupted":
                raise ComfyError(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})", data,
                                 server_side=True)
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
                raise ComfyError(f"{client.url}: no history record for prompt {prompt_id}", server_side=True)
            await asyncio.sleep(0.1)

    async def _run(self, job: Job, server: _Server) -> List[str]:
        client = server.client
        ref = await client.upload(job.reference)
        drv = await client.upload(job.driving)
        filled = fill_workflow(self.workflow, job, ref, drv)
        events = await client.open_events()
        try:
            prompt_id = await client.queue(filled, events.client_id)
            self.log(f"[{job.name}] queued on {client.url} as {prompt_id}")
            self.state["jobs"][job.name]["prompt_id"] = prompt_id
            save_state(self.out_dir, self.state)
            try:
                await asyncio.wait_for(self._follow(events, prompt_id, job, server), self.job_timeout)
            except asyncio.TimeoutError:
                try:
                    await client.interrupt()
                except ComfyError:
                    pass
                raise ComfyError(f"no result after {self.job_timeout:g} s on {client.url}; interrupted",
                                 server_side=True) from None
        finally:
            await events.close()
        record = await self._record(client, prompt_id, time.monotonic() + 30.0)
        files = output_files(record)
        if not files:
            raise ComfyError("the workflow finished but saved no output file")
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
        self._set(job, {"status": "running", "server": server.url, "attempt": attempt})
        try:
            saved = await self._run(job, server)
        except (ComfyError, JobListError, OSError) as e:
            server.running.pop(job.name, None)
            where = f"job {job.name} (reference {job.reference.name}, driving {job.driving.name}) on {server.url}"
            if isinstance(e, ComfyError) and e.server_side:
                server.dropped += 1
                server.down = not await server.client.alive()
                if attempt <= self.retries and any(not s.gone for s in self.servers):
                    self.avoid[job.name].add(server.url)
                    self.log(f"[{job.name}] {server.url} dropped the job ({e}); it goes back to the queue "
                             f"(attempt {attempt} of {self.retries + 1})")
                    self._set(job, {"status": "queued", "attempt": attempt, "last_error": f"{where}: {e}"})
                    self.pending.appendleft(job)
                    self.progress()
                    return
            server.failed += 1
            message = f"{where}: {e}"
            self.result.failed[job.name] = message
            self._set(job, {"status": "failed", "error": message, "server": server.url, "attempt": attempt})
            self.log(f"[{job.name}] FAILED: {message}")
            self._close(job)
            return
        seconds = time.monotonic() - started
        server.running.pop(job.name, None)
        server.done += 1
        server.seconds.append(seconds)
        self.result.done.append(job.name)
        self.result.servers[job.name] = server.url
        self._set(job, {"status": "done", "outputs": saved, "server": server.url, "attempt": attempt,
                        "prompt_id": self.state["jobs"][job.name].get("prompt_id"), "seconds": round(seconds, 1)})
        self.log(f"[{job.name}] done on {server.url}: {', '.join(saved)}")
        self._close(job)

    # -- hand-out ----------------------------------------------------------------------------------
    def _take(self, server: _Server) -> Optional[Job]:
        others_alive = any(not s.gone and not s.down and s is not server for s in self.servers)
        for job in self.pending:
            if server.url not in self.avoid[job.name] or not others_alive:
                self.pending.remove(job)
                return job
        return None

    async def _probe(self, server: _Server) -> bool:
        """Wait for a dropped server to answer again; False once it is given up."""
        for _ in range(PROBE_LIMIT):
            await asyncio.sleep(PROBE_WAIT)
            if await server.client.alive():
                server.down = False
                self.log(f"{server.url} answers again; it gets jobs again")
                return True
        server.gone = True
        self.log(f"{server.url} gave no answer {PROBE_LIMIT} times; no more jobs for it")
        if all(s.gone for s in self.servers):
            for job in list(self.pending):
                message = f"job {job.name}: no server left to run it (all {len(self.servers)} dropped)"
                self.result.failed[job.name] = message
                self._set(job, {"status": "failed", "error": message})
                self._close(job)
            self.pending.clear()
        return False

    async def worker(self, server: _Server):
        while not self.finished_event.is_set():
            if server.gone or (server.down and not await self._probe(server)):
                return
            job = self._take(server)
            if job is None:
                await asyncio.sleep(0.05)
                continue
            await self._attempt(job, server)

    async def interrupt_running(self):
        for s in self.servers:
            for name in list(s.running):
                self.log(f"[{name}] stopped; interrupting ComfyUI at {s.url}. Run the same command again to resume.")
                self.state["jobs"][name] = {"status": "interrupted", "server": s.url}
            if s.running:
                try:
                    await asyncio.wait_for(s.client.interrupt(), 5.0)
                except (ComfyError, asyncio.TimeoutError):
                    pass
        save_state(self.out_dir, self.state)


async def _run_batch(jobs, workflow, urls, out_dir, log, job_timeout, per_server, retries, timeout):
    async with aiohttp.ClientSession() as session:
        servers = [_Server(ComfyServer(u, session, timeout)) for u in urls]
        batch = _Batch(jobs, workflow, servers, out_dir, log, job_timeout, per_server, retries)
        if batch.open == 0:
            return batch.result, batch.summary()
        workers = [asyncio.ensure_future(batch.worker(s)) for s in servers for _ in range(per_server)]
        try:
            waiter = asyncio.ensure_future(batch.finished_event.wait())
            await asyncio.wait([waiter, *workers], return_when=asyncio.FIRST_EXCEPTION)
            for w in workers:  # a bug in a worker must surface, not hang the run
                if w.done() and not w.cancelled() and w.exception():
                    raise w.exception()
            waiter.cancel()
        except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels the main task)
            await batch.interrupt_running()
            raise
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
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
              retries: int = 2, timeout: Optional[float] = None) -> BatchResult:
    """Run ``jobs`` over ``servers`` (URLs or clients); blocks until every job is done or failed.

    ``timeout``: seconds for one HTTP request (default: the client's, else 60)."""
    if int(per_server) != per_server or per_server < 1:
        raise ValueError(f"per_server must be a positive integer, got {per_server!r}")
    if int(retries) != retries or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    if timeout is None:
        timeout = getattr(servers, "timeout", 60.0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result, summary = asyncio.run(_run_batch(jobs, workflow, _urls(servers), out_dir, log, job_timeout,
                                             int(per_server), int(retries), timeout))
    for line in summary:
        log(line)
    return result
