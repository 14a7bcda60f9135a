"""Which model files a loader offers, and the check of a picked file when the prompt is queued.

A file is offered for a role (UNet, pose/S-Face ControlNet, IP-Adapter) only when it can serve it: a
.safetensors file by its header (complete, and tensors of that role; no weights read), a PyTorch
zip checkpoint (the released .ckpt files) when its archive is whole (a truncated download lacks the
zip directory at the end) and its name does not say another role, a legacy pickle by its name.
Results are cached by path, size and modification time, so listing stays fast on every
/object_info. ``problem`` gives the one-line reason the loaders' ``validate_inputs`` report (HTTP
400 at queue time, before any node runs).
"""
from __future__ import annotations

import os
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

from ..xdyna_core.loading import headers, recognise
from ..xdyna_core.loading.files import CheckpointError, detect_format
from ..xdyna_core.loading.keys import describe
from . import comfy_bridge as bridge

UNET, POSE_CONTROLNET, FACE_CONTROLNET, IP_ADAPTER = (recognise.UNET, recognise.POSE_CONTROLNET,
                                                      recognise.FACE_CONTROLNET, recognise.IP_ADAPTER)
ROLE_NAMES = {
    UNET: "an X-Dyna UNet",
    POSE_CONTROLNET: "an X-Dyna pose ControlNet (3-channel condition)",
    FACE_CONTROLNET: "an X-Dyna S-Face ControlNet (6-channel condition)",
    IP_ADAPTER: "an IP-Adapter-plus file",
}
_KIND_ROLES = {"xdyna_unet": UNET, "xdyna_unet_adapters": UNET, "ip_adapter": IP_ADAPTER,
               "ip_adapter_plain": IP_ADAPTER, "resampler": IP_ADAPTER}
_cache: Dict[Tuple[str, str, int, int], Optional[str]] = {}


def _what(role: str) -> str:
    return ROLE_NAMES.get(role) or describe(role)


def _role_of(path: str) -> Optional[str]:
    """The role the file's content shows (None: cannot be told without loading it); raises
    CheckpointError for a file that is truncated or not a checkpoint."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        header = headers.recognise(path)  # the whole header, and the data it announces must be there
        if header.kind == "controlnet":
            return FACE_CONTROLNET if header.condition_channels == 6 else POSE_CONTROLNET
        return _KIND_ROLES.get(header.kind, header.kind)
    if fmt == "torch_zip":
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path}: the PyTorch checkpoint is incomplete ({e}); the file is probably "
                                  f"truncated (re-download it)") from e
    return recognise.file_role(path) if fmt != "directory" else None


def problem(path: str, role: str) -> Optional[str]:
    """None when the file at ``path`` can serve ``role``; else one line naming the file and what is wrong."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    key = (path, role, st.st_size, st.st_mtime_ns)
    if key not in _cache:
        try:
            found = _role_of(path)
            _cache[key] = None if found in (None, role) else (
                f"{path} is {_what(found)}, not {_what(role)}")
        except (CheckpointError, OSError, ValueError) as e:
            _cache[key] = str(e).splitlines()[0]
    return _cache[key]


def files_for(role: str, folder: str, exclude: Sequence[str] = ("detectors/",)) -> List[str]:
    """The files of a model folder a dropdown for ``role`` lists: those that can serve it."""
    out = []
    for name in bridge.list_files(folder, exclude=exclude):
        path = bridge.full_path(folder, name)
        if problem(path, role) is None:
            out.append(name)
    return out


def check_pick(folder: str, name: str, role: str, what: str):
    """``validate_inputs`` answer for one dropdown: True, or the reason naming the file."""
    try:
        path = bridge.full_path(folder, name)
    except FileNotFoundError as e:
        return f"{what}: {e}"
    why = problem(path, role)
    return True if why is None else f"{what}: {why}"
