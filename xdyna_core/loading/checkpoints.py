"""The X-Dyna model loaders (files are read by :mod:`.files`, configs come from :mod:`.configs`).

Loaders check every key and shape of a file against a plain ``torch.nn`` twin of the model on the
meta device (a `LoadReport`), then load the model built from the requested layer operations through
its layers' own ``load_state_dict`` with ``assign=True``, so no second copy of the weights is made.
A wrong file is named by what it is (`keys.identify`) in a `CheckpointError`.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import ip_adapter_keys, kinds, sd_checkpoint_keys, unet_keys
from .configs import _resolve_config, infer_controlnet_config, infer_resampler_config, infer_unet_config
from .files import (DIFFUSERS_WEIGHT_NAMES, CheckpointError, PathLike, Source, _source, detect_format,  # noqa: F401
                    load_state_dict, read_config_metadata, read_metadata, resolve_weights_file, wrong_file_error)
from .recognise import CONTROLNET_CHANNELS, CONTROLNET_COND_KEY, IPPLUS_FILE, check_condition_channels, ipplus_advice
from ..models.controlnet import ControlNetConfig, ControlNetModel
from ..models.resampler import Resampler, ResamplerConfig
from ..models.unet3d import UNet3DConditionModel, UNet3DConfig


@dataclass
class LoadReport:
    """What a loader found. ``ok`` means every model key was loaded with the right shape."""

    path: str
    kind: str
    config: dict = field(default_factory=dict)
    num_loaded: int = 0  # model tensors found with the right shape
    num_expected: int = 0  # tensors in the model's state dict
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)  # (key, file shape, model shape, source)
    filled: dict = field(default_factory=dict)  # source name -> number of keys taken from it
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, with_path: bool = True) -> str:
        head = f"{kinds.describe(self.kind)}; {self.num_loaded} of {self.num_expected} model tensors found"
        parts = [f"{self.path}: {head}" if with_path else head]
        for src, n in self.filled.items():
            parts.append(f"{n} filled from {src}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:3])})")
        if self.mismatched:
            k, a, b, s = self.mismatched[0]
            parts.append(f"{len(self.mismatched)} with the wrong shape (e.g. {k}: {list(a)} in {s}, model wants {list(b)})")
        return "; ".join(parts)


def _config_dict(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)


def _check_against(model_sd: Mapping, sd: Mapping, origin: Mapping[str, str], report: LoadReport) -> None:
    report.missing = sorted(k for k in model_sd if k not in sd)
    report.unexpected = sorted(k for k in sd if k not in model_sd)
    report.mismatched = [
        (k, tuple(sd[k].shape), tuple(model_sd[k].shape), origin.get(k, report.path))
        for k in model_sd
        if k in sd and tuple(sd[k].shape) != tuple(model_sd[k].shape)
    ]


def _cast(sd: dict, keys, device, dtype) -> dict:
    """Cast ``sd[k]`` for k in keys, removing each from ``sd`` as it goes so the source copy can
    be freed tensor by tensor (peak memory ~ one model, not two)."""
    out = {}
    for k in keys:
        v = sd.pop(k)
        if v.is_floating_point() and dtype is not None:
            v = v.to(device=device, dtype=dtype)
        else:
            v = v.to(device=device)
        out[k] = v
    return out


def build_and_load(model_cls, config, sd: dict, *, operations=torch.nn, device="cpu", dtype=torch.float32,
                   origin: Mapping[str, str] | None = None, report: LoadReport):
    """Build ``model_cls(config, operations=...)``, check the file's keys/shapes into ``report``, load.
    The loaded tensors are taken out of ``sd`` (pass a dict you own). Raises CheckpointError naming
    the missing, unexpected and wrongly shaped keys when the report is not ok.

    What a file must hold comes from a plain ``torch.nn`` twin of the model on the meta device, never
    from the model built with ``operations``: an operations namespace may create layers that hold no
    tensors until they are loaded (ComfyUI's ``comfy.ops`` Linear under DynamicVRAM has ``weight=None``
    and fills it in ``_load_from_state_dict``), so that model's ``state_dict()`` cannot say what is
    expected. The weights then go in through ``load_state_dict``, i.e. each layer's own
    ``_load_from_state_dict``, and the loaded model is checked against the twin."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    twin = model_cls(config, operations=torch.nn, device="meta", dtype=dtype)
    expected = twin.state_dict()
    _check_against(expected, sd, origin or {}, report)
    report.num_expected = len(expected)
    report.num_loaded = len(expected) - len(report.missing) - len(report.mismatched)
    if not report.ok:
        raise CheckpointError(report.summary())
    tensors = _cast(sd, list(expected), device, dtype)
    # Built on the meta device and loaded with assign=True (no second copy of the weights), unless
    # the model keeps state that no file holds (non-persistent buffers): then built on `device`.
    on_device = device.type != "meta" and _has_unsaved_state(twin, expected)
    build_device = device if on_device else torch.device("meta")
    if operations is torch.nn and not on_device:
        model = twin
    else:
        model = model_cls(config, operations=operations, device=build_device, dtype=dtype)
    result = model.load_state_dict(tensors, strict=False, assign=not on_device)
    del tensors
    _check_loaded(model, expected, result, operations, device)
    model.eval().requires_grad_(False)
    return model


