"""Batch runs of an X-Dyna workflow: the job list (jobs.py), its state file (state.py) and what a run
tells (outcome.py) belong to no engine; runner.py + client.py run the jobs on ComfyUI servers over
their HTTP API (no ComfyUI import); ray_engine.py runs them as headless jobs on Ray actors. Names load on first use, so the command line's parser reads
limits.py without importing aiohttp."""
import importlib

_HOMES = {"Job": "jobs", "JobListError": "jobs", "load_jobs": "jobs", "fill_workflow": "jobs",
          "BatchState": "state", "BatchResult": "outcome", "run_batch": "runner"}
__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
