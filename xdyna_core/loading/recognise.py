"""What a model file is, without loading its weights: the one recogniser behind the loader dropdowns
(nodes), the command line's model lookup (:func:`.bundle.find_model_files`) and its pre-load check
(:func:`.bundle.check_model_files`).

One precedence rule (:func:`file_role`):

1. the content, where it can be read cheaply: a .safetensors header (``safetensors.safe_open``, no
   tensor data read) or the pickled index of a torch zip checkpoint (.ckpt/.pt/.bin, tensors
   memory-mapped, their data never read). The kind is our converter's ``xdyna_kind`` metadata when
   present, else :func:`.kinds.identify` of the key names; a ControlNet's condition input says pose
   (3 channels) or S-Face (6 channels);
2. the name, when the content cannot be read cheaply (legacy pre-zip pickles, unreadable files) or
   says nothing (an unknown kind);
3. neither: unknown (None). Such a file serves every role; it is checked when it is loaded.

:func:`problem` is the strict form the loader dropdowns and ComfyUI's queue-time check use: a file
whose content cannot be read (truncated, random bytes, a half-downloaded zip) is a problem there,
named in one line, not a file to be decided by its name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from safetensors import SafetensorError, safe_open

from . import keys as K
from .files import CheckpointError, _torch_load, _unwrap, resolve_file
from .kinds import describe, identify
from .unet_keys import MOTION_PE_SUFFIX

#: The roles a model file can play (a loader dropdown, a file of a command-line run).
UNET, POSE_CONTROLNET, FACE_CONTROLNET, IP_ADAPTER = "unet", "pose_controlnet", "face_controlnet", "ip_adapter"
CLIP_VISION, SD15, VAE = "clip_vision", "sd15", "vae"
#: I2V-Adapter's AnimateDiff + IP-plus UNet: the official loader builds the UNet from SD1.5 plus this file,
#: then loads the X-Dyna UNet over it (strict=False), so a UNet file without motion modules takes them here.
IPPLUS = "ipplus"
IPPLUS_FILE = "animatediff_v15_v1_ipplus.pth"
IPPLUS_FOLDERS = ("xdyna", "animatediff_models")  # under models/
WEIGHT_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")

#: Condition channels of X-Dyna's two ControlNets (the input of their condition embedding).
CONTROLNET_CHANNELS = {"pose": 3, "face": 6}
CONTROLNET_COND_KEY = "controlnet_cond_embedding.conv_in.weight"
_CHANNEL_ROLE = {CONTROLNET_CHANNELS["pose"]: POSE_CONTROLNET, CONTROLNET_CHANNELS["face"]: FACE_CONTROLNET}

#: role -> (the kinds that serve it, best first; what the role expects, for error messages).
ROLE_KINDS = {
    UNET: (("xdyna_unet", "xdyna_unet_adapters"), "the X-Dyna UNet (unet-checkpoint-epoch-5.ckpt)"),
    POSE_CONTROLNET: (("controlnet",), "the X-Dyna pose ControlNet"),
    FACE_CONTROLNET: (("controlnet",), "the X-Dyna S-Face ControlNet"),
    IP_ADAPTER: (("ip_adapter",), "an IP-Adapter-plus SD1.5 file (ip-adapter-plus_sd15)"),
    CLIP_VISION: (("clip_vision", "clip_vision_openclip"), "the CLIP ViT-H/14 image encoder"),
    SD15: (("sd_checkpoint",), "an SD1.5 checkpoint (VAE and text encoder)"),
    VAE: (("vae", "vae_ldm"), "an SD1.5 VAE"),
    IPPLUS: (("animatediff_ipplus",), f"I2V-Adapter's AnimateDiff + IP-plus UNet ({IPPLUS_FILE})"),
}
_KIND_ROLE = {kind: role for role, (kinds, _) in ROLE_KINDS.items() for kind in kinds if kind != "controlnet"}


def _read_index(path) -> Tuple[Optional[Dict[str, Tuple[int, ...]]], Optional[str]]:
    """(tensor names -> shapes, ``xdyna_kind`` metadata) of a weights file or diffusers folder;
    (None, None) for legacy pickles (no index: recognised only when loaded)."""
    path, fmt = resolve_file(path)
    meta_kind = None
    if fmt == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
                meta_kind = (f.metadata() or {}).get(K.KIND_METADATA_KEY)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the .safetensors header ({e}); the file is probably "
                                  f"truncated or corrupt") from e
    elif fmt == "torch_zip":  # memory-mapped: only the pickled index is read, no tensor data
        shapes = {k: tuple(v.shape) for k, v in _unwrap(_torch_load(path, fmt), path).items()}
    else:
        return None, None
    try:
        return K.normalize_keys(shapes), meta_kind
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


@dataclass(frozen=True)
class Header:
    path: Path
    kind: Optional[str]                       # kinds.identify kind; None when unknown before loading
    shapes: Optional[Dict[str, Tuple[int, ...]]]

    @property
    def condition_channels(self) -> Optional[int]:
        """ControlNet condition channels (3 pose, 6 S-Face), None if not a ControlNet."""
        shape = (self.shapes or {}).get(CONTROLNET_COND_KEY)
        return int(shape[1]) if shape is not None and len(shape) > 1 else None

    @property
    def motion_max_len(self) -> Optional[int]:
        """Frames the UNet's motion modules take at most (their positional encoding's length), None when
        the file holds no motion module."""
        lengths = [shape[1] for k, shape in (self.shapes or {}).items() if k.endswith(MOTION_PE_SUFFIX)]
        return int(min(lengths)) if lengths else None

    @property
    def role(self) -> Optional[str]:
        """The role this content plays, the kind's name for a kind that plays none, None if unknown."""
        if self.kind in (None, "unknown", "empty"):
            return None
        if self.kind == "controlnet":
            return _CHANNEL_ROLE.get(self.condition_channels, "controlnet")
        return _KIND_ROLE.get(self.kind, self.kind)