def _check_loaded(model: torch.nn.Module, expected: Mapping, result, operations, device: torch.device) -> None:
    """The layers' own loaders took exactly the expected tensors, with the expected shapes."""
    loaded = model.state_dict()
    wrong = sorted(set(result.missing_keys) | set(result.unexpected_keys) | (set(expected) ^ set(loaded)))
    wrong += [k for k in expected if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)]
    if wrong:
        name = getattr(operations, "__name__", type(operations).__name__)
        raise RuntimeError(f"{type(model).__name__} built with the operations {name} does not load like its torch.nn "
                           f"twin: {len(wrong)} tensors differ (e.g. {', '.join(wrong[:3])})")
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover and device.type != "meta":  # device="meta": structural checks of full-size files
        raise RuntimeError(f"model tensors left on the meta device after loading: {leftover[:5]}")


def _has_unsaved_state(model: torch.nn.Module, model_sd: Mapping) -> bool:
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    return any(n not in model_sd for n in names)


# ---------------------------------------------------------------------------------------------
# X-Dyna UNet
# ---------------------------------------------------------------------------------------------
def load_sd15_unet_state_dict(src: Source) -> tuple[dict, str]:
    """SD1.5 UNet weights in diffusers names from: a diffusers repo folder (with unet/) or unet
    folder, a single-file LDM checkpoint (``model.diffusion_model.*``), a bare LDM or diffusers
    UNet file, or an in-memory state dict of any of these."""
    if not isinstance(src, Mapping):
        p = Path(src)
        if p.is_dir() and (p / "unet").is_dir():
            src = p / "unet"
    sd, name, _ = _source(src, "SD1.5 UNet")
    if sd and all(k.startswith("diffusion_model.") for k in sd):  # ComfyUI's in-memory model
        sd = {k[len("diffusion_model."):]: v for k, v in sd.items()}
    kind = kinds.identify(sd)
    try:
        if kind == "sd_checkpoint":
            sd = sd_checkpoint_keys.split_ldm_checkpoint(sd, parts=("unet",))["unet"]
        elif kind == "sd_unet_ldm":
            sd, unmapped = unet_keys.convert_ldm_unet_to_diffusers(sd)
            if unmapped:
                raise ValueError(f"{len(unmapped)} keys have no known mapping, e.g. {unmapped[:3]}")
        elif kind in ("sd_unet", "xdyna_unet"):
            sd = {k: v for k, v in sd.items() if unet_keys.unet_key_group(k) == "sd15_unet"}
        else:
            raise wrong_file_error(name, kind, "an SD1.5 UNet or SD1.5 checkpoint (for the base weights)")
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{name}: cannot convert the SD1.5 UNet keys: {e}") from e
    return sd, name


