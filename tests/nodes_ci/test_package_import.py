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


def test_package_import_registers_folders_and_nodes(comfy):
    import folder_paths

    del folder_paths.folder_names_and_paths["xdyna"]  # as in a fresh ComfyUI process
    mod = import_pack()
    assert "xdyna" in folder_paths.folder_names_and_paths
    expected = {"XDynaModelLoader", "XDynaControlNetLoader", "XDynaIPAdapterLoader", "XDynaReferenceEncode", "XDynaLoadDrivingVideo", "XDynaLoadPoseKeypoints",
                "XDynaPoseExtract", "XDynaPoseFromKeypoints", "XDynaPoseAlign", "XDynaExtractExpression",
                "XDynaSampler", "XDynaQualityReport"}
    assert expected <= set(mod.NODE_CLASS_MAPPINGS)
    assert set(mod.NODE_CLASS_MAPPINGS) == set(mod.NODE_DISPLAY_NAME_MAPPINGS)
    assert mod.WEB_DIRECTORY == "./web"


def test_package_import_leaves_sys_path_alone(comfy):
    """No sys.path change: our `nodes` and `tests` folders must never shadow ComfyUI's `nodes` module."""
    before = list(sys.path)
    mod = import_pack()
    assert sys.path == before
    assert "XDynaLoadDrivingVideo" in mod.NODE_CLASS_MAPPINGS
    # the nodes use the pack's own core (package-relative), not a top-level `xdyna_core`
    assert sys.modules["ComfyUI-XDyna.nodes.driving"].spans.__name__ == "ComfyUI-XDyna.xdyna_core.preprocess.span"
