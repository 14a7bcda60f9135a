"""Batch runs of an X-Dyna workflow through a running ComfyUI's HTTP API (no ComfyUI import)."""
from .jobs import Job, JobListError, fill_workflow, load_jobs
from .runner import BatchResult, run_batch

__all__ = ["Job", "JobListError", "load_jobs", "fill_workflow", "run_batch", "BatchResult"]