def load_xdyna_unet(path: Source, sd15_unet: Source | None = None, ip_adapter: Source | None = None, config=None,
                    operations=torch.nn, device="cpu", dtype=torch.float32, ipplus: Source | None = None):
    """Load the X-Dyna UNet -> ``(UNet3DConditionModel, LoadReport)``.

    Missing weights are filled the way the official loader's ``strict=False`` load leaves them: it builds
    the UNet from SD1.5 plus ``ipplus`` (I2V-Adapter's animatediff_v15_v1_ipplus.pth) and loads the X-Dyna
    file over it, so a key the file lacks comes from ``ipplus`` (read only when the file has no motion-module
    or no IP weights or an incomplete base), else from the ``sd15_unet`` base (read when the file's base is
    incomplete); then
    ``ip_adapter`` (an IP-Adapter-plus file) fills ``to_k_ip``/``to_v_ip`` still missing. Dynamics-Adapter
    weights come from the file alone: missing ones are an error, as are unexpected keys and wrong shapes."""
    sd, name, meta = _source(path, "X-Dyna UNet")
    kind = kinds.identify(sd)
    if kind not in ("xdyna_unet", "xdyna_unet_adapters"):
        raise wrong_file_error(name, kind, "the X-Dyna UNet (unet-checkpoint-epoch-5.ckpt / xdyna_unet.safetensors)")
    report = LoadReport(path=name, kind=kind)
    origin: dict[str, str] = {}
    merged = sd  # our own dict: filled in place, emptied while loading

    def fill(extra: Mapping, groups, src_name: str) -> None:
        n = 0
        for k, v in extra.items():
            if unet_keys.unet_key_group(k) in groups and k not in merged:
                merged[k] = v
                origin[k] = src_name
                n += 1
        if n:
            report.filled[src_name] = n

    have = unet_keys.split_unet_groups(sd.keys())
    base_missing = kind == "xdyna_unet_adapters" or not _base_complete(have["sd15_unet"])
    # first fill wins: ipplus (loaded over SD1.5 in the official order), then the SD1.5 base
    if ipplus is not None and (base_missing or not (have["motion_module"] and have["ip_adapter"])):
        fill(*_read_ipplus(ipplus))
    if sd15_unet is not None and base_missing:
        base_sd, base_name = load_sd15_unet_state_dict(sd15_unet)
        fill(base_sd, ("sd15_unet",), base_name)
    elif sd15_unet is not None:
        report.notes.append("the UNet file carries the SD1.5 base weights; the separate SD1.5 model was not needed")
    if ip_adapter is not None:
        _, ip_unet, ip_name = _read_ip_adapter(ip_adapter)
        fill(ip_unet, ("ip_adapter",), ip_name)

    cfg = _resolve_config(UNet3DConfig, config, meta, infer_unet_config, merged, name)
    report.config = _config_dict(cfg)
    try:
        model = build_and_load(UNet3DConditionModel, cfg, merged, operations=operations, device=device, dtype=dtype,
                               origin=origin, report=report)
    except CheckpointError:
        raise CheckpointError(_explain_unet_failure(report, name, sd15_unet, ip_adapter, ipplus)) from None
    return model, report


def _read_ipplus(src: Source) -> tuple[dict, tuple, str]:
    """(state dict, the key groups it fills, name) of I2V-Adapter's AnimateDiff + IP-plus UNet: everything
    but the Dynamics-Adapter, which it does not have."""
    sd, name, _ = _source(src, "AnimateDiff + IP-plus UNet")
    kind = kinds.identify(sd)
    if kind != "animatediff_ipplus":
        raise wrong_file_error(name, kind, f"I2V-Adapter's AnimateDiff + IP-plus UNet ({IPPLUS_FILE})")
    return sd, ("sd15_unet", "motion_module", "ip_adapter"), name


def _base_complete(base_keys: list) -> bool:
    # an SD1.5-style UNet always has conv_in / conv_out / time embedding; a file with only some
    # base keys is treated as incomplete and filled
    need = {"conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight", "mid_block.resnets.0.conv1.weight"}
    return need <= set(base_keys) and len(base_keys) > 100


