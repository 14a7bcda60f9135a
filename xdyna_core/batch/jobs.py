"""Job lists and how a job fills an API-format workflow.

A job list is JSON, either a list of jobs or `{"defaults": {...}, "jobs": [...]}`:

    {"defaults": {"steps": 25, "cfg": 7.5},
     "jobs": [{"name": "dance1", "reference": "ref.png", "driving": "dance.mp4", "seed": 42}]}

Every key other than `name`, `reference` and `driving` is an option: it sets the input of that name
on the workflow's X-Dyna nodes (and on the loaders that expose it, e.g. `frame_load_cap`).
Relative paths are resolved against the job file's folder.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..errors import XDynaError


class JobListError(XDynaError, ValueError):
    pass


@dataclass
class Job:
    name: str
    reference: Path
    driving: Path
    options: Dict[str, Any] = field(default_factory=dict)


# How the workflow marks the two file inputs a job substitutes: a node whose `_meta.title` is
# "reference"/"driving" wins; otherwise the first node of a known loader class is used.
REFERENCE_LOADERS = {"LoadImage": "image"}
DRIVING_LOADERS = {"XDynaLoadDrivingVideo": "file", "LoadVideo": "file", "VHS_LoadVideo": "video"}
OUTPUT_PREFIX_INPUT = "filename_prefix"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _as_job(raw: dict, index: int, defaults: dict, base: Path) -> Job:
    where = f"job {index + 1}"
    if not isinstance(raw, dict):
        raise JobListError(f"{where}: expected an object with reference/driving, got {type(raw).__name__}")
    merged = {**defaults, **raw}
    missing = [k for k in ("reference", "driving") if not merged.get(k)]
    if missing:
        raise JobListError(f"{where}: missing {', '.join(missing)}")
    ref = (base / merged.pop("reference")).resolve()
    drv = (base / merged.pop("driving")).resolve()
    for label, p in (("reference", ref), ("driving", drv)):
        if not p.is_file():
            raise JobListError(f"{where}: {label} file not found: {p}")
    name = str(merged.pop("name", None) or f"{index + 1:03d}_{ref.stem}_{drv.stem}")
    if not _NAME_OK.match(name):
        raise JobListError(f"{where}: name {name!r} must be letters, digits, '_', '-', '.' (it names output files)")
    return Job(name=name, reference=ref, driving=drv, options=merged)


def load_jobs(path: Union[str, Path]) -> List[Job]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobListError(f"job list not found: {path}") from None
    except json.JSONDecodeError as e:
        raise JobListError(f"job list {path} is not valid JSON: {e}") from None
    defaults: dict = {}
    if isinstance(data, dict):
        defaults = data.get("defaults", {}) or {}
        data = data.get("jobs")
    if not isinstance(data, list) or not data:
        raise JobListError(f"{path}: expected a non-empty list of jobs (or {{'jobs': [...]}})")
    jobs = [_as_job(raw, i, defaults, path.parent) for i, raw in enumerate(data)]
    seen = set()
    for job in jobs:
        if job.name in seen:
            raise JobListError(f"{path}: two jobs are named {job.name!r}; names must be unique")
        seen.add(job.name)
    return jobs


def _find_loader(workflow: dict, title: str, classes: Dict[str, str]) -> tuple:
    for node_id, node in workflow.items():
        if str(node.get("_meta", {}).get("title", "")).strip().lower() == title and node["class_type"] in classes:
            return node_id, classes[node["class_type"]]
    for node_id, node in workflow.items():
        if node.get("class_type") in classes:
            return node_id, classes[node["class_type"]]
    raise JobListError(f"the workflow has no {title} loader (one of {sorted(classes)}); "
                       f"mark it with the title '{title}'")


def fill_workflow(workflow: dict, job: Job, reference_name: str, driving_name: str,
                  output_prefix: Optional[str] = None) -> dict:
    """A copy of an API-format workflow with the job's files, options and output prefix filled in."""
    if "prompt" in workflow and isinstance(workflow["prompt"], dict):
        workflow = workflow["prompt"]
    wf = copy.deepcopy(workflow)
    if not wf or not all(isinstance(n, dict) and "class_type" in n for n in wf.values()):
        raise JobListError("the workflow is not in ComfyUI's API format ({id: {class_type, inputs}}); "
                           "export it with 'Save (API Format)'")
    node_id, key = _find_loader(wf, "reference", REFERENCE_LOADERS)
    wf[node_id]["inputs"][key] = reference_name
    node_id, key = _find_loader(wf, "driving", DRIVING_LOADERS)
    wf[node_id]["inputs"][key] = driving_name

    for option, value in job.options.items():
        targets = [n for n in wf.values()
                   if option in n.get("inputs", {}) and not isinstance(n["inputs"][option], list)]
        if not targets:
            settable = sorted({k for n in wf.values() for k, v in n.get("inputs", {}).items()
                               if not isinstance(v, list)})
            raise JobListError(f"job {job.name}: option {option!r} matches no widget input of the workflow; "
                               f"settable inputs: {', '.join(settable)}")
        for n in targets:
            n["inputs"][option] = value

    prefix = output_prefix or f"xdyna/{job.name}"
    for n in wf.values():
        if OUTPUT_PREFIX_INPUT in n.get("inputs", {}):
            n["inputs"][OUTPUT_PREFIX_INPUT] = prefix
    return wf
