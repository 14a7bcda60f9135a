"""The only module that touches ComfyUI (`comfy.*`, `folder_paths`).

Everything here is imported lazily so node modules stay importable (and testable with a small
fake) outside a ComfyUI process. Device/dtype policy, model folders, ModelPatcher wrapping,
progress bars, previews and interrupts live here and nowhere else.
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import Iterable, List, Optional, Sequence

import torch

from ..xdyna_core.pixels import to_uint8

log = logging.getLogger("ComfyUI-XDyna")

XDYNA_FOLDER = "xdyna"
# Shared folders the X-Dyna files sit in next to other packs' files.
SHARED_FOLDERS = ("ipadapter", "clip_vision", "insightface", "checkpoints", "animatediff_models")


def _fp():
    import folder_paths

    return folder_paths


def _mm():
    import comfy.model_management as mm

    return mm


# ------------------------------------------------------------------------------ model folders

def register_model_folders() -> None:
    """Register `models/xdyna` and the shared folders, keeping paths that extra_model_paths.yaml
    added before custom nodes were imported. `xdyna` and `insightface` also list .onnx detectors."""
    fp = _fp()
    for name in (XDYNA_FOLDER,) + SHARED_FOLDERS:
        default = os.path.join(fp.models_dir, name)
        paths, exts = fp.folder_names_and_paths.get(name, ([], set(fp.supported_pt_extensions)))
        exts = set(exts) or set(fp.supported_pt_extensions)
        if name in (XDYNA_FOLDER, "insightface"):
            exts |= {".onnx"}
        fp.folder_names_and_paths[name] = ([default] + [p for p in paths if p != default], exts)


def list_files(folder: str, exclude: Sequence[str] = ()) -> List[str]:
    try:
        names = _fp().get_filename_list(folder)
    except Exception:  # an unknown folder lists nothing rather than breaking /object_info
        return []
    return [n for n in names if not any(x in n.replace("\\", "/") for x in exclude)]


def full_path(folder: str, name: str) -> str:
    path = _fp().get_full_path(folder, name)
    if path is None:
        searched = ", ".join(_fp().get_folder_paths(folder)) or f"models/{folder}"
        raise FileNotFoundError(f"'{name}' not found in the '{folder}' model folder(s): {searched}")
    return path


def folder_paths_of(folder: str) -> List[str]:
    try:
        return list(_fp().get_folder_paths(folder))
    except Exception:
        return []


def detector_dirs() -> List[str]:
    """Where pose/face detector files are looked up: models/xdyna/detectors, the insightface
    folder, and comfyui_controlnet_aux's checkpoint roots that exist ($AUX_ANNOTATOR_CKPTS_PATH,
    its config.yaml's annotator_ckpts_path, ckpts/ of each folder name in dwpose.CONTROLNET_AUX_PACKS)."""
    dirs = [os.path.join(p, "detectors") for p in folder_paths_of(XDYNA_FOLDER)]
    dirs += folder_paths_of("insightface")
    from ..xdyna_core.preprocess.dwpose import controlnet_aux_ckpts_roots

    custom_nodes = folder_paths_of("custom_nodes")
    try:
        custom_nodes = custom_nodes or [os.path.join(os.path.dirname(_fp().models_dir), "custom_nodes")]
    except Exception:
        pass
    roots = [str(r) for cn in (custom_nodes or [None]) for r in controlnet_aux_ckpts_roots(cn)]
    dirs += [r for r in dict.fromkeys(roots) if os.path.isdir(r)]
    return dirs


# ------------------------------------------------------------------------------ devices / dtypes

def torch_device() -> torch.device:
    return _mm().get_torch_device()


def offload_device() -> torch.device:
    return _mm().unet_offload_device()


def intermediate_device() -> torch.device:
    return _mm().intermediate_device()