def recognise(path) -> Header:
    """The file's content as far as it can be read without loading weights (rule 1 above).
    CheckpointError for an unreadable file; kind None for a legacy pickle."""
    shapes, meta_kind = _read_index(path)
    if shapes is None:
        return Header(Path(path), None, None)
    return Header(Path(path), meta_kind or identify(shapes), shapes)


def describe_file(path) -> str:
    """What a file is, in words (for an error that names the files found instead of the one wanted)."""
    try:
        kind = recognise(path).kind
    except (CheckpointError, OSError) as e:
        return f"unreadable ({str(e).splitlines()[0]})"
    return describe(kind) if kind is not None else "a legacy pickle (recognised only when loaded)"


def check_condition_channels(name, got: Optional[int], kind: str, expected: str) -> None:
    """CheckpointError naming the file unless a ControlNet taking ``got``-channel conditions is the
    ``kind`` ('pose' or 'face') ControlNet; ``expected`` describes the one wanted."""
    want = CONTROLNET_CHANNELS[kind]
    if got is not None and got != want:
        other = {v: k for k, v in CONTROLNET_CHANNELS.items()}.get(got, f"{got}-channel")
        raise CheckpointError(f"{name}: this ControlNet takes {got}-channel conditions ({other}), but "
                              f"{expected} ({want} channels) was expected")


def role_from_name(name: str) -> Optional[str]:
    """Rule 2: the role a file name says (released names such as controlnet-face-checkpoint-epoch-2.ckpt)."""
    n = os.path.basename(str(name)).lower()
    if "controlnet" in n or "control_net" in n:
        return FACE_CONTROLNET if any(w in n for w in ("face", "sface", "expression")) else POSE_CONTROLNET
    if "ipplus" in n:
        return IPPLUS
    if "ip-adapter" in n or "ip_adapter" in n or "ipadapter" in n:
        return IP_ADAPTER
    if "unet" in n:
        return UNET
    return None


_cache: dict = {}
_CONTENT, _NAME, _UNKNOWN = 0, 1, 2  # where a file's role came from, in the order of precedence


