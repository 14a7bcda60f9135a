"""ComfyUI entry point for ComfyUI-XDyna: V3 nodes (comfy_api.latest), registered only through
`comfy_entrypoint`. The module exports no NODE_CLASS_MAPPINGS: ComfyUI reads that name first and would
then ignore the entry point and every V3 node.

It must import cleanly even when optional dependencies are missing, so node modules are imported
defensively and a failing module costs only its own nodes.
"""
import importlib
import logging

WEB_DIRECTORY = "./web"

_log = logging.getLogger("ComfyUI-XDyna")

# Everything is imported package-relatively (the nodes import the core as `..xdyna_core`): nothing
# is put on sys.path, so our `nodes` and `tests` folders never shadow ComfyUI's own `nodes` module.

# One module per concept; each exports NODES, its io.ComfyNode classes.
_NODE_MODULES = ("loaders", "reference", "driving", "pose", "expression", "sampler", "quality")

try:  # model folders first: the loaders' dropdowns and the detector lookup read them
    from .nodes import comfy_bridge as _bridge

    _bridge.register_model_folders()
except Exception as exc:
    _log.error("ComfyUI-XDyna: could not register model folders: %s", exc)


def _import_nodes() -> list:
    """Every node class of the pack, in menu order; a module that fails to import is logged and skipped."""
    nodes = []
    for name in _NODE_MODULES:
        try:
            mod = importlib.import_module(f".nodes.{name}", __name__)
        except Exception as exc:  # one broken optional dependency must not hide every node
            _log.error("ComfyUI-XDyna: nodes.%s failed to import: %s", name, exc)
            continue
        nodes.extend(mod.NODES)
    return nodes


NODES = _import_nodes()  # at import, as ComfyUI imports the package (its name is in sys.modules only then)

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # outside ComfyUI (pytest collects the repository as a package): no entry point
    ComfyExtension = None

if ComfyExtension is not None:
    class XDynaExtension(ComfyExtension):
        async def get_node_list(self) -> list:
            return list(NODES)

    async def comfy_entrypoint() -> XDynaExtension:
        """Called by ComfyUI to load the extension and its nodes."""
        return XDynaExtension()


__all__ = ["WEB_DIRECTORY", "NODES", "comfy_entrypoint"]
