"""Which model files a loader offers, and the check of a picked file when the prompt is queued: both
through the one recogniser (xdyna_core/loading/recognise.py, ``problem``): a file is offered for a role
only when its content can serve it (a .safetensors header, a torch zip checkpoint's index; no weights
read; a legacy pickle by its name), and ``validate_inputs`` reports why not (HTTP 400 at queue time,
before any node runs). Cached by path, size and modification time there, so listing stays fast.
"""
from __future__ import annotations

from typing import List, Sequence

from ..xdyna_core.loading import recognise
from . import comfy_bridge as bridge

UNET, POSE_CONTROLNET, FACE_CONTROLNET, IP_ADAPTER = (recognise.UNET, recognise.POSE_CONTROLNET,
                                                      recognise.FACE_CONTROLNET, recognise.IP_ADAPTER)
problem = recognise.problem


def files_for(role: str, folder: str, exclude: Sequence[str] = ("detectors/",)) -> List[str]:
    """The files of a model folder a dropdown for ``role`` lists: those that can serve it."""
    return [name for name in bridge.list_files(folder, exclude=exclude)
            if problem(bridge.full_path(folder, name), role) is None]


def check_pick(folder: str, name: str, role: str, what: str):
    """``validate_inputs`` answer for one dropdown: True, or the reason naming the file."""
    try:
        path = bridge.full_path(folder, name)
    except FileNotFoundError as e:
        return f"{what}: {e}"
    why = problem(path, role)
    return True if why is None else f"{what}: {why}"