def _explain_unet_failure(report: LoadReport, name: str, sd15, ip, ipplus) -> str:
    lines = [f"{name}: the X-Dyna UNet cannot be loaded ({report.summary(with_path=False)})"]
    groups = unet_keys.split_unet_groups(report.missing)
    if groups["sd15_unet"]:
        lines.append(
            f"{len(groups['sd15_unet'])} SD1.5 base weights are missing"
            + (" and the given SD1.5 model did not provide them" if sd15 is not None else
               ": give an SD1.5 model (single-file checkpoint or diffusers unet/ folder) as the SD1.5 base")
        )
    if groups["ip_adapter"]:
        lines.append(
            f"{len(groups['ip_adapter'])} IP-Adapter projections (attn2.to_k_ip/to_v_ip) are missing"
            + ("" if ip is not None else ": give ip-adapter-plus_sd15 to fill them")
        )
    if groups["motion_module"]:
        lines.append(f"{len(groups['motion_module'])} motion-module weights are missing"
                     + (" and the given AnimateDiff + IP-plus UNet did not provide them" if ipplus is not None else
                        f": {ipplus_advice()}"))
    if groups["dynamics_adapter"]:
        lines.append(f"{len(groups['dynamics_adapter'])} Dynamics-Adapter (to_q_ff/to_out_ff) weights are missing: "
                     f"this is not a complete X-Dyna UNet checkpoint")
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------
# ControlNets
# ---------------------------------------------------------------------------------------------
def load_controlnet(path: Source, kind: str | None = None, config=None, operations=torch.nn, device="cpu",
                    dtype=torch.float32):
    """Pose (3-channel) or S-Face (6-channel) ControlNet from a file or a diffusers folder
    (config.json + diffusion_pytorch_model.*) -> ``(ControlNetModel, LoadReport)``."""
    if kind is not None and kind not in CONTROLNET_CHANNELS:
        raise ValueError(f"ControlNet kind must be one of {sorted(CONTROLNET_CHANNELS)}, got {kind!r}")
    what = {"pose": "the X-Dyna pose ControlNet", "face": "the X-Dyna S-Face ControlNet", None: "an X-Dyna ControlNet"}[kind]
    sd, name, meta = _source(path, "ControlNet")
    file_kind = kinds.identify(sd)
    if file_kind != "controlnet":
        raise wrong_file_error(name, file_kind, what + " (diffusers ControlNet layout)")
    infer = infer_controlnet_config
    folder_cfg = None if isinstance(path, Mapping) else Path(path) / "config.json"
    if folder_cfg is not None and folder_cfg.is_file():
        try:
            base = ControlNetConfig.from_diffusers_config(json.loads(folder_cfg.read_text()))
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{folder_cfg}: not a usable diffusers ControlNet config ({e})") from e
        infer = lambda s: infer_controlnet_config(s, base)
    cfg = _resolve_config(ControlNetConfig, config, meta, infer, sd, name)
    w = sd.get(CONTROLNET_COND_KEY)
    if kind is not None and w is not None:
        check_condition_channels(name, int(w.shape[1]), kind, what)
    report = LoadReport(path=name, kind="controlnet", config=_config_dict(cfg))
    model = build_and_load(ControlNetModel, cfg, sd, operations=operations, device=device, dtype=dtype, report=report)
    return model, report


# ---------------------------------------------------------------------------------------------
# IP-Adapter-plus / Resampler
# ---------------------------------------------------------------------------------------------
def _read_ip_adapter(path: Source, layout: unet_keys.UNetLayout | None = None):
    sd, name, _ = _source(path, "IP-Adapter")
    kind = kinds.identify(sd)
    if kind != "ip_adapter":
        raise wrong_file_error(name, kind, "an IP-Adapter-plus SD1.5 file (ip-adapter-plus_sd15.bin/.safetensors)")
    try:
        proj, ip = ip_adapter_keys.split_ip_adapter(sd)
        unet_ip = ip_adapter_keys.ip_adapter_to_unet_keys(ip, layout)
    except ValueError as e:
        raise CheckpointError(f"{name}: {e}") from e
    return proj, unet_ip, name


def load_ip_adapter(path: Source, layout: unet_keys.UNetLayout | None = None) -> tuple[dict, dict]:
    """IP-Adapter-plus file -> ``(image_proj state dict, UNet to_k_ip/to_v_ip state dict)``; the
    second has UNet key names (``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_ip.weight``)."""
    proj, unet_ip, _ = _read_ip_adapter(path, layout)
    return proj, unet_ip


def load_resampler(path: Source, config=None, operations=torch.nn, device="cpu", dtype=torch.float32):
    """Resampler (image_proj) from an IP-Adapter-plus file or a bare Resampler file."""
    sd, name, meta = _source(path, "Resampler")
    kind = kinds.identify(sd)
    if kind == "ip_adapter":
        sd, _ = ip_adapter_keys.split_ip_adapter(sd)
    elif kind != "resampler":
        raise wrong_file_error(name, kind, "an IP-Adapter-plus file (its image_proj Resampler)")
    cfg = _resolve_config(ResamplerConfig, config, meta, infer_resampler_config, sd, name)
    report = LoadReport(path=name, kind=kind, config=_config_dict(cfg))
    model = build_and_load(Resampler, cfg, sd, operations=operations, device=device, dtype=dtype, report=report)
    return model, report
