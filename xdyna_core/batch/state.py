"""The batch state file, ``<out>/batch_state.json``: what became of each job of a job list.

One format whatever engine runs the jobs (ComfyUI servers: runner.py; Ray actors: ray_engine.py), so
that any engine resumes any run: ``{"jobs": {name: record}}`` where a record has ``status`` (one of
STATUSES) and, by status, ``outputs`` (paths relative to the out folder), ``error`` and ``reason``
(the failure's class), ``attempt``, and what ran it: ``server`` and ``prompt_id`` (ComfyUI), or
``worker``, ``node`` and ``pid`` with ``retries`` (the attempts lost with their worker) (Ray).

The file is rewritten atomically (temporary file, fsync, rename) at every change, so whatever stops
a run a second one resumes: jobs done with their files present are skipped, all others (queued,
running, interrupted, failed) run again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

from ..outputs import write_atomic
from .jobs import Job, JobListError

STATE_FILE = "batch_state.json"
STATUSES = ("queued", "running", "done", "failed", "interrupted")


class BatchState:
    """The records of one out folder; :meth:`set` and :meth:`update` write the file at once."""

    def __init__(self, out_dir: Union[str, Path]):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / STATE_FILE
        self.jobs: Dict[str, dict] = self._load()

    def _load(self) -> Dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            state = json.loads(self.path.read_text())
        except ValueError:
            raise JobListError(f"{self.path} is damaged; delete it to start the batch afresh") from None
        if not isinstance(state, dict) or not isinstance(state.get("jobs"), dict):
            raise JobListError(f"{self.path} is not a batch state file; delete it to start the batch afresh")
        return state["jobs"]

    def finished(self, job: Job) -> bool:
        """Done before, and every output file it saved is still there."""
        rec = self.jobs.get(job.name)
        return bool(rec and rec.get("status") == "done" and rec.get("outputs")
                    and all((self.out_dir / f).exists() for f in rec["outputs"]))

    def set(self, name: str, status: str, save: bool = True, **fields) -> None:
        """Replace the job's record."""
        assert status in STATUSES, status
        self.jobs[name] = {"status": status, **fields}
        if save:
            self.save()

    def update(self, name: str, **fields) -> None:
        """Add fields to the job's record."""
        self.jobs.setdefault(name, {"status": "queued"}).update(fields)
        self.save()

    def save(self) -> None:
        """Write the state so that a crash at any moment leaves either the old or the new file."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"jobs": self.jobs}, indent=1))
