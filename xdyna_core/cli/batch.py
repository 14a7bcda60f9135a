"""`xdyna batch`: run a job list through one or several running ComfyUI servers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..arg_types import non_negative_int, positive_int, positive_seconds

DEFAULT_SERVER = "http://127.0.0.1:8188"


def register(commands) -> None:
    from . import common_options

    p = commands.add_parser("batch", parents=[common_options()],
                            help="run a job list through one or several running ComfyUI servers")
    p.add_argument("--jobs", required=True, help="job list JSON (reference, driving and options per job)")
    p.add_argument("--workflow", required=True, help="API-format workflow (e.g. example_workflows/api/xdyna_pose_api.json)")
    p.add_argument("--out", required=True, help="folder for the results and the resume state")
    p.add_argument("--server", action="append", default=None, metavar="URL",
                   help=f"ComfyUI address; repeat for several servers (default {DEFAULT_SERVER})")
    p.add_argument("--per-server", type=positive_int, default=1,
                   help="jobs each server holds at once (default %(default)s: ComfyUI runs one prompt at a time)")
    p.add_argument("--retries", type=non_negative_int, default=2,
                   help="times a job whose server dropped is sent to another server (default %(default)s)")
    p.add_argument("--job-timeout", type=positive_seconds, default=6 * 3600,
                   help="seconds before a job is interrupted and counted as its server's failure")
    from ..batch.limits import ANSWER_TIMEOUT, PROBE_EVERY, SERVER_WAIT

    p.add_argument("--request-timeout", type=positive_seconds, default=ANSWER_TIMEOUT,
                   help="seconds a server has to answer one request before it is set aside (default %(default)g)")
    p.add_argument("--probe-every", type=positive_seconds, default=PROBE_EVERY,
                   help="seconds between probes of a server set aside; it rejoins when it answers "
                        "(default %(default)g)")
    p.add_argument("--server-wait", type=positive_seconds, default=SERVER_WAIT,
                   help="seconds with no usable server before the waiting jobs fail (default %(default)g)")
    p.set_defaults(func=run, own_interrupt=True)


def _log(line: str):
    print(line, flush=True)  # a pipe reader (a supervisor, a test) sees each line as it happens


def run(args) -> int:
    from ..batch.client import ComfyError
    from ..batch.jobs import JobListError, load_jobs
    from ..batch.runner import run_batch

    try:
        jobs = load_jobs(args.jobs)
        try:
            workflow = json.loads(Path(args.workflow).read_text())
        except ValueError as e:
            raise JobListError(f"workflow {args.workflow} is not valid JSON: {e}") from None
        result = run_batch(jobs, workflow, args.server or [DEFAULT_SERVER], args.out, log=_log,
                           job_timeout=args.job_timeout, per_server=args.per_server, retries=args.retries,
                           timeout=args.request_timeout, probe_every=args.probe_every,
                           server_wait=args.server_wait)
    except (JobListError, ComfyError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(result.counts(), flush=True)   # the failures by reason are in the summary above
    return 0 if result.ok else 1

