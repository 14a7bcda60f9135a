"""Safe checkpoint reading: the format from the file's first bytes, never from the extension.

.safetensors, torch zip (.ckpt/.pt/.bin, memory-mapped) and legacy pickles, always with
``torch.load(weights_only=True)``; a ``state_dict`` wrapper is unwrapped, nested dicts (IP-Adapter
.bin) are flattened to ``section.key`` and ``module.`` components removed. Config metadata that our
converter writes into safetensors headers is read here too.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import CheckpointError
from . import kinds
from . import keys as K
from .validate import check_finite

PathLike = str | os.PathLike
Source = PathLike | Mapping[str, torch.Tensor]

# weights file names inside a diffusers model folder, in order of preference
DIFFUSERS_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "pytorch_model.bin",
)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------
def detect_format(path: PathLike) -> str:
    """'directory' | 'safetensors' | 'torch_zip' | 'torch_legacy' (from the content)."""
    p = Path(path)
    if p.is_dir():
        return "directory"
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) < 8:
        raise CheckpointError(f"{p}: file is too short ({size} bytes) to be a checkpoint (truncated or empty download?)")
    if head[:4] == b"PK\x03\x04":
        return "torch_zip"
    # safetensors: u64 little-endian header length, then the JSON header
    (n,) = struct.unpack("<Q", head[:8])
    if len(head) > 8 and head[8:9] == b"{":
        if 8 + n > size:
            raise CheckpointError(
                f"{p}: safetensors header claims {n} bytes but the file has only {size} (truncated download?)"
            )
        return "safetensors"
    if head[0] == 0x80:  # pickle protocol opcode: legacy torch.save
        return "torch_legacy"
    raise CheckpointError(f"{p}: not a .safetensors or PyTorch checkpoint (unrecognised first bytes {head[:8]!r})")


def resolve_weights_file(folder: PathLike, names=DIFFUSERS_WEIGHT_NAMES) -> Path:
    folder = Path(folder)
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"{folder}: no weights file found (looked for {', '.join(names)})")


def _unpickling_reason(err: Exception) -> str:
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith(("Trying to load unsupported", "Unsupported global", "Unsupported operand")):
            return line
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _torch_load(path: Path, fmt: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=(fmt == "torch_zip"))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the pickle contains objects other than tensors and plain "
            f"containers, which could run code when unpickled ({_unpickling_reason(e)}). "
            "Only weight files can be loaded; use a .safetensors version of it."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: cannot read the PyTorch checkpoint ({str(e).splitlines()[0]}); the file is "
            "probably truncated or corrupt (re-download it)"
        ) from e


def _flatten(obj: Mapping, prefix: str, out: dict) -> None:
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[key] = v
        elif isinstance(v, Mapping):
            _flatten(v, key + ".", out)
        # ints/strings/lists (epoch, global_step, optimizer state) are not weights


def _unwrap(obj: Any, path: Path) -> dict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(obj).__name__}")
    for wrapper in ("state_dict", "module"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and any(isinstance(v, (torch.Tensor, Mapping)) for v in inner.values()):
            obj = inner
            break
    flat: dict = {}
    _flatten(obj, "", flat)
    return flat


def resolve_file(path: PathLike) -> tuple[Path, str]:
    """(weights file, its format): a diffusers folder resolves to its weights file."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "directory":
        path = resolve_weights_file(path)
        fmt = detect_format(path)
    return path, fmt


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Any supported file (or diffusers folder) -> flat ``{key: tensor}`` on CPU, keys cleaned."""
    path, fmt = resolve_file(path)
    if fmt == "safetensors":
        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the .safetensors file ({e}); it is probably truncated or corrupt") from e
    else:
        sd = _unwrap(_torch_load(path, fmt), path)
    try:
        return check_finite(K.normalize_keys(sd), path)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


def read_metadata(path: PathLike) -> dict[str, str]:
    """safetensors header metadata ({} for pickles and folders)."""
    path = Path(path)
    if path.is_dir() or detect_format(path) != "safetensors":
        return {}
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def read_config_metadata(path: PathLike) -> dict | None:
    """The model config a file carries (``xdyna_config`` JSON), or None."""
    meta = read_metadata(path)
    raw = meta.get(K.CONFIG_METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata '{K.CONFIG_METADATA_KEY}' is not valid JSON ({e})") from e


def _source(src: Source, what: str) -> tuple[dict, str, dict | None]:
    """(state dict, display name, config from metadata or None) for a path or an in-memory dict."""
    if isinstance(src, Mapping):
        return K.normalize_keys(src), f"<in-memory {what} state dict>", None
    p = Path(src)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    return load_state_dict(p), str(p), (None if p.is_dir() else read_config_metadata(p))


def wrong_file_error(name: str, kind: str, expected: str) -> CheckpointError:
    hint = kinds.KIND_HINTS.get(kind)
    msg = f"{name}: this file is {kinds.describe(kind)}, but {expected} was expected"
    return CheckpointError(msg + (f"; {hint}" if hint else ""))


# ---------------------------------------------------------------------------------------------
# Load report and the generic build-and-load step
# ---------------------------------------------------------------------------------------------
