"""Loader nodes: build X-Dyna networks from `models/xdyna` / `models/ipadapter` files, wrapped in
ModelPatchers on the offload device. No compute happens here; the sampler loads them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..xdyna_core.loading import recognise
from . import comfy_bridge as bridge

NONE = "none"
CATEGORY = "X-Dyna/loaders"


@dataclass
class XDynaModel:
    """XDYNA_MODEL: the UNet3D (Dynamics-Adapter, motion modules, IP attention) in a ModelPatcher."""
    patcher: object
    compute_dtype: torch.dtype
    report: str


@dataclass
class XDynaControlNets:
    """XDYNA_CONTROLNETS: pose ControlNet patcher and optional S-Face ControlNet patcher."""
    pose: object
    face: Optional[object]
    compute_dtype: torch.dtype


@dataclass
class XDynaImageProj:
    """XDYNA_IMAGE_PROJ: the IP-Adapter-plus Resampler (image_proj)."""
    patcher: object


def _files_for(role: str, folder: str = bridge.XDYNA_FOLDER):
    """The files of ``folder`` a dropdown for ``role`` lists: those that are that role, or whose kind
    cannot be told cheaply (recognised by safetensors header, else by name)."""
    names = bridge.list_files(folder, exclude=("detectors/",))
    return [n for n in names if recognise.serves(bridge.full_path(folder, n), role)]


def _build(precision: str, params: int, weight_dtype: str = "default"):
    storage, manual = bridge.pick_dtypes(precision, params)
    if weight_dtype == "default":
        return dict(operations=bridge.operations(manual), device=bridge.offload_device(), dtype=storage), manual or storage
    if weight_dtype not in bridge.WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {bridge.WEIGHT_DTYPES}, got {weight_dtype!r}")
    # fp8 storage: load in the compute dtype, then store_weights_fp8 (ComfyUI casts per layer)
    compute = manual or storage
    return dict(operations=bridge.operations(compute), device=bridge.offload_device(), dtype=compute), compute


def _store(model, weight_dtype: str, compute):
    if weight_dtype != "default":
        from ..xdyna_core.models.fp8 import store_weights_fp8

        store_weights_fp8(model, compute, layer_class=bridge.fp8_layer_class)
    model.compute_dtype = compute
    return model.eval()


_WEIGHT_DTYPE = (bridge.WEIGHT_DTYPES, {"default": "default", "tooltip": "fp8_e4m3fn: store the weights in "
                                        "8 bits (half of fp16's memory, computed in the precision; small "
                                        "quality loss)"})


class XDynaModelLoader:
    DESCRIPTION = ("Loads the X-Dyna UNet (unet-checkpoint-epoch-5.ckpt or its .safetensors conversion) from "
                   "models/xdyna. If the file lacks the SD1.5 base weights, pick an SD1.5 checkpoint; if it "
                   "lacks the IP-Adapter projections, pick the IP-Adapter-plus file.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("XDYNA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The X-Dyna UNet (loaded on the GPU by the sampler): the model input of X-Dyna Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (_files_for(recognise.UNET), {"tooltip": "X-Dyna UNet file in models/xdyna "
                                                                  "(ControlNets are not listed)"}),
            "precision": (bridge.PRECISIONS, {"default": "auto", "tooltip": "auto follows ComfyUI's policy (fp16 on most GPUs, fp32 on CPU)"}),
        }, "optional": {
            "sd15_checkpoint": ([NONE] + bridge.list_files("checkpoints"), {"default": NONE, "tooltip": "SD1.5 checkpoint for the base weights, when the X-Dyna file does not carry them"}),
            "ipadapter_name": ([NONE] + _files_for(recognise.IP_ADAPTER, "ipadapter"), {"default": NONE, "tooltip": "ip-adapter-plus_sd15 file, when the X-Dyna file lacks to_k_ip/to_v_ip"}),
            "weight_dtype": _WEIGHT_DTYPE,
        }}

    def load(self, unet_name, precision, sd15_checkpoint=NONE, ipadapter_name=NONE, weight_dtype="default"):
        from ..xdyna_core.loading.checkpoints import load_xdyna_unet

        kw, compute = _build(precision, 1_320_000_000, weight_dtype)
        sd15 = None if sd15_checkpoint == NONE else bridge.full_path("checkpoints", sd15_checkpoint)
        ip = None if ipadapter_name == NONE else bridge.full_path("ipadapter", ipadapter_name)
        unet, report = load_xdyna_unet(bridge.full_path(bridge.XDYNA_FOLDER, unet_name), sd15_unet=sd15,
                                       ip_adapter=ip, **kw)
        _store(unet, weight_dtype, compute)
        return (XDynaModel(bridge.wrap(unet), compute, report.summary()),)


class XDynaControlNetLoader:
    DESCRIPTION = "Loads X-Dyna's pose ControlNet and, optionally, the S-Face (expression) ControlNet from models/xdyna."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("XDYNA_CONTROLNETS",)
    RETURN_NAMES = ("controlnets",)
    OUTPUT_TOOLTIPS = ("The pose (+ S-Face) ControlNets: the controlnets input of X-Dyna Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose_controlnet": (_files_for(recognise.POSE_CONTROLNET),
                                {"tooltip": "pose ControlNet (3-channel skeleton input) in models/xdyna"}),
            "face_controlnet": ([NONE] + _files_for(recognise.FACE_CONTROLNET),
                                {"default": NONE, "tooltip": "S-Face ControlNet (6-channel) in models/xdyna; none = "
                                                             "body motion only"}),
            "precision": (bridge.PRECISIONS, {"default": "auto", "tooltip": "auto follows ComfyUI's policy (fp16 on "
                                                                            "most GPUs, fp32 on CPU)"}),
        }, "optional": {
            "weight_dtype": _WEIGHT_DTYPE,
        }}

    def load(self, pose_controlnet, face_controlnet, precision, weight_dtype="default"):
        from ..xdyna_core.loading.checkpoints import load_controlnet

        kw, compute = _build(precision, 361_000_000, weight_dtype)
        pose, _ = load_controlnet(bridge.full_path(bridge.XDYNA_FOLDER, pose_controlnet), kind="pose", **kw)
        face = None
        if face_controlnet != NONE:
            face, _ = load_controlnet(bridge.full_path(bridge.XDYNA_FOLDER, face_controlnet), kind="face", **kw)
            face = bridge.wrap(_store(face, weight_dtype, compute))
        return (XDynaControlNets(bridge.wrap(_store(pose, weight_dtype, compute)), face, compute),)


class XDynaIPAdapterLoader:
    DESCRIPTION = "Loads the IP-Adapter-plus image projection (Resampler) from models/ipadapter (ip-adapter-plus_sd15)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("XDYNA_IMAGE_PROJ",)
    RETURN_NAMES = ("image_proj",)
    OUTPUT_TOOLTIPS = ("The IP-Adapter-plus Resampler: the image_proj input of X-Dyna Reference Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ipadapter_name": (_files_for(recognise.IP_ADAPTER, "ipadapter"),
                               {"tooltip": "ip-adapter-plus_sd15.safetensors or .bin in models/ipadapter"}),
        }}

    def load(self, ipadapter_name):
        from ..xdyna_core.loading.checkpoints import load_resampler

        # Small (30 M parameters): fp32 storage keeps the image tokens exact.
        model, _ = load_resampler(bridge.full_path("ipadapter", ipadapter_name), device=bridge.offload_device(),
                                  dtype=torch.float32)
        return (XDynaImageProj(bridge.wrap(model.eval())),)


NODE_CLASS_MAPPINGS = {
    "XDynaModelLoader": XDynaModelLoader,
    "XDynaControlNetLoader": XDynaControlNetLoader,
    "XDynaIPAdapterLoader": XDynaIPAdapterLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "XDynaModelLoader": "X-Dyna UNet Loader",
    "XDynaControlNetLoader": "X-Dyna ControlNet Loader (pose / S-Face)",
    "XDynaIPAdapterLoader": "X-Dyna IP-Adapter Loader",
}