def _role_and_source(path) -> Tuple[Optional[str], int]:
    try:
        st = os.stat(path)
    except OSError:
        return None, _UNKNOWN
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        try:
            role = recognise(path).role
        except (CheckpointError, OSError):
            role = None  # unreadable here: the name decides, the loader reports the damage
        if role is not None:
            _cache[key] = (role, _CONTENT)
        else:
            role = role_from_name(path)
            _cache[key] = (role, _NAME if role is not None else _UNKNOWN)
    return _cache[key]


def file_role(path) -> Optional[str]:
    """A role (UNET, POSE_CONTROLNET, ...), the kind's name for a file that plays none, or None when
    it cannot be told: the precedence rule above. Cached by path, size and modification time."""
    return _role_and_source(path)[0]


def serves(path, role: str) -> bool:
    """Whether a file can serve ``role``: it is that role, or what it is cannot be told."""
    found = file_role(path)
    return found is None or found == role


def pick(candidates: Sequence[Path], role: str, prefer: Iterable[str] = ()) -> Optional[Path]:
    """The file of ``candidates`` that serves ``role`` best: known by its content before known by its
    name before unknown (the precedence above); then the first name matching ``prefer`` (regular
    expressions, in order); then the given order. None when none serves."""
    prefer = list(prefer)

    def rank(item):
        i, p = item
        name_rank = next((j for j, pat in enumerate(prefer) if re.search(pat, p.name, re.IGNORECASE)), len(prefer))
        return (_role_and_source(p)[1], name_rank, i)

    serving: List[Tuple[int, Path]] = [(i, p) for i, p in enumerate(candidates) if serves(p, role)]
    return min(serving, key=rank)[1] if serving else None


_problems: dict = {}


def _what(role: str) -> str:
    return ROLE_KINDS[role][1] if role in ROLE_KINDS else describe(role)


def problem(path, role: str) -> Optional[str]:
    """None when the file at ``path`` can serve ``role``; else one line naming the file and what is
    wrong: unreadable (truncated, not a checkpoint) or another role (precedence as :func:`file_role`,
    content first). Cached by path, size and modification time (the dropdowns ask on every listing)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    key = (str(path), role, st.st_size, st.st_mtime_ns)
    if key not in _problems:
        try:
            found = recognise(path).role or role_from_name(path)
            _problems[key] = None if found in (None, role) else f"{path} is {_what(found)}, not {_what(role)}"
        except (CheckpointError, OSError, ValueError) as e:
            _problems[key] = str(e).splitlines()[0]
    return _problems[key]


def weights_in(folder: Path) -> List[Path]:
    """The weight files under ``folder`` (recursively, sorted); none when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_EXTS)


def find_ipplus(folders: Iterable[Path]) -> Optional[Path]:
    """The AnimateDiff + IP-plus UNet file in ``folders`` (known by its keys, or by its name where they
    cannot be read), ``IPPLUS_FILE`` preferred; None when there is none."""
    found = [p for d in folders for p in weights_in(d) if "detectors" not in p.parts and file_role(p) == IPPLUS]
    return pick(found, IPPLUS, [re.escape(IPPLUS_FILE), r"ipplus"])


def require_ipplus(unet, ipplus, searched: Iterable) -> None:
    """CheckpointError naming ``IPPLUS_FILE`` and the folders searched when the UNet file's header shows
    no motion-module weights (the released layout the official loader fills from that file) and no such
    file was found. Header only: a legacy pickle is told when it is loaded."""
    if ipplus is not None:
        return
    header = recognise(unet)
    if header.shapes is not None and header.kind in ROLE_KINDS[UNET][0] and header.motion_max_len is None:
        raise ipplus_missing(str(unet), searched)


def ipplus_missing(unet_name: str, searched: Iterable = ()) -> CheckpointError:
    return CheckpointError(f"{unet_name} has no motion-module weights: {ipplus_advice(searched)}")


def ipplus_advice(searched: Iterable = ()) -> str:
    searched = [str(s) for s in searched]
    where = (f"which was not found in {', '.join(searched)}; put it in one of them" if searched else
             "which belongs in " + " or ".join(f"models/{f}" for f in IPPLUS_FOLDERS))
    return f"like the official loader, they come from {IPPLUS_FILE} (the I2V-Adapter release), {where}"
