"""Run a job list through ComfyUI: upload, fill, queue, follow, download, resume.

Progress is kept in `<out>/batch_state.json` (written atomically after every job), so a list that
was stopped resumes where it left off: finished jobs whose files are still there are skipped.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

from .client import ComfyClient, ComfyError
from .jobs import Job, JobListError, fill_workflow

STATE_FILE = "batch_state.json"


@dataclass
class BatchResult:
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _load_state(out_dir: Path) -> dict:
    path = out_dir / STATE_FILE
    if not path.exists():
        return {"jobs": {}}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise JobListError(f"{path} is damaged; delete it to start the batch afresh") from None


def _save_state(out_dir: Path, state: dict):
    tmp = out_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, out_dir / STATE_FILE)


def _finished(state: dict, job: Job, out_dir: Path) -> bool:
    rec = state["jobs"].get(job.name)
    return bool(rec and rec.get("status") == "done" and rec.get("outputs")
                and all((out_dir / f).exists() for f in rec["outputs"]))


def _output_files(history: dict) -> List[dict]:
    files = []
    for node_out in history.get("outputs", {}).values():
        for items in node_out.values():
            if isinstance(items, list):
                files += [i for i in items if isinstance(i, dict) and "filename" in i
                          and i.get("type", "output") == "output"]
    return files


def _wait(client: ComfyClient, events, prompt_id: str, job: Job, log: Callable[[str], None],
          timeout: float) -> dict:
    """Follow the websocket until this prompt ends; return its history record."""
    deadline = time.monotonic() + timeout
    try:
        for ev in events:
            data = ev.get("data", {}) or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = ev.get("type")
            if kind == "progress":
                log(f"[{job.name}] node {data.get('node')}: {data.get('value')}/{data.get('max')}")
            elif kind == "execution_error":
                raise ComfyError(f"node {data.get('node_id')} ({data.get('node_type')}): "
                                 f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}", data)
            elif kind == "execution_interrupted":
                raise ComfyError(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})", data)
            elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
            if time.monotonic() > deadline:
                client.interrupt()
                raise ComfyError(f"no result after {timeout:.0f} s; interrupted")
    except (socket.timeout, TimeoutError):
        pass  # fall back on the history below
    while True:
        record = client.history(prompt_id)
        status = record.get("status", {})
        if status.get("completed") or status.get("status_str") in ("success", "error"):
            if status.get("status_str") == "error":
                msgs = [m for m in status.get("messages", []) if m and m[0] == "execution_error"]
                detail = msgs[-1][1] if msgs else {}
                raise ComfyError(f"node {detail.get('node_id')} ({detail.get('node_type')}): "
                                 f"{detail.get('exception_message', 'failed').strip()}", detail)
            return record
        if time.monotonic() > deadline:
            client.interrupt()
            raise ComfyError(f"no result after {timeout:.0f} s; interrupted")
        time.sleep(1.0)


def run_batch(jobs: List[Job], workflow: dict, client: ComfyClient, out_dir, log: Callable[[str], None] = print,
              job_timeout: float = 6 * 3600) -> BatchResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(out_dir)
    result = BatchResult()
    for job in jobs:
        if _finished(state, job, out_dir):
            log(f"[{job.name}] already done, skipped")
            result.skipped.append(job.name)
            continue
        started = time.time()
        try:
            ref = client.upload(job.reference)
            drv = client.upload(job.driving)
            filled = fill_workflow(workflow, job, ref, drv)
            events = client.open_events()
            prompt_id = client.queue(filled)
            log(f"[{job.name}] queued as {prompt_id}")
            try:
                record = _wait(client, events, prompt_id, job, log, job_timeout)
            finally:
                events.close()  # closes this job's websocket now, not whenever it is collected
            files = _output_files(record)
            if not files:
                raise ComfyError("the workflow finished but saved no output file")
            saved = []
            for f in files:
                target = Path(job.name) / f["filename"]
                (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
                (out_dir / target).write_bytes(client.download(f["filename"], f.get("subfolder", ""), "output"))
                saved.append(str(target))
            state["jobs"][job.name] = {"status": "done", "outputs": saved, "prompt_id": prompt_id,
                                       "seconds": round(time.time() - started, 1)}
            result.done.append(job.name)
            log(f"[{job.name}] done: {', '.join(saved)}")
        except (ComfyError, JobListError) as e:
            state["jobs"][job.name] = {"status": "failed", "error": str(e)}
            result.failed[job.name] = str(e)
            log(f"[{job.name}] FAILED: {e}")
        except KeyboardInterrupt:
            log(f"[{job.name}] stopped; interrupting ComfyUI. Run the same command again to resume.")
            try:
                client.interrupt()
            except ComfyError:
                pass
            _save_state(out_dir, state)
            raise
        _save_state(out_dir, state)
    return result
