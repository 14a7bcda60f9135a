"""State-dict key hygiene shared by every format: ``module.`` wrappers removed, the safetensors
metadata keys our files carry, and the module-pair renamer that the UNet and VAE converters use.

The formats themselves live beside this module, each named after what it converts:
:mod:`.unet_keys` (X-Dyna / SD UNet, LDM <-> diffusers), :mod:`.vae_keys`, :mod:`.clip_keys`,
:mod:`.ip_adapter_keys`, :mod:`.sd_checkpoint_keys` (the single-file SD1.5 layout) and
:mod:`.kinds` (what kind of model a state dict holds). Pure key/shape logic: no model classes, no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# safetensors metadata key carrying a model config as JSON (tiny files, converted files).
CONFIG_METADATA_KEY = "xdyna_config"
KIND_METADATA_KEY = "xdyna_kind"


# ---------------------------------------------------------------------------------------------
# Generic key hygiene
# ---------------------------------------------------------------------------------------------
def strip_module_prefix(key: str) -> str:
    """Drop every ``module`` path component (DataParallel/DDP wrappers: ``module.conv_in.weight``).

    The reference does ``key.replace("module.", "")``; removing whole components is the same for
    every real key and cannot damage a name that merely ends in ``module`` (e.g. ``xmodule.w``).
    """
    if "module." not in key:
        return key
    return ".".join(p for p in key.split(".") if p != "module")


def normalize_keys(sd: Mapping[str, object]) -> dict:
    out = {}
    for k, v in sd.items():
        nk = strip_module_prefix(k)
        if nk in out:
            raise ValueError(f"two tensors map to the same key {nk!r} after removing 'module.' prefixes")
        out[nk] = v
    return out


def max_index(keys: Iterable[str], pattern: str) -> int:
    """Largest integer captured by ``pattern`` (group 1) over ``keys``; -1 when none matches."""
    rx = re.compile(pattern)
    best = -1
    for k in keys:
        m = rx.match(k)
        if m:
            best = max(best, int(m.group(1)))
    return best


def _rename_inner(rest: str, renames, reverse: bool) -> str | None:
    for a, b in renames:
        src, dst = (b, a) if reverse else (a, b)
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src):]
    return None


def convert_by_pairs(sd: Mapping, pairs, inner: dict, reverse: bool, reshape=None):
    """Rename keys by longest matching module prefix; ``inner[kind]`` renames inside a module.
    Returns (converted, unmapped_keys)."""
    col_from, col_to = (1, 0) if reverse else (0, 1)
    table = sorted(((p[col_from], p[col_to], p[2]) for p in pairs), key=lambda t: -len(t[0]))
    out, unmapped = {}, []
    for key, value in sd.items():
        for src, dst, kind in table:
            if key.startswith(src + "."):
                rest = key[len(src) + 1:]
                if kind != "plain":
                    new_rest = _rename_inner(rest, inner[kind], reverse)
                    if new_rest is None:
                        continue
                    rest = new_rest
                new_key = f"{dst}.{rest}"
                if reshape is not None:
                    value = reshape(kind, rest, value, reverse)
                out[new_key] = value
                break
        else:
            unmapped.append(key)
    return out, unmapped
