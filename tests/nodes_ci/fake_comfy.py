"""A minimal in-process stand-in for the ComfyUI modules our nodes touch (CI has no ComfyUI).

It implements just the calls comfy_bridge makes, with ComfyUI's signatures, and the part of the V3 node
API (`comfy_api.latest`: io.ComfyNode, io.Schema, the input/output types, io.NodeOutput, ComfyExtension)
our nodes use, lowered to the V1 view (INPUT_TYPES, RETURN_TYPES, ...) the way ComfyUI 0.33 lowers it,
so the tests read the schema as the server publishes it. tests/real_comfyui/ runs the
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
    install_comfy_api()
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


# ------------------------------------------------------------------------------ comfy_api.latest (V3)

def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _make_io() -> types.ModuleType:
    import enum
    from dataclasses import dataclass, field

    io = types.ModuleType("comfy_api.latest.io")

    class UploadType(str, enum.Enum):
        image = "image_upload"
        audio = "audio_upload"
        video = "video_upload"
        model = "file_upload"

    class NumberDisplay(str, enum.Enum):
        number = "number"
        slider = "slider"

    class Hidden(str, enum.Enum):
        unique_id = "UNIQUE_ID"
        prompt = "PROMPT"
        extra_pnginfo = "EXTRA_PNGINFO"

    class Input:
        Parent = None

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None,
                     default=None, force_input=None, **widget):
            self.id, self.optional = id, optional
            self.extra = _prune({"display_name": display_name, "tooltip": tooltip, "lazy": lazy, "default": default,
                                 "forceInput": force_input, **widget}) | (extra_dict or {})
            if "display_mode" in self.extra:
                self.extra["display"] = self.extra.pop("display_mode").value

        def v1(self):
            return self.Parent.io_type, dict(self.extra)

    class Output:
        Parent = None

        def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
            self.id, self.display_name, self.tooltip = id, display_name or id, tooltip
            self.is_output_list = is_output_list

    def comfytype(io_type):
        def make(cls):
            cls.io_type = io_type
            cls.Input = type("Input", (getattr(cls, "InputBase", Input),), {"Parent": cls})
            cls.Output = type("Output", (Output,), {"Parent": cls})
            return cls
        return make

    def Custom(io_type):
        return comfytype(io_type)(type(f"Custom_{io_type}", (), {}))

    class _ComboInput(Input):
        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None,
                     default=None, control_after_generate=None, upload=None, extra_dict=None, **kw):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, default=default,
                             control_after_generate=control_after_generate, **kw)
            self.extra = self.extra | {"multiselect": False, "options": list(options or [])}
            if upload is not None:
                self.extra[upload.value] = True

    io.Combo = comfytype("COMBO")(type("Combo", (), {"InputBase": _ComboInput}))
    for name, io_type in {"Int": "INT", "Float": "FLOAT", "String": "STRING", "Boolean": "BOOLEAN",
                          "Image": "IMAGE", "Mask": "MASK", "Latent": "LATENT", "Audio": "AUDIO", "Video": "VIDEO",
                          "Conditioning": "CONDITIONING", "Vae": "VAE", "ClipVision": "CLIP_VISION",
                          "Model": "MODEL"}.items():
        setattr(io, name, comfytype(io_type)(type(name, (), {})))

    @dataclass
    class Schema:
        node_id: str
        display_name: str = None
        category: str = "sd"
        inputs: list = field(default_factory=list)
        outputs: list = field(default_factory=list)
        hidden: list = field(default_factory=list)
        description: str = ""
        is_output_node: bool = False
        is_experimental: bool = False
        not_idempotent: bool = False

    class classproperty:
        def __init__(self, f):
            self.f = f

        def __get__(self, obj, owner):
            return self.f(owner)

    class NodeOutput:
        def __init__(self, *args, ui=None, expand=None, block_execution=None):
            self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

        @property
        def result(self):
            return self.args if self.args else None

        def __getitem__(self, index):
            return self.args[index]

    class HiddenHolder:
        def __init__(self, unique_id=None, prompt=None, extra_pnginfo=None):
            self.unique_id, self.prompt, self.extra_pnginfo = unique_id, prompt, extra_pnginfo

    class ComfyNode:
        """What ComfyUI reads of a V3 node class, lowered to V1 as 0.33's _ComfyNodeBaseInternal does."""
        hidden = HiddenHolder()

        @classmethod
        def define_schema(cls):
            raise NotImplementedError

        @classmethod
        def execute(cls, **kwargs):
            raise NotImplementedError

        @classmethod
        def GET_SCHEMA(cls):
            return cls.define_schema()

        @classmethod
        def INPUT_TYPES(cls):
            schema = cls.define_schema()
            out = {"required": {}}
            for i in schema.inputs:
                out.setdefault("optional" if i.optional else "required", {})[i.id] = i.v1()
            for h in schema.hidden:
                out.setdefault("hidden", {})[h.name] = (h.value,)
            return out

        RETURN_TYPES = classproperty(lambda cls: [o.Parent.io_type for o in cls.define_schema().outputs])
        RETURN_NAMES = classproperty(lambda cls: [o.display_name or o.Parent.io_type for o in cls.define_schema().outputs])
        OUTPUT_TOOLTIPS = classproperty(lambda cls: [o.tooltip for o in cls.define_schema().outputs])
        OUTPUT_NODE = classproperty(lambda cls: cls.define_schema().is_output_node)
        CATEGORY = classproperty(lambda cls: cls.define_schema().category)
        DESCRIPTION = classproperty(lambda cls: cls.define_schema().description)
        FUNCTION = "EXECUTE_NORMALIZED"

        @classmethod
        def EXECUTE_NORMALIZED(cls, *args, **kwargs):
            out = cls.execute(*args, **kwargs)
            return out if isinstance(out, NodeOutput) else NodeOutput(*out)

    for name, value in dict(UploadType=UploadType, NumberDisplay=NumberDisplay, Hidden=Hidden, Input=Input,
                            Output=Output, comfytype=comfytype, Custom=Custom, Schema=Schema, NodeOutput=NodeOutput,
                            ComfyNode=ComfyNode, HiddenHolder=HiddenHolder).items():
        setattr(io, name, value)
    return io


