"""The extension package as ComfyUI imports it: by path, registering folders and every node."""
import importlib.util
import sys

from tests.conftest import REPO


def import_pack():
    """The extension imported as ComfyUI imports a custom node folder: by path, as a package."""
    spec = importlib.util.spec_from_file_location("ComfyUI-XDyna", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI-XDyna"] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("ComfyUI-XDyna", None)
    return mod


def registered(mod) -> list:
    """Node ids as ComfyUI's load_custom_node registers them from comfy_entrypoint."""
    import asyncio

    from comfy_api.latest import ComfyExtension, io

    extension = asyncio.run(mod.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    nodes = asyncio.run(extension.get_node_list())
    assert all(issubclass(cls, io.ComfyNode) for cls in nodes)
    return [cls.GET_SCHEMA().node_id for cls in nodes]


def test_package_import_registers_folders_and_nodes(comfy):
    import folder_paths

    del folder_paths.folder_names_and_paths["xdyna"]  # as in a fresh ComfyUI process
    mod = import_pack()
    assert "xdyna" in folder_paths.folder_names_and_paths
    expected = ["XDynaModelLoader", "XDynaControlNetLoader", "XDynaIPAdapterLoader", "XDynaReferenceEncode",
                "XDynaLoadDrivingVideo", "XDynaLoadPoseKeypoints", "XDynaPoseExtract", "XDynaPoseFromKeypoints",
                "XDynaPoseAlign", "XDynaExtractExpression", "XDynaSampler", "XDynaQualityReport"]
    # registered as ComfyUI registers a V3 extension: comfy_entrypoint -> ComfyExtension -> get_node_list
    assert registered(mod) == expected
    # a module exporting NODE_CLASS_MAPPINGS would be loaded as V1 and lose every V3 node
    assert not hasattr(mod, "NODE_CLASS_MAPPINGS") and not hasattr(mod, "NODE_DISPLAY_NAME_MAPPINGS")
    assert mod.WEB_DIRECTORY == "./web"


def test_package_import_leaves_sys_path_alone(comfy):
    """No sys.path change: our `nodes` and `tests` folders must never shadow ComfyUI's `nodes` module."""
    before = list(sys.path)
    mod = import_pack()
    assert sys.path == before
    assert "XDynaLoadDrivingVideo" in registered(mod)
    # the nodes use the pack's own core (package-relative), not a top-level `xdyna_core`
    assert sys.modules["ComfyUI-XDyna.nodes.driving"].spans.__name__ == "ComfyUI-XDyna.xdyna_core.preprocess.span"
