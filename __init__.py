"""ComfyUI entry point for ComfyUI-XDyna.

ComfyUI imports this package from `custom_nodes/`. It must import cleanly even when optional
dependencies are missing, so node modules are imported defensively and a failing module costs
only its own nodes.
"""
import importlib
import logging
import os
import sys

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"

_log = logging.getLogger("ComfyUI-XDyna")

# The nodes import the pure-PyTorch core as the top-level package `xdyna_core` (it is also used
# standalone), so the extension folder must be importable.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

# Node modules are added here as they are written; each exports its own mappings.
_NODE_MODULES = ("loaders", "reference", "pose", "expression", "sampler", "quality")

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
