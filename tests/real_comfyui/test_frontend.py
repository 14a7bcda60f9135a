"""The drag-and-drop workflows in the real frontend (headless Chromium): they load without missing
nodes, dialogs or console errors, the frontend would queue exactly their API twins, and the web
extension draws its progress label (and, when the nodes send them, the animated previews)."""
import json
import re
import time

import pytest

from tools import make_workflows as make_ui
from tests.real_comfyui.support import REPO, record, ui_check, variant_of

NAMES = sorted(make_ui.WORKFLOWS)
EXTENSION = "XDyna.ProgressAndPreview"
# Noise of every start in a fresh user folder (no user.css, saved workflows or template index, no
# favicon) and registry look-ups that are blocked offline; nothing else may show up.
BENIGN = re.compile(r"status of 404 .*/(api/userdata|user\.css|favicon\.ico)|api\.comfy\.org"
                    # the missing-model dialog asks the model pages for file sizes (offline here)
                    r"|(Connecting to '|Fetch API cannot load )https://huggingface\.co/|Error fetching file size"
                    # frontend 1.49's own start (a Vue computed of its setting store reads app.rootGraph early;
                    # traced with a console.error stack: no extension is involved)
                    r"|ComfyApp graph accessed before initialization")
# Inputs the frontend adds to what it queues (a preview widget of LoadVideo), not part of the graph.
FRONTEND_EXTRAS = {"video-preview"}


def _strip(prompt: dict) -> dict:
    """The graph of a queued prompt without what the frontend adds: preview widgets, and the sub-inputs a
    DynamicCombo of frontend 1.4x spells out ("format.codec" of 0.33's SaveVideo)."""
    return {nid: (n["class_type"], {k: v for k, v in n["inputs"].items() if k not in FRONTEND_EXTRAS and "." not in k})
            for nid, n in prompt.items()}


def _declared(server, view: dict) -> dict:
    """An API view without the inputs this server's nodes do not declare (CreateVideo's bit_depth, new in
    later ComfyUI versions, is not queued by an older frontend; the server ignores it)."""
    info = server.get("/object_info")
    known = {t: {k for sec in ("required", "optional") for k in info[t]["input"].get(sec, {})} for t, _ in view.values()}
    return {nid: (t, {k: v for k, v in inputs.items() if k in known[t]}) for nid, (t, inputs) in view.items()}


def _absent_models(server, ui: dict) -> list:
    """The workflow's `models` entries whose file the server's model folder does not have."""
    return [m["name"] for m in ui.get("models", []) if m["name"] not in server.get(f"/models/{m['directory']}")]


def _frontend_version(comfy_env) -> tuple:
    """(major, minor) of the comfyui-frontend-package in ComfyUI's venv."""
    for dist in comfy_env.venv.glob("lib/python*/site-packages/comfyui_frontend_package-*.dist-info"):
        found = re.search(r"-(\d+)\.(\d+)", dist.name)
        return int(found.group(1)), int(found.group(2))
    return 0, 0


def _assert_clean(report: dict, absent=()):
    assert report["missingNodeTypes"] == [], report["missingNodeTypes"]
    if absent and report["dialogs"]:  # the missing-model dialog names each absent file (nothing else pops up)
        assert len(report["dialogs"]) == 1 and all(name in report["dialogs"][0] for name in absent), \
            (absent, report["dialogs"])
    elif absent:  # frontend 1.4x (ComfyUI 0.33): no dialog, the missing-models panel names them
        assert all(name in report.get("pageText", "") for name in absent), (absent, report.get("pageText", "")[:3000])
    else:
        assert report["dialogs"] == [], report["dialogs"]
    assert report["pageErrors"] == [], report["pageErrors"]
    errors = [e for e in report["consoleErrors"] if not BENIGN.search(e)]
    assert errors == [], errors
    assert EXTENSION in report["extensions"]


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_loads_and_queues_its_twin(comfy_env, comfy_server, name, tmp_path):
    ui_path, api_path = make_ui.twin_paths()[name]
    t0 = time.perf_counter()
    report = ui_check(comfy_server, ui_path, tmp_path / f"{name}.png", "--templates")
    record(f"frontend load + screenshot: {name}", time.perf_counter() - t0)
    ui = json.loads(ui_path.read_text())
    _assert_clean(report, _absent_models(comfy_server, ui))
    # the template browser's card: title and one-sentence description
    wf = make_ui.WORKFLOWS[name]
    assert wf["title"] in report["templatesText"], report["templatesText"][:3000]
    if _frontend_version(comfy_env) < (1, 40):  # 1.4x cards show the title only (the description is not drawn)
        assert wf["description"] in report["templatesText"], report["templatesText"][:3000]
    assert report["nodeCount"] == len(ui["nodes"])
    assert _strip(report["prompt"]) == _declared(comfy_server, make_ui.api_view(json.loads(api_path.read_text())))
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    # X-Dyna Load Driving Video gets what native Load Video gets: the upload button and the video player
    for node in report["widgets"]:
        if node["type"] == "XDynaLoadDrivingVideo":
            names = [w[0] for w in node["widgets"]]
            assert "upload" in names and "video-preview" in names, node


def _run_in_ui(comfy_server, tmp_path, seed):
    """Queue the S-Face workflow (test size) from the UI; the report of the run."""
    api = variant_of("xdyna_pose_sface", seed=seed, steps=3, context_length=2, context_overlap=0, fit="stretch")
    ui = make_ui.api_to_ui(api, make_ui.load_specs(), make_ui.WORKFLOWS["xdyna_pose_sface"]["columns"])
    path = tmp_path / "run_ui.json"
    path.write_text(json.dumps(ui))
    t0 = time.perf_counter()
    report = ui_check(comfy_server, path, tmp_path / "run.png", "--run")
    record("frontend: queue from the UI and follow the run", time.perf_counter() - t0)
    _assert_clean(report)
    assert ("execution_success", None) in [tuple(e) for e in report["events"]], report["events"]
    return report


@pytest.fixture(scope="module")
def ui_run(comfy_server, tmp_path_factory):
    return _run_in_ui(comfy_server, tmp_path_factory.mktemp("ui_run"), seed=4321)


def test_sampler_progress_label_follows_steps_and_windows(ui_run):
    # 4 frames in windows of 2 without overlap: 2 windows per step, 3 steps
    labels = ui_run["labels"]
    steps_seen = [tuple(map(int, m.groups())) for lab in labels if (m := re.match(r"step (\d+)/3 · window (\d+)/2", lab))]
    assert steps_seen and steps_seen == sorted(steps_seen) and steps_seen[-1][0] == 3, labels
    assert any("s/step" in lab and "ETA" in lab for lab in labels), labels
    final = {n["type"]: n["progress"] for n in ui_run["afterRun"]}
    assert re.match(r"done: 3 steps in \d+:\d\d", final["XDynaSampler"]), final
    assert re.match(r"done: 4 frames in", final["XDynaPoseExtract"] or ""), final


def test_animated_previews_when_nodes_send_them(ui_run):
    bridge = (REPO / "nodes" / "comfy_bridge.py").read_text()
    if "xdyna_preview" not in bridge:
        pytest.skip("the nodes do not send xdyna_preview outputs yet (see the web extension's header)")
    previews = {n["type"]: n["preview"] for n in ui_run["afterRun"]}
    for t in ("XDynaPoseExtract", "XDynaExtractExpression"):
        assert previews[t] == {"frames": 4, "loaded": True}, previews
