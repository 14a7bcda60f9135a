"""Loader nodes: build X-Dyna networks from `models/xdyna` / `models/ipadapter` files, wrapped in
ModelPatchers on the offload device. No compute happens here; the sampler loads them. The dropdowns
list only files that can serve (model_files), and a picked file that cannot is reported when the
prompt is queued (validate_inputs), not minutes later."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from comfy_api.latest import io

from . import comfy_bridge as bridge
from . import model_files as mf
from . import xdyna_types as T

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


def _weight_dtype_input():
    return io.Combo.Input("weight_dtype", options=bridge.WEIGHT_DTYPES, default="default", optional=True,
                          tooltip="fp8_e4m3fn: store the weights in 8 bits (half of fp16's memory, computed in the "
                                  "precision; small quality loss)")


def _precision_input():
    return io.Combo.Input("precision", options=bridge.PRECISIONS, default="auto",
                          tooltip="auto follows ComfyUI's policy (fp16 on most GPUs, fp32 on CPU)")


def _optional_pick(folder: str, name: str, role: Optional[str], what: str):
    if name == NONE:
        return True
    if role is None:
        return True if name in bridge.list_files(folder) else f"{what}: '{name}' is not in models/{folder}"
    return mf.check_pick(folder, name, role, what)


def _first_problem(*answers):
    return next((a for a in answers if a is not True), True)


class XDynaModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaModelLoader",
            display_name="X-Dyna UNet Loader",
            category=CATEGORY,
            description=("Loads the X-Dyna UNet (unet-checkpoint-epoch-5.ckpt or its .safetensors conversion) "
                         "from models/xdyna. If the file lacks the SD1.5 base weights, pick an SD1.5 checkpoint; "
                         "if it lacks the IP-Adapter projections, pick the IP-Adapter-plus file. If it lacks the "
                         "motion modules, they come from animatediff_v15_v1_ipplus.pth (the I2V-Adapter release) in "
                         "models/xdyna or models/animatediff_models, as in the official loader."),
            inputs=[
                io.Combo.Input("unet_name", options=mf.files_for(mf.UNET, bridge.XDYNA_FOLDER),
                               tooltip="X-Dyna UNet file in models/xdyna (only files that are one are listed)"),
                _precision_input(),
                io.Combo.Input("sd15_checkpoint", options=[NONE] + bridge.list_files("checkpoints"), default=NONE,
                               optional=True, tooltip="SD1.5 checkpoint for the base weights, when the X-Dyna file "
                                                      "does not carry them"),
                io.Combo.Input("ipadapter_name", options=[NONE] + mf.files_for(mf.IP_ADAPTER, "ipadapter"),
                               default=NONE, optional=True,
                               tooltip="ip-adapter-plus_sd15 file, when the X-Dyna file lacks to_k_ip/to_v_ip"),
                _weight_dtype_input(),
            ],
            outputs=[T.Model.Output("model", tooltip="The X-Dyna UNet (loaded on the GPU by the sampler): the "
                                                     "model input of X-Dyna Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, unet_name, sd15_checkpoint=NONE, ipadapter_name=NONE):
        return _first_problem(mf.check_pick(bridge.XDYNA_FOLDER, unet_name, mf.UNET, "unet_name"),
                              _optional_pick("checkpoints", sd15_checkpoint, None, "sd15_checkpoint"),
                              _optional_pick("ipadapter", ipadapter_name, mf.IP_ADAPTER, "ipadapter_name"))

    @classmethod
    def execute(cls, unet_name, precision, sd15_checkpoint=NONE, ipadapter_name=NONE, weight_dtype="default"):
        return io.NodeOutput(*cls.load(unet_name, precision, sd15_checkpoint, ipadapter_name, weight_dtype))

    @classmethod
    def load(cls, unet_name, precision, sd15_checkpoint=NONE, ipadapter_name=NONE, weight_dtype="default"):
        from ..xdyna_core.loading import recognise
        from ..xdyna_core.loading.checkpoints import load_xdyna_unet

        kw, compute = _build(precision, 1_320_000_000, weight_dtype)
        path = bridge.full_path(bridge.XDYNA_FOLDER, unet_name)
        sd15 = None if sd15_checkpoint == NONE else bridge.full_path("checkpoints", sd15_checkpoint)
        ip = None if ipadapter_name == NONE else bridge.full_path("ipadapter", ipadapter_name)
        searched = [d for f in recognise.IPPLUS_FOLDERS for d in bridge.folder_paths_of(f)]
        ipplus = recognise.find_ipplus(searched)
        recognise.require_ipplus(path, ipplus, searched)  # header only: before any weight is read
        unet, report = load_xdyna_unet(path, sd15_unet=sd15, ip_adapter=ip, ipplus=ipplus, **kw)
        _store(unet, weight_dtype, compute)
        return (XDynaModel(bridge.wrap(unet), compute, report.summary()),)


class XDynaControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaControlNetLoader",
            display_name="X-Dyna ControlNet Loader (pose / S-Face)",
            category=CATEGORY,
            description="Loads X-Dyna's pose ControlNet and, optionally, the S-Face (expression) ControlNet from "
                        "models/xdyna.",
            inputs=[
                io.Combo.Input("pose_controlnet", options=mf.files_for(mf.POSE_CONTROLNET, bridge.XDYNA_FOLDER),
                               tooltip="pose ControlNet (3-channel skeleton input) in models/xdyna"),
                io.Combo.Input("face_controlnet",
                               options=[NONE] + mf.files_for(mf.FACE_CONTROLNET, bridge.XDYNA_FOLDER), default=NONE,
                               tooltip="S-Face ControlNet (6-channel) in models/xdyna; none = body motion only"),
                _precision_input(),
                _weight_dtype_input(),
            ],
            outputs=[T.ControlNets.Output("controlnets", tooltip="The pose (+ S-Face) ControlNets: the controlnets "
                                                                 "input of X-Dyna Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, pose_controlnet, face_controlnet):
        return _first_problem(
            mf.check_pick(bridge.XDYNA_FOLDER, pose_controlnet, mf.POSE_CONTROLNET, "pose_controlnet"),
            _optional_pick(bridge.XDYNA_FOLDER, face_controlnet, mf.FACE_CONTROLNET, "face_controlnet"))

    @classmethod
    def execute(cls, pose_controlnet, face_controlnet, precision, weight_dtype="default"):
        return io.NodeOutput(*cls.load(pose_controlnet, face_controlnet, precision, weight_dtype))

    @classmethod
    def load(cls, pose_controlnet, face_controlnet, precision, weight_dtype="default"):
        from ..xdyna_core.loading.checkpoints import load_controlnet

        kw, compute = _build(precision, 361_000_000, weight_dtype)
        pose, _ = load_controlnet(bridge.full_path(bridge.XDYNA_FOLDER, pose_controlnet), kind="pose", **kw)
        face = None
        if face_controlnet != NONE:
            face, _ = load_controlnet(bridge.full_path(bridge.XDYNA_FOLDER, face_controlnet), kind="face", **kw)
            face = bridge.wrap(_store(face, weight_dtype, compute))
        return (XDynaControlNets(bridge.wrap(_store(pose, weight_dtype, compute)), face, compute),)


class XDynaIPAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaIPAdapterLoader",
            display_name="X-Dyna IP-Adapter Loader",
            category=CATEGORY,
            description="Loads the IP-Adapter-plus image projection (Resampler) from models/ipadapter "
                        "(ip-adapter-plus_sd15).",
            inputs=[io.Combo.Input("ipadapter_name", options=mf.files_for(mf.IP_ADAPTER, "ipadapter"),
                                   tooltip="ip-adapter-plus_sd15.safetensors or .bin in models/ipadapter")],
            outputs=[T.ImageProj.Output("image_proj", tooltip="The IP-Adapter-plus Resampler: the image_proj input "
                                                              "of X-Dyna Reference Encode.")],
        )

    @classmethod
    def validate_inputs(cls, ipadapter_name):
        return mf.check_pick("ipadapter", ipadapter_name, mf.IP_ADAPTER, "ipadapter_name")

    @classmethod
    def execute(cls, ipadapter_name):
        return io.NodeOutput(*cls.load(ipadapter_name))

    @classmethod
    def load(cls, ipadapter_name):
        from ..xdyna_core.loading.checkpoints import load_resampler

        # Small (30 M parameters): fp32 storage keeps the image tokens exact.
        model, _ = load_resampler(bridge.full_path("ipadapter", ipadapter_name), device=bridge.offload_device(),
                                  dtype=torch.float32)
        return (XDynaImageProj(bridge.wrap(model.eval())),)


NODES = [XDynaModelLoader, XDynaControlNetLoader, XDynaIPAdapterLoader]
