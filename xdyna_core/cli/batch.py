"""`xdyna batch`: run a job list through running ComfyUI servers (``--engine comfyui``, the default) or
through the headless job on a Ray cluster (``--engine ray``: actors that keep the model set loaded).

With ``--engine ray`` a job's keys other than name/reference/driving are `animate`'s option names
(``size``, ``steps``, ``seed``, ``face``, ``pose``, ...), read by the very option definitions of
`animate` (cli/animate.py); the command's own animate options are every job's defaults. Every job is
parsed and checked before any work, so a bad value in job 7 stops the run at once, naming the job
and the option.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..arg_types import non_negative_int, positive_float, positive_int, positive_seconds
from . import Parser

DEFAULT_SERVER = "http://127.0.0.1:8188"
#: animate options that decide how the model set loads: the same for every job (each actor loads once)
LOAD_OPTIONS = ("device", "precision", "weights", "memory")


def register(commands) -> None:
    from . import common_options
    from .animate import _add_job_options

    p = commands.add_parser("batch", parents=[common_options()],
                            help="run a job list through ComfyUI servers or on a Ray cluster")
    p.add_argument("--jobs", required=True, help="job list JSON (reference, driving and options per job)")
    p.add_argument("--engine", choices=["comfyui", "ray"], default="comfyui",
                   help="comfyui: running ComfyUI servers (--server, --workflow); ray: the headless job on a "
                        "Ray cluster, no ComfyUI (--address, --models) (default %(default)s)")
    p.add_argument("--workflow", help="API-format workflow (e.g. example_workflows/api/xdyna_pose_api.json); "
                                      "--engine comfyui")
    p.add_argument("--out", required=True, help="folder for the results and the resume state")
    p.add_argument("--server", action="append", default=None, metavar="URL",
                   help=f"ComfyUI address; repeat for several servers (default {DEFAULT_SERVER})")
    p.add_argument("--per-server", type=positive_int, default=1,
                   help="jobs each server holds at once (default %(default)s: ComfyUI runs one prompt at a time)")
    p.add_argument("--retries", type=non_negative_int, default=2,
                   help="times a job whose server (or Ray worker) dropped is sent to another one (default %(default)s)")
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
    r = p.add_argument_group("--engine ray", "the cluster, and every job's defaults: any `animate` option")
    r.add_argument("--address", default=None,
                   help="Ray cluster: auto (the one started on this machine with `ray start`), HOST:PORT or "
                        "ray://HOST:PORT (Ray Client); default: start a local Ray for this run")
    r.add_argument("--models", help="ComfyUI-style models/ folder, at this path on every node")
    r.add_argument("--actors", type=positive_int, default=None,
                   help="actors, each loading the model set once (default: one per GPU of the cluster, "
                        "or one per --cpus-per-actor CPUs when it has no GPU)")
    r.add_argument("--gpus-per-actor", type=positive_float, default=None,
                   help="GPUs each actor asks Ray for (default 1 when the cluster has GPUs; 0.5 puts two "
                        "actors on a GPU)")
    r.add_argument("--cpus-per-actor", type=positive_float, default=1.0,
                   help="CPUs each actor asks Ray for (default %(default)g)")
    r.add_argument("--transfer", choices=["store", "shared"], default="store",
                   help="store: inputs and results move through Ray's object store; shared: the actors "
                        "read the inputs and write --out themselves (a folder every node sees at the same "
                        "path) (default %(default)s)")
    r.add_argument("--max-restarts", type=non_negative_int, default=3,
                   help="times Ray restarts an actor whose process or node died (default %(default)s)")
    _add_job_options(r, steps=25, size="512x896", frame_count=None)
    p.set_defaults(func=run, own_interrupt=True)


def _log(line: str):
    print(line, flush=True)  # a pipe reader (a supervisor, a test) sees each line as it happens


class _JobKeyParser(Parser):
    """Reads one job's keys with animate's option definitions; an error raises (the caller names the job)."""

    def error(self, message):
        from ..batch.jobs import JobListError

        raise JobListError(message)


def job_key_parser() -> _JobKeyParser:
    from .animate import _add_job_options, add_own_pose

    p = _JobKeyParser(prog="job", add_help=False, allow_abbrev=False)
    _add_job_options(p, steps=25, size="512x896", frame_count=None)
    add_own_pose(p)
    return p


def job_namespace(parser: argparse.ArgumentParser, job, defaults: argparse.Namespace, base: Path):
    """The batch command's options with the job's keys applied, each parsed by its animate option."""
    from ..batch.jobs import JobListError

    where = f"job {job.name}"
    # a key is any of the option's names (`length` is `--frame-count`'s other name), "-" or "_" alike
    actions = {o[2:].replace("-", "_"): a for a in parser._actions for o in a.option_strings}
    ns = copy.copy(defaults)
    ns.pose = ns.keypoints = None
    for key, value in job.options.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise JobListError(f"{where}: {key!r} is not an animate option; a job takes "
                               f"{', '.join(sorted(actions))}")
        dest = action.dest
        if dest in LOAD_OPTIONS:
            raise JobListError(f"{where}: {key!r} decides how the models load, once per actor: give it to the "
                               f"batch command (--{dest.replace('_', '-')}), not to a job")
        flag = action.option_strings[0]
        if action.nargs == 0:    # a switch (--align): true or false
            if not isinstance(value, bool):
                raise JobListError(f"{where}: {flag} takes true or false, got {value!r}")
            setattr(ns, dest, value)
            continue
        if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
            raise JobListError(f"{where}: {flag}: expected one value, got {json.dumps(value)}")
        try:
            parser.parse_args([f"{flag}={value}"], ns)   # "=": a value may start with "-" (a prompt)
        except JobListError as e:
            raise JobListError(f"{where}: {e}") from None
        if dest in ("pose", "keypoints"):
            setattr(ns, dest, str((base / getattr(ns, dest)).resolve()))
    if ns.pose and ns.keypoints:
        raise JobListError(f"{where}: give pose or keypoints, not both")
    return ns


def prepare_ray_jobs(args):
    """Every job of the list as (Job, AnimateOptions), all parsed and checked before any work."""
    from ..batch.jobs import JobListError, load_jobs
    from ..batch.ray_engine import result_path
    from ..errors import XDynaError
    from ..job_checks import check_job
    from .animate import _options, require_extractor_if_used

    jobs = load_jobs(args.jobs)
    base = Path(args.jobs).parent
    parser = job_key_parser()
    prepared = []
    for job in jobs:
        opts = _options(job_namespace(parser, job, args, base))
        try:
            # animate's checks; the device is the actors' (their nodes' GPUs), not this machine's
            check_job(replace(opts, device="auto"), job.reference, job.driving,
                      Path(args.out) / result_path(job.name),
                      models_dir=args.models if Path(args.models).is_dir() else None)   # else only on the nodes
            require_extractor_if_used(opts)   # as animate: the pose extractor, when the job needs it
        except (XDynaError, FileNotFoundError) as e:   # JobCheckError, OutputPathError, AnimateError, ...
            raise JobListError(f"job {job.name}: {e}") from None
        prepared.append((job, opts))
    return prepared


def run_ray(args) -> int:
    from ..batch.jobs import JobListError
    from ..batch.ray_engine import RaySettings, import_ray, run_ray_batch

    if not args.models:
        raise JobListError("--engine ray needs --models (the models/ folder, at that path on every node)")
    import_ray()                        # a missing Ray first: nothing else can run
    prepared = prepare_ray_jobs(args)   # before Ray starts: a bad job costs nothing
    settings = RaySettings(address=args.address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                           gpus_per_actor=args.gpus_per_actor, transfer=args.transfer, retries=args.retries,
                           max_restarts=args.max_restarts, job_timeout=args.job_timeout)
    try:
        result = run_ray_batch(prepared, args.models, args.out, settings, log=_log)
    except KeyboardInterrupt:
        return 130
    print(result.counts(), flush=True)
    return 0 if result.ok else 1


def run(args) -> int:
    from ..batch.jobs import JobListError, load_jobs

    if args.engine == "ray":
        try:
            return run_ray(args)
        except (JobListError, OSError, ValueError, ImportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from ..batch.client import ComfyError
    from ..batch.runner import run_batch

    try:
        if not args.workflow:
            raise JobListError("--engine comfyui needs --workflow (an API-format workflow)")
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
