"""A minimal in-process stand-in for the ComfyUI modules our nodes touch (CI has no ComfyUI).

It implements just the calls comfy_bridge makes, with ComfyUI's signatures. tests/real_comfyui/ runs the
same nodes through a real ComfyUI server (registration, every shipped workflow, interrupts, batch
runs, the frontend) when COMFYUI_DIR is set, which is where a drift of this fake would show.
"""
import os
import sys
import types

import torch


class InterruptProcessingException(Exception):
    pass


def install(models_dir: str) -> types.SimpleNamespace:
    state = types.SimpleNamespace(interrupt=False, loaded=[], memory_required=[], freed=0, progress=[])

    fp = types.ModuleType("folder_paths")
    fp.models_dir = models_dir
    fp.supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors"}
    fp.folder_names_and_paths = {
        "checkpoints": ([os.path.join(models_dir, "checkpoints")], set(fp.supported_pt_extensions)),
        "clip_vision": ([os.path.join(models_dir, "clip_vision")], set(fp.supported_pt_extensions)),
    }

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[name][0])

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = []
        for base in paths:
            for root, _, files in os.walk(base):
                for f in files:
                    if not exts or os.path.splitext(f)[1].lower() in exts:
                        out.append(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/"))
        return sorted(out)

    def get_full_path(name, filename):
        for base in fp.folder_names_and_paths.get(name, ([], None))[0]:
            p = os.path.join(base, filename)
            if os.path.isfile(p):
                return p
        return None

    fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = get_folder_paths, get_filename_list, get_full_path
    fp.get_temp_directory = lambda: os.path.join(os.path.dirname(models_dir), "temp")
    fp.get_input_directory = lambda: os.path.join(os.path.dirname(models_dir), "input")

    comfy = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.unet_dtype = lambda device=None, model_params=0, supported_dtypes=None, weight_dtype=None: torch.float32
    mm.unet_manual_cast = lambda weight_dtype, inference_device, supported_dtypes=None: None

    class LoadedModel:  # comfy.model_management.LoadedModel: .model is the patcher
        def __init__(self, model):
            self.model = model

        def model_unload(self, memory_to_free=None, unpatch_weights=True):
            state.freed += 1
            return True

    mm.LoadedModel = LoadedModel
    mm.current_loaded_models = []

    def load_models_gpu(models, memory_required=0, **kw):
        state.loaded.append(list(models))
        state.memory_required.append(memory_required)
        for m in models:
            if not any(lm.model is m for lm in mm.current_loaded_models):
                mm.current_loaded_models.insert(0, LoadedModel(m))

    def free_memory(memory_required, device, keep_loaded=()):  # ComfyUI's: evicts every pack's models
        for lm in list(mm.current_loaded_models):
            if lm not in keep_loaded:
                lm.model_unload()
                mm.current_loaded_models.remove(lm)

    def processing_interrupted():
        return state.interrupt

    def throw_exception_if_processing_interrupted():
        if state.interrupt:
            state.interrupt = False
            raise InterruptProcessingException()

    mm.load_models_gpu, mm.free_memory = load_models_gpu, free_memory
    mm.soft_empty_cache = lambda force=False: None
    mm.processing_interrupted = processing_interrupted
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    mp.ModelPatcher = ModelPatcher

    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            state.progress.append((value, total or self.total))
            throw_exception_if_processing_interrupted()

        def update(self, n):
            self.update_absolute(n)

    utils.ProgressBar = ProgressBar

    ops = types.ModuleType("comfy.ops")
    ops.disable_weight_init = torch.nn
    ops.manual_cast = torch.nn

    comfy.model_management, comfy.model_patcher, comfy.utils, comfy.ops = mm, mp, utils, ops
    for name, mod in {"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm,
                      "comfy.model_patcher": mp, "comfy.utils": utils, "comfy.ops": ops}.items():
        sys.modules[name] = mod
    return state


def uninstall():
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.model_patcher", "comfy.utils", "comfy.ops"):
        sys.modules.pop(name, None)