def install_comfy_api() -> None:
    """comfy_api.latest with io, ui and ComfyExtension; installed once and kept (node classes subclass
    its io.ComfyNode when their module is first imported)."""
    if "comfy_api.latest" in sys.modules:
        return
    import abc

    api, latest = types.ModuleType("comfy_api"), types.ModuleType("comfy_api.latest")

    class ComfyExtension(abc.ABC):
        async def on_load(self) -> None:
            pass

        @abc.abstractmethod
        async def get_node_list(self):
            ...

    latest.io, latest.ui, latest.ComfyExtension = _make_io(), types.ModuleType("comfy_api.latest.ui"), ComfyExtension
    api.latest = latest
    sys.modules.update({"comfy_api": api, "comfy_api.latest": latest})


def uninstall():
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.model_patcher", "comfy.utils", "comfy.ops"):
        sys.modules.pop(name, None)


# ------------------------------------------------------------------------------ reading V3 nodes in tests

def node_classes(module) -> dict:
    """{node_id: class} of a node module's NODES (what comfy_entrypoint registers)."""
    return {cls.GET_SCHEMA().node_id: cls for cls in module.NODES}


def options(entry) -> list:
    """The choices of a V1-lowered COMBO input entry ("COMBO", {"options": [...]})."""
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    return list(kind) if isinstance(kind, list) else list(opts["options"])


def run_node(cls, **inputs):
    """A node run as ComfyUI runs it: execute through EXECUTE_NORMALIZED; returns the io.NodeOutput."""
    return getattr(cls, cls.FUNCTION)(**inputs)
