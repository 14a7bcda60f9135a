"""One-off converter of the released checkpoints to clean .safetensors.

``xdyna convert IN OUT.safetensors [--dtype fp16|bf16|fp32]``

Reads IN safely (never executes pickled code), removes ``state_dict`` wrappers and ``module.``
prefixes, recognises what the file is (X-Dyna UNet, pose/face ControlNet, IP-Adapter-plus, ...),
writes the tensors under their clean names (IP-Adapter: flat ``image_proj.*`` / ``ip_adapter.*``
as IPAdapter_plus expects), then re-reads OUT and checks every tensor against the source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..arg_types import DTYPE_NAMES
from ..outputs import atomic_output, check_output_path
from . import ip_adapter_keys, kinds, unet_keys
from . import keys as K
from .checkpoints import CheckpointError, load_state_dict, read_metadata, wrong_file_error

DTYPES = {name: getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}
CONVERTIBLE = ("xdyna_unet", "xdyna_unet_adapters", "controlnet", "ip_adapter", "resampler", "motion_module")


@dataclass
class ConvertResult:
    src: str
    dst: str
    kind: str
    num_tensors: int
    counts: dict = field(default_factory=dict)
    dtype: str = "unchanged"
    bytes_written: int = 0

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"{self.src}: {kinds.describe(self.kind)}\n  {self.num_tensors} tensors ({parts}); dtype {self.dtype}\n"
                f"  wrote {self.dst} ({self.bytes_written / 1e6:.1f} MB), verified by re-reading")


def _counts(kind: str, sd: dict) -> dict:
    if kind.startswith("xdyna_unet") or kind == "motion_module":
        return {g: len(v) for g, v in unet_keys.split_unet_groups(sd.keys()).items() if v}
    if kind == "controlnet":
        w = sd.get("controlnet_cond_embedding.conv_in.weight")
        ch = int(w.shape[1]) if w is not None else "?"
        role = {3: "pose", 6: "S-Face"}.get(ch, "unknown role")
        return {f"{ch}-channel condition ({role})": len(sd)}
    if kind == "ip_adapter":
        proj, ip = ip_adapter_keys.split_ip_adapter(sd)
        return {"image_proj": len(proj), "ip_adapter": len(ip)}
    return {"all": len(sd)}


def _unshare(sd: dict) -> dict:
    """safetensors refuses tensors sharing storage (views saved by torch.save): copy those."""
    seen: set = set()
    out = {}
    for k, v in sd.items():
        v = v.contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.device.type) if v.numel() else None
        if ptr is not None and ptr in seen or v.numel() * v.element_size() != v.untyped_storage().nbytes():
            v = v.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = v
    return out


def convert_file(src, dst, dtype: str | None = None) -> ConvertResult:
    src, dst = Path(src), Path(dst)
    check_output_path(dst, [src], suffixes=(".safetensors",))  # not the input (links too), a writable folder
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")

    sd = load_state_dict(src)
    kind = kinds.identify(sd)
    if kind not in CONVERTIBLE:
        raise wrong_file_error(str(src), kind, "an X-Dyna checkpoint (UNet, pose/face ControlNet) or an IP-Adapter-plus file")
    if kind == "ip_adapter":
        try:  # validates the numbering (SD1.5: odd indices 1..31)
            ip_adapter_keys.ip_adapter_to_unet_keys(ip_adapter_keys.split_ip_adapter(sd)[1])
        except ValueError as e:
            raise CheckpointError(f"{src}: {e}") from e
    target = DTYPES.get(dtype) if dtype else None
    if target is not None:
        sd = {k: (v.to(target) if v.is_floating_point() else v) for k, v in sd.items()}
    sd = _unshare(sd)

    meta = {"format": "pt", K.KIND_METADATA_KEY: kind, "xdyna_source": src.name}
    src_meta = read_metadata(src) if not src.is_dir() else {}
    if K.CONFIG_METADATA_KEY in src_meta:
        meta[K.CONFIG_METADATA_KEY] = src_meta[K.CONFIG_METADATA_KEY]
    with atomic_output(dst) as tmp:  # renamed into place (umask permissions) only once verified
        save_file(sd, str(tmp), metadata=meta)
        with safe_open(str(tmp), framework="pt") as f:
            keys = set(f.keys())
            if keys != set(sd):
                raise RuntimeError(f"verification failed: {len(keys ^ set(sd))} keys differ after writing {dst}")
            for k in sd:
                if not torch.equal(f.get_tensor(k), sd[k]):
                    raise RuntimeError(f"verification failed: tensor {k!r} differs after writing {dst}")
    return ConvertResult(str(src), str(dst), kind, len(sd), _counts(kind, sd),
                         str(target).replace("torch.", "") if target else "unchanged", dst.stat().st_size)

