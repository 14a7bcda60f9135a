"""IP-Adapter-plus file key names: ``image_proj`` + ``ip_adapter`` sections (nested dict in .bin,
flat ``section.key`` in .safetensors) whose numbered keys ``"<i>.to_k_ip.weight"`` follow diffusers'
attention-processor order, mapped to the UNet's ``attn2.to_k_ip/to_v_ip`` names."""
from __future__ import annotations

import re
from collections.abc import Mapping

from .unet_keys import UNetLayout, unet_key_group

# Sections of an IP-Adapter file (nested dict in .bin, flat "section.key" in .safetensors).
IP_IMAGE_PROJ = "image_proj"
IP_ADAPTER = "ip_adapter"

_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")


def split_ip_adapter(sd: Mapping) -> tuple[dict, dict]:
    """Flat IP-Adapter dict (``image_proj.*``, ``ip_adapter.*``) -> (image_proj, ip_adapter) dicts."""
    proj, ip = {}, {}
    for k, v in sd.items():
        section, _, rest = k.partition(".")
        if section == IP_IMAGE_PROJ:
            proj[rest] = v
        elif section == IP_ADAPTER:
            ip[rest] = v
        else:
            raise ValueError(f"unexpected key {k!r} in an IP-Adapter file (expected 'image_proj.*' or 'ip_adapter.*')")
    return proj, ip


def ip_adapter_to_unet_keys(ip_sd: Mapping, layout: UNetLayout | None = None) -> dict:
    """``{"1.to_k_ip.weight": W, ...}`` -> ``{"down_blocks.0...attn2.to_k_ip.weight": W, ...}``."""
    index_map = (layout or UNetLayout.sd15()).ip_adapter_index_map()
    out = {}
    for k, v in ip_sd.items():
        m = _IP_KEY.match(k)
        if not m:
            raise ValueError(f"unexpected IP-Adapter key {k!r} (expected '<i>.to_k_ip.weight' / '<i>.to_v_ip.weight')")
        idx = int(m.group(1))
        if idx not in index_map:
            raise ValueError(
                f"IP-Adapter index {idx} has no cross-attention in this UNet (valid: odd 1..{max(index_map)}); "
                "is this an SDXL IP-Adapter?"
            )
        out[f"{index_map[idx]}.{m.group(2)}.weight"] = v
    return out


def unet_to_ip_adapter_keys(unet_sd: Mapping, layout: UNetLayout | None = None) -> dict:
    """Inverse of :func:`ip_adapter_to_unet_keys` on the UNet's ``to_k_ip/to_v_ip`` weights."""
    index_map = (layout or UNetLayout.sd15()).ip_adapter_index_map()
    by_module = {m: i for i, m in index_map.items()}
    out = {}
    for k, v in unet_sd.items():
        if unet_key_group(k) != "ip_adapter":
            continue
        module, _, rest = k.rpartition(".attn2.")
        idx = by_module[module + ".attn2"]
        out[f"{idx}.{rest}"] = v
    return out
