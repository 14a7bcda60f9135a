"""Every X-Dyna node registers in a real ComfyUI, without import failures; the shipped templates are
served; node_specs.json (which tools/make_workflows.py builds the UI files from) matches the live server."""
import json
import subprocess
import time

from tools import make_workflows as make_ui
from tests.real_comfyui.support import EXT_NAME, record

EXPECTED_NODES = {
    "XDynaModelLoader", "XDynaControlNetLoader", "XDynaIPAdapterLoader", "XDynaReferenceEncode", "XDynaLoadDrivingVideo",
    "XDynaLoadPoseKeypoints", "XDynaPoseExtract", "XDynaPoseFromKeypoints", "XDynaPoseAlign", "XDynaExtractExpression",
    "XDynaSampler", "XDynaQualityReport",
}


def test_harness_check_registers_every_node(comfy_env, comfy_models, comfy_inputs, tmp_path):
    env = comfy_env.harness_env(comfy_models, comfy_inputs, HARNESS_RUN_DIR=tmp_path / "run")
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(comfy_env.harness), "check", *sorted(EXPECTED_NODES)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    record("harness check (start, /object_info, stop)", time.perf_counter() - t0)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    log = (tmp_path / "run" / "comfyui.log").read_text(errors="replace")
    assert f"custom_nodes/{EXT_NAME} (IMPORT FAILED)" not in log
    # __init__.py keeps a broken node module from hiding the others; that must not happen either
    assert "ComfyUI-XDyna: nodes." not in log and "could not register model folders" not in log, log[-4000:]


def test_server_lists_exactly_our_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    ours = {name for name, d in info.items() if d.get("python_module", "").endswith(EXT_NAME) or name.startswith("XDyna")}
    assert ours == EXPECTED_NODES
    for name in EXPECTED_NODES:
        assert info[name]["category"].startswith("X-Dyna") and info[name]["description"]


def test_node_specs_match_the_live_server(comfy_env, comfy_server):
    live = make_ui.specs_from_object_info(comfy_server.get("/object_info"), make_ui.used_types())
    stored = make_ui.load_specs()
    if comfy_env.version != make_ui.SPECS_COMFYUI_VERSION:  # natives differ between versions: ours must not
        live, stored = ({t: s for t, s in d.items() if t.startswith("XDyna")} for d in (live, stored))
    assert live == stored, "node_specs.json is stale: python tools/make_workflows.py --refresh-specs URL"


def test_templates_are_listed_and_served(comfy_server):
    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed.get(EXT_NAME, [])) == sorted(make_ui.WORKFLOWS), listed
    for name, (ui_path, _) in make_ui.twin_paths().items():
        served = comfy_server.get(f"/api/workflow_templates/{EXT_NAME}/{name}.json")
        assert served == json.loads(ui_path.read_text())
        thumb = ui_path.with_suffix(".jpg")
        if thumb.exists():
            assert comfy_server.get(f"/api/workflow_templates/{EXT_NAME}/{name}.jpg") == thumb.read_bytes()


def test_every_input_and_output_has_a_tooltip(comfy_server):
    """What the frontend shows on hover, as the live server describes our nodes."""
    info = comfy_server.get("/object_info")
    for name in EXPECTED_NODES:
        node = info[name]
        for section in ("required", "optional"):
            for key, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{key}"
        assert len(node["output_tooltips"]) == len(node["output"]) and all(node["output_tooltips"]), name


def test_template_cards_are_served_to_the_web_extension(comfy_server):
    """web/xdyna.js reads the cards' titles and descriptions from the pack's web folder."""
    cards = comfy_server.get(f"/extensions/{EXT_NAME}/templates.json")
    assert [c["name"] for c in cards] == list(make_ui.WORKFLOWS)


def test_harness_check_fails_on_a_pack_that_does_not_import(comfy_env, comfy_models, comfy_inputs, tmp_path):
    """The harness reads ComfyUI's import-time lines also in 0.3x's coloured "[INFO]" log format: a pack whose
    import raises is reported IMPORT FAILED by ComfyUI and fails 'check'."""
    broken = tmp_path / "BrokenPack"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('deliberately broken test pack')\n")
    env = comfy_env.harness_env(comfy_models, comfy_inputs, HARNESS_RUN_DIR=tmp_path / "run", EXT_DIR=str(broken),
                                EXT_NAME="BrokenPack")
    proc = subprocess.run(["bash", str(comfy_env.harness), "check"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out[-3000:]
    assert "CHECK FAIL: custom_nodes/BrokenPack reported IMPORT FAILED" in out, out[-3000:]
    assert "deliberately broken test pack" in out  # the traceback from the log is shown
