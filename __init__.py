"""ComfyUI entry point for ComfyUI-XDyna.

ComfyUI imports this package from `custom_nodes/`. It must import cleanly even when optional
dependencies are missing, so node modules are imported defensively and a failing module costs
only its own nodes.
"""
import importlib
import logging

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"

_log = logging.getLogger("ComfyUI-XDyna")

# Everything is imported package-relatively (the nodes import the core as `..xdyna_core`): nothing
# is put on sys.path, so our `nodes` and `tests` folders never shadow ComfyUI's own `nodes` module.

# Node modules are added here as they are written; each exports its own mappings.
_NODE_MODULES = ("loaders", "reference", "driving", "pose", "expression", "sampler", "quality")

try:  # model folders first: the loaders' dropdowns and the detector lookup read them
    from .nodes import comfy_bridge as _bridge

    _bridge.register_model_folders()
except Exception as exc:
    _log.error("ComfyUI-XDyna: could not register model folders: %s", exc)

for _name in _NODE_MODULES:
    try:
        _mod = importlib.import_module(f".nodes.{_name}", __name__)
    except Exception as exc:  # one broken optional dependency must not hide every node
        _log.error("ComfyUI-XDyna: nodes.%s failed to import: %s", _name, exc)
        continue
    NODE_CLASS_MAPPINGS.update(getattr(_mod, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_mod, "NODE_DISPLAY_NAME_MAPPINGS", {}))

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
