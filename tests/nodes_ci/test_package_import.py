"""The extension package as ComfyUI imports it: by path, registering folders and every node."""
import importlib.util
import sys

from tests.conftest import REPO


def test_package_import_registers_folders_and_nodes(comfy):
    import folder_paths

    del folder_paths.folder_names_and_paths["xdyna"]  # as in a fresh ComfyUI process
    spec = importlib.util.spec_from_file_location("ComfyUI-XDyna", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI-XDyna"] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("ComfyUI-XDyna", None)
    assert "xdyna" in folder_paths.folder_names_and_paths
    expected = {"XDynaModelLoader", "XDynaControlNetLoader", "XDynaIPAdapterLoader", "XDynaReferenceEncode", "XDynaLoadPoseKeypoints",
                "XDynaPoseExtract", "XDynaPoseFromKeypoints", "XDynaPoseAlign", "XDynaExtractExpression",
                "XDynaSampler", "XDynaQualityReport"}
    assert expected <= set(mod.NODE_CLASS_MAPPINGS)
    assert set(mod.NODE_CLASS_MAPPINGS) == set(mod.NODE_DISPLAY_NAME_MAPPINGS)
    assert mod.WEB_DIRECTORY == "./web"