PRECISIONS = ["auto", "fp16", "bf16", "fp32"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_dtypes(precision: str, params: int):
    """(storage dtype, compute dtype or None) following ComfyUI's policy unless the user chose."""
    mm = _mm()
    device = mm.get_torch_device()
    if precision in _DTYPES:
        dtype = _DTYPES[precision]
        if device.type == "cpu" and dtype != torch.float32:
            log.warning("X-Dyna: %s on CPU is slow; fp32 is the CPU default", precision)
        return dtype, None
    dtype = mm.unet_dtype(device=device, model_params=params,
                          supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    return dtype, mm.unet_manual_cast(dtype, device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])


def operations(manual_cast: Optional[torch.dtype]):
    """comfy.ops layers: weights are not initialised (they come from the file) and low-VRAM
    partial loading can stream them; manual_cast when storage and compute dtypes differ."""
    import comfy.ops

    return comfy.ops.manual_cast if manual_cast is not None else comfy.ops.disable_weight_init


# Weight storage choices of the UNet/ControlNet loaders ("default": the precision's dtype).
WEIGHT_DTYPES = ["default", "fp8_e4m3fn"]
_FP8_CLASSES: dict = {}


def fp8_layer_class(cls: type) -> type:
    """fp8 variant of a comfy.ops cast layer: ComfyUI moves and casts the float8 weight as for its own
    fp8 models (so partial loading and DynamicVRAM keep streaming it), then the per-tensor scale is
    applied. The cast uses ComfyUI's offloadable mode (weights released with uncast_bias_weight, as
    comfy.ops asks of custom layers) where cast_bias_weight offers it."""
    from ..xdyna_core.models import fp8

    if not hasattr(cls, "forward_comfy_cast_weights"):  # not a cast layer: the plain fp8 layer
        return fp8.fp8_layer_class(cls)
    if cls not in _FP8_CLASSES:
        import comfy.ops

        offloadable = _offloadable_cast()

        def forward_comfy_cast_weights(self, input, *args, **kwargs):
            if offloadable:
                weight, bias, offload_stream = comfy.ops.cast_bias_weight(self, input, offloadable=True)
            else:
                weight, bias = comfy.ops.cast_bias_weight(self, input)
            try:
                scaled = fp8.dequantize(weight, self.weight_scale, weight.dtype)
                if isinstance(self, torch.nn.Conv2d):
                    return self._conv_forward(input, scaled, bias)
                return torch.nn.functional.linear(input, scaled, bias)
            finally:
                if offloadable:
                    comfy.ops.uncast_bias_weight(self, weight, bias, offload_stream)

        _FP8_CLASSES[cls] = type(f"Fp8{cls.__name__}", (cls,), {
            "forward_comfy_cast_weights": forward_comfy_cast_weights, "comfy_cast_weights": True})
    return _FP8_CLASSES[cls]


def _offloadable_cast() -> bool:
    """Whether comfy.ops.cast_bias_weight takes ``offloadable`` (and uncast_bias_weight exists)."""
    import inspect

    import comfy.ops

    try:
        takes = "offloadable" in inspect.signature(comfy.ops.cast_bias_weight).parameters
    except (TypeError, ValueError):
        return False
    return takes and hasattr(comfy.ops, "uncast_bias_weight")


def wrap(module: torch.nn.Module):
    """A loaded network in the patcher ComfyUI gives its own models: ``CoreModelPatcher`` where it exists
    (0.33: ModelPatcherDynamic when DynamicVRAM is on, so loading ours does not evict ComfyUI's dynamic
    models), else ModelPatcher. The storage dtypes are recorded first, as ComfyUI does for its models
    (DynamicVRAM stages each weight in that dtype: fp8 weights stay 8-bit)."""
    import comfy.model_patcher

    mm = _mm()
    archive = getattr(mm, "archive_model_dtypes", None)
    if archive is not None:
        archive(module)
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return patcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def load_on_device(patchers: Iterable, memory_required: int = 0) -> None:
    _mm().load_models_gpu([p for p in patchers if p is not None], memory_required=memory_required)


def free_models(patchers: Iterable) -> None:
    """Unload OUR models (after an interrupt, or when the user asks not to keep them loaded): only the
    entries of ComfyUI's loaded-model list that are our patchers, so other packs' models stay loaded."""
    mm = _mm()
    ours = [p for p in patchers if p is not None]
    try:
        loaded = mm.current_loaded_models
        for i in range(len(loaded) - 1, -1, -1):
            if any(loaded[i].model is p for p in ours) and loaded[i].model_unload():
                loaded.pop(i)
    except Exception as e:  # never mask the original error
        log.warning("X-Dyna: freeing models failed: %s", e)
    mm.soft_empty_cache()


def attention_backend():
    """ComfyUI's selected attention kernel (sage/xformers/pytorch/split...) in our signature."""
    try:
        from comfy.ldm.modules import attention as ca

        fn = ca.optimized_attention
    except Exception:
        return None

    def backend(q, k, v, heads):
        return fn(q, k, v, heads)
    return backend


# ------------------------------------------------------------------------------ progress / cancel

def interrupted() -> bool:
    return bool(_mm().processing_interrupted())


def raise_if_interrupted() -> None:
    _mm().throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI progress bar (websocket `progress` events) with optional latent previews."""

    def __init__(self, total: int, preview_device=None, previews: bool = True):
        import comfy.utils

        self.total = max(1, int(total))
        self.bar = comfy.utils.ProgressBar(self.total)
        self.count = 0
        self.previewer = None
        if not previews:
            return
        try:
            import comfy.latent_formats
            import latent_preview

            self.previewer = latent_preview.get_previewer(preview_device or torch_device(), comfy.latent_formats.SD15())
        except Exception:
            self.previewer = None

    def update(self, n: int = 1, x0: Optional[torch.Tensor] = None):
        self.count = min(self.total, self.count + n)
        preview = None
        if x0 is not None and self.previewer is not None:
            try:
                preview = self.previewer.decode_latent_to_preview_image("JPEG", x0)
            except Exception:
                preview = None
        self.bar.update_absolute(self.count, self.total, preview)


# ------------------------------------------------------------------------------ UI previews

PREVIEW_KEY = "xdyna_preview"
WARNING_KEY = "xdyna_warning"  # UI output: lines web/xdyna.js shows on the node (empty list: none)


def frames_preview(images: torch.Tensor, prefix: str, fps: float = 8.0, frame_count: int = 48,
                   max_height: int = 160) -> dict:
    """UI output for web/xdyna.js: up to ``frame_count`` frames (evenly picked) of an IMAGE batch as
    one JPEG sprite sheet in the temp folder, ``{"xdyna_preview": [{filename, subfolder, type,
    frames, columns, width, height, fps}]}``. A preview that cannot be written is skipped with a
    warning; it never fails the node."""
    try:
        from PIL import Image

        n = int(images.shape[0])
        stride = max(1, -(-n // frame_count))
        pick = images[::stride, ..., :3]
        h, w = int(pick.shape[1]), int(pick.shape[2])
        scale = min(1.0, max_height / h)
        fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
        cols = min(len(pick), 8)
        rows = -(-len(pick) // cols)
        sheet = Image.new("RGB", (cols * fw, rows * fh))
        for i, frame in enumerate(pick):
            img = Image.fromarray(to_uint8(frame).cpu().numpy())
            if (fw, fh) != (w, h):
                img = img.resize((fw, fh), Image.BILINEAR)
            sheet.paste(img, ((i % cols) * fw, (i // cols) * fh))
        folder = os.path.join(_fp().get_temp_directory(), "xdyna")
        os.makedirs(folder, exist_ok=True)
        name = f"{prefix}_{uuid.uuid4().hex[:12]}.jpg"
        sheet.save(os.path.join(folder, name), quality=85)
        return {PREVIEW_KEY: [{"filename": name, "subfolder": "xdyna", "type": "temp", "frames": len(pick),
                               "columns": cols, "width": fw, "height": fh, "fps": fps / stride}]}
    except Exception as e:  # a preview is a nicety
        log.warning("X-Dyna: preview not written: %s", e)
        return {}


def image_preview(images: torch.Tensor, prefix: str) -> dict:
    """ComfyUI's own UI output for still images: each image of the batch as a PNG in the temp
    folder, ``{"images": [{filename, subfolder, type}]}`` (shown on the node). A preview that cannot
    be written is skipped with a warning."""
    try:
        from PIL import Image

        folder = os.path.join(_fp().get_temp_directory(), "xdyna")
        os.makedirs(folder, exist_ok=True)
        shown = []
        for frame in images[..., :3]:
            name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
            Image.fromarray(to_uint8(frame).cpu().numpy()).save(os.path.join(folder, name))
            shown.append({"filename": name, "subfolder": "xdyna", "type": "temp"})
        return {"images": shown}
    except Exception as e:  # a preview is a nicety
        log.warning("X-Dyna: preview not written: %s", e)
        return {}


# ------------------------------------------------------------------------------ native models

def vae_moments(vae):
    """ComfyUI VAE -> the core's ``vae_moments`` callable: x (1, 3, H, W) in [-1, 1] -> (mean, logvar) of
    the SD posterior (unscaled), from the VAE's own encoder, so the sampler can draw the official
    posterior sample. A VAE without an SD encoder gives its encode() as the mean with zero variance."""
    fsm = getattr(vae, "first_stage_model", None)

    def moments(x: torch.Tensor):
        if fsm is None or not hasattr(fsm, "encoder"):
            log.warning("X-Dyna: this VAE has no SD encoder to sample from; using its mean latent")
            mean = vae.encode(((x + 1.0) / 2.0).movedim(1, -1)).float()
            return mean, torch.full_like(mean, -30.0)
        _mm().load_models_gpu([vae.patcher])
        device = getattr(vae, "device", torch_device())
        dtype = getattr(vae, "vae_dtype", torch.float32)
        h = fsm.encoder(x.to(device=device, dtype=dtype))
        quant = getattr(fsm, "quant_conv", None)
        mean, logvar = (quant(h) if quant is not None else h).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # the reference posterior's clamp
    return moments


def clip_vision_hidden(clip_vision):
    """ComfyUI CLIP_VISION -> the core's ``clip_hidden`` callable: preprocessed pixel values (the
    official CLIPImageProcessor numbers, made by the core) -> penultimate hidden states."""
    def hidden(pixel_values: torch.Tensor) -> torch.Tensor:
        _mm().load_models_gpu([clip_vision.patcher])
        device = getattr(clip_vision, "load_device", torch_device())
        dtype = getattr(clip_vision, "dtype", torch.float32)
        out = clip_vision.model(pixel_values=pixel_values.to(device=device, dtype=dtype), intermediate_output=-2)
        return out[1].to(intermediate_device())
    return hidden


# ------------------------------------------------------------------------------ input files

def input_files(extensions: Sequence[str]) -> List[str]:
    """Files in ComfyUI's input folder (subfolders included) with one of the extensions."""
    try:
        root = _fp().get_input_directory()
    except Exception:
        return []
    out = []
    for base, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(tuple(extensions)):
                out.append(os.path.relpath(os.path.join(base, f), root).replace(os.sep, "/"))
    return sorted(out)


def input_path(name: str) -> str:
    root = _fp().get_input_directory()
    path = os.path.normpath(os.path.join(root, name))
    if not path.startswith(os.path.normpath(root) + os.sep) or not os.path.isfile(path):
        raise FileNotFoundError(f"'{name}' is not a file in ComfyUI's input folder {root}")
    return path
