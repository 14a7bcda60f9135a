"""What a model file is, cheaply: for the loader dropdowns, which list only the files that can serve.

A .safetensors file is recognised by its header alone (tensor names and shapes, no weights read):
:func:`keys.identify` names the kind, and a ControlNet's hint input says pose (3 channels) or S-Face
(6 channels). Pickled files (.ckpt/.bin/.pth) cannot be read without loading them, so their names
decide, and a name that says nothing leaves the file in every list (it is checked when loaded).
"""
from __future__ import annotations

import json
import os
import struct
from typing import Optional

from . import keys as K

#: The roles a loader dropdown asks for.
UNET, POSE_CONTROLNET, FACE_CONTROLNET, IP_ADAPTER = "unet", "pose_controlnet", "face_controlnet", "ip_adapter"

_HINT_CONV = "controlnet_cond_embedding.conv_in.weight"
_MAX_HEADER = 64 * 1024 * 1024
_cache: dict = {}


def _header(path: str) -> Optional[dict]:
    """The safetensors header (name -> {dtype, shape, ...}), or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if not 0 < size <= _MAX_HEADER:
                return None
            return json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return None


def _role_from_header(header: dict) -> Optional[str]:
    meta = header.get("__metadata__") or {}
    tensors = K.normalize_keys({k: v for k, v in header.items() if k != "__metadata__"})
    kind = meta.get(K.KIND_METADATA_KEY) or K.identify(tensors)
    if kind in ("xdyna_unet", "xdyna_unet_adapters"):
        return UNET
    if kind == "controlnet":
        shape = (tensors.get(_HINT_CONV) or {}).get("shape") or []
        return FACE_CONTROLNET if len(shape) > 1 and shape[1] == 6 else POSE_CONTROLNET
    if kind in ("ip_adapter", "ip_adapter_plain", "resampler"):
        return IP_ADAPTER
    return kind if kind not in ("unknown", "empty") else None


def _role_from_name(name: str) -> Optional[str]:
    n = os.path.basename(name).lower()
    if "controlnet" in n or "control_net" in n:
        return FACE_CONTROLNET if any(w in n for w in ("face", "sface", "expression")) else POSE_CONTROLNET
    if "ip-adapter" in n or "ip_adapter" in n or "ipadapter" in n:
        return IP_ADAPTER
    if "unet" in n:
        return UNET
    return None


def file_role(path: str) -> Optional[str]:
    """UNET, POSE_CONTROLNET, FACE_CONTROLNET, IP_ADAPTER, another kind name (``keys.identify``), or
    None when it cannot be told cheaply. Cached by path, size and modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _cache:
        role = None
        if path.lower().endswith(".safetensors"):
            header = _header(path)
            role = _role_from_header(header) if header is not None else None
        _cache[key] = role if role is not None else _role_from_name(path)
    return _cache[key]


def serves(path: str, role: str) -> bool:
    """Whether a dropdown for ``role`` lists this file: it is that role, or what it is cannot be told."""
    found = file_role(path)
    return found is None or found == role
