"""`python -m xdyna_core batch`: run a job list through a running ComfyUI."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .client import ComfyClient, ComfyError
from .jobs import JobListError, load_jobs
from .runner import run_batch


def build_parser(parser: argparse.ArgumentParser = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="python -m xdyna_core batch")
    p.add_argument("--jobs", required=True, help="job list JSON (reference, driving and options per job)")
    p.add_argument("--workflow", required=True, help="API-format workflow (e.g. example_workflows/api/xdyna_pose_api.json)")
    p.add_argument("--out", required=True, help="folder for the results and the resume state")
    p.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    p.add_argument("--job-timeout", type=float, default=6 * 3600, help="seconds before a job is interrupted")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args) -> int:
    try:
        jobs = load_jobs(args.jobs)
        workflow = json.loads(Path(args.workflow).read_text())
        result = run_batch(jobs, workflow, ComfyClient(args.server), args.out, job_timeout=args.job_timeout)
    except (JobListError, ComfyError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"{len(result.done)} done, {len(result.skipped)} skipped, {len(result.failed)} failed")
    for name, err in result.failed.items():
        print(f"  {name}: {err}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
