"""Shipped workflows, checked without ComfyUI: every drag-and-drop (UI) file has an API twin that
means the same graph, the UI files are what tools/make_workflows.py generates from the twins, links
are consistent, every node is ours or a native one we know, and our nodes' inputs in the twins match
the node code. (tests/real_comfyui/ loads the same files in the real frontends and runs the twins.)"""
import ast
import importlib
import inspect
import json
from urllib.parse import urlparse

import pytest

from tests.conftest import REPO

from tools import make_workflows as make_ui
from xdyna_core.batch.jobs import Job, JobListError, fill_workflow

NAMES = sorted(make_ui.WORKFLOWS)


def _load(name):
    ui_path, api_path = make_ui.twin_paths()[name]
    return json.loads(ui_path.read_text()), json.loads(api_path.read_text())


@pytest.fixture(scope="module")
def specs():
    return make_ui.load_specs()


NODE_MODULES = ("loaders", "reference", "driving", "pose", "expression", "sampler", "quality")


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory):
    """Our node modules, imported on the CI-tier fake ComfyUI."""
    from tests.nodes_ci import fake_comfy

    models = tmp_path_factory.mktemp("models")
    fake_comfy.install(str(models))
    try:
        from nodes import comfy_bridge

        comfy_bridge.register_model_folders()
        yield [importlib.import_module(f"nodes.{mod}") for mod in NODE_MODULES]
    finally:
        fake_comfy.uninstall()


@pytest.fixture(scope="module")
def our_nodes(node_modules):
    """{node id: (class, V1-lowered inputs)} of what comfy_entrypoint registers."""
    from tests.nodes_ci.fake_comfy import node_classes

    mapping = {k: v for mod in node_modules for k, v in node_classes(mod).items()}
    return {name: (cls, cls.INPUT_TYPES()) for name, cls in mapping.items()}


def test_no_v1_registration_anywhere():
    """ComfyUI reads a module's NODE_CLASS_MAPPINGS before comfy_entrypoint: one such name anywhere in the
    pack's code would make it a V1 pack that drops every V3 node. No code names it (tests only as a string)."""
    for path in sorted(REPO.rglob("*.py")):
        if any(part.startswith(".") or part in ("node_modules", "__pycache__") for part in path.relative_to(REPO).parts):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                    else node.name if isinstance(node, ast.alias) else None)
            assert name not in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"), f"{path}:{node.lineno}"


def test_every_node_class_is_a_v3_comfy_node(node_modules):
    """Every class of nodes/ that ComfyUI could take for a node is an io.ComfyNode, listed in its module's
    NODES (what comfy_entrypoint registers), with a schema under its class name's id."""
    from comfy_api.latest import io

    for mod in node_modules:
        classes = [c for c in vars(mod).values() if inspect.isclass(c) and c.__module__ == mod.__name__]
        nodes = [c for c in classes if hasattr(c, "define_schema") or hasattr(c, "INPUT_TYPES")
                 or c.__name__.startswith("XDyna") and c.__name__ not in ("XDynaModel", "XDynaControlNets",
                                                                          "XDynaImageProj")]
        assert nodes and nodes == list(mod.NODES) or set(nodes) == set(mod.NODES), mod.__name__
        for cls in nodes:
            assert issubclass(cls, io.ComfyNode), cls
            assert cls.GET_SCHEMA().node_id == cls.__name__
            assert not any(hasattr(cls, a) for a in ("FUNCTION_V1", "RETURN_TYPES_V1")) and "INPUT_TYPES" not in vars(cls)


def test_every_ui_file_has_an_api_twin_and_back():
    ui_files = {p.stem for p in make_ui.WORKFLOW_DIR.glob("*.json")}
    api_files = {p.name[: -len("_api.json")] for p in make_ui.API_DIR.glob("*_api.json")}
    assert ui_files == api_files == set(NAMES)
    assert not list(make_ui.API_DIR.glob("*.jpg"))  # thumbnails belong next to the UI files
    # the template browser asks for <name>.jpg of every template it lists (a 404 on each open otherwise)
    assert {p.stem for p in make_ui.WORKFLOW_DIR.glob("*.jpg")} == set(NAMES) == set(make_ui.THUMB_INPUTS)
    # the template browser lists every *.json of example_workflows/: API files must stay out of it
    for name in NAMES:
        assert "nodes" in _load(name)[0] and "nodes" not in _load(name)[1]


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_is_generated_from_its_twin(name):
    ui_path, _ = make_ui.twin_paths()[name]
    assert ui_path.read_text() == make_ui.render(name), f"run: python tools/make_workflows.py ({name} drifted)"


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_mean_the_same_graph(name, specs):
    ui, api = _load(name)
    assert make_ui.ui_to_api_view(ui, specs) == make_ui.api_view(api)
    # titles (the batch runner finds its loaders by title)
    ui_titles = {str(n["id"]): n.get("title") for n in ui["nodes"]}
    for nid, node in api.items():
        title = node.get("_meta", {}).get("title")
        assert ui_titles[nid] == (title if title != specs[node["class_type"]]["display_name"] else None)


@pytest.mark.parametrize("name", NAMES)
def test_links_are_consistent(name, specs):
    ui, _ = _load(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    ids = [l[0] for l in ui["links"]]
    assert len(ids) == len(set(ids)) and ui["last_link_id"] >= max(ids)
    assert ui["last_node_id"] >= max(nodes)
    for link_id, src, src_slot, dst, dst_slot, typ in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        slot = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out["links"] or []) and slot["link"] == link_id
        assert out["type"] == typ == slot["type"], f"link {link_id}: {out['type']} -> {slot['type']}"
    for n in ui["nodes"]:  # no dangling references, every required socket fed
        for slot in n["inputs"]:
            assert slot["link"] is None or slot["link"] in ids
        for out in n["outputs"]:
            assert all(l in ids for l in out["links"] or [])
        if n["type"] in make_ui.FRONTEND_ONLY:
            continue
        for e in specs[n["type"]]["inputs"]:
            if not e["widget"] and not e["optional"]:
                assert any(s["name"] == e["name"] and s["link"] for s in n["inputs"]), f"{n['type']}.{e['name']} unconnected"


def test_node_types_are_ours_or_known_natives(specs, our_nodes):
    for name in NAMES:
        ui, api = _load(name)
        for t in {n["type"] for n in ui["nodes"]} | {n["class_type"] for n in api.values()}:
            if t.startswith("XDyna"):
                assert t in our_nodes, f"{name}: {t} is not one of our nodes"
            else:
                assert t in specs or t in make_ui.FRONTEND_ONLY, f"{name}: unknown native node {t}"


def test_our_node_specs_match_the_code(specs, our_nodes):
    """node_specs.json (from a live server) must describe our nodes as the code declares them."""
    for t, spec in specs.items():
        if not t.startswith("XDyna"):
            continue
        cls, inputs = our_nodes[t]
        declared = [(name, sec == "optional") for sec in ("required", "optional") for name in inputs.get(sec, {})]
        assert [(e["name"], e["optional"]) for e in spec["inputs"]] == declared, t
        for e in spec["inputs"]:
            sec = "optional" if e["optional"] else "required"
            expected = make_ui._input_spec(e["name"], list(inputs[sec][e["name"]]))
            assert {k: e.get(k) for k in expected} == expected, f"{t}.{e['name']}"
        assert [o["type"] for o in spec["outputs"]] == list(cls.RETURN_TYPES), t
        assert [o["name"] for o in spec["outputs"]] == list(cls.RETURN_NAMES), t


@pytest.mark.parametrize("name", NAMES)
def test_our_widget_values_are_valid_for_the_nodes(name, our_nodes):
    _, api = _load(name)
    for nid, node in api.items():
        if not node["class_type"].startswith("XDyna"):
            continue
        cls, inputs = our_nodes[node["class_type"]]
        spec = {**inputs.get("required", {}), **inputs.get("optional", {})}
        params = inspect.signature(cls.execute).parameters
        for key, value in node["inputs"].items():
            assert key in spec and key in params, f"{name} node {nid}: {key}"
            kind, opts = spec[key][0], (spec[key][1] if len(spec[key]) > 1 else {})
            if isinstance(value, list):
                continue  # a link
            if opts.get("video_upload"):
                continue  # a file of the user's input folder
            if kind == "COMBO" and value.endswith((".safetensors", ".ckpt")):
                continue  # a model file: listed when it is in the user's folders
            if kind == "COMBO" and opts["options"]:  # (an empty list: files of the user's input folder)
                assert value in opts["options"], f"{name} node {nid}: {key}={value!r} not in {opts['options']}"
            if kind in ("INT", "FLOAT"):
                assert opts.get("min", value) <= value <= opts.get("max", value), f"{name} node {nid}: {key}={value}"
            if kind == "BOOLEAN":
                assert isinstance(value, bool)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_agree_and_batch_runner_can_fill_it(name, tmp_path):
    _, api = _load(name)
    # the working size is set once (on Reference Encode); every other width/height is linked to it, or
    # (no driving video to take it from) repeats it on a node that checks it against the encoded reference
    set_here = {nid: (n["inputs"]["width"], n["inputs"]["height"]) for nid, n in api.items()
                if "width" in n["inputs"] and not isinstance(n["inputs"]["width"], list)}
    ref = next(nid for nid, n in api.items() if n["class_type"] == "XDynaReferenceEncode")
    for nid in set_here:
        if nid != ref:
            assert set_here[nid] == set_here[ref], nid
            assert api[nid]["inputs"].get("encoded_reference", [None])[0] == ref, nid
    driving = next((nid for nid, n in api.items() if n["class_type"] == "XDynaLoadDrivingVideo"), None)
    if driving is not None:
        assert api[driving]["inputs"]["reference"][0] == ref
    for nid, n in api.items():
        if nid not in set_here and "width" in n["inputs"]:
            assert n["inputs"]["width"] == [driving, 3] and n["inputs"]["height"] == [driving, 4], nid
    job = Job(name="job1", reference=tmp_path / "r.png", driving=tmp_path / "d.mp4", options={"steps": 3, "seed": 9})
    if driving is None and not any(n["class_type"] in ("LoadVideo", "VHS_LoadVideo") for n in api.values()):
        # Driven by keypoints, not a video: the batch runner (reference + driving video jobs) says so.
        with pytest.raises(JobListError, match="no driving loader"):
            fill_workflow(api, job, "r.png", "d.mp4")
        return
    filled = fill_workflow(api, job, "r.png", "d.mp4")
    kinds = {n["class_type"]: n["inputs"] for n in filled.values()}
    assert kinds["LoadImage"]["image"] == "r.png" and kinds["XDynaLoadDrivingVideo"]["file"] == "d.mp4"
    assert kinds["XDynaSampler"]["steps"] == 3 and kinds["XDynaSampler"]["seed"] == 9
    assert kinds["SaveVideo"]["filename_prefix"] == "xdyna/job1"


@pytest.mark.parametrize("name", NAMES)
def test_sound_fps_and_template_metadata(name):
    """The driving clip's sound and fps reach Create Video; the card has a title and a one-sentence
    description (web/templates.json, which web/xdyna.js gives the template browser); the missing-model dialog
    gets every model file the loaders name, with its folder and source page."""
    ui, api = _load(name)
    driving = next((nid for nid, n in api.items() if n["class_type"] == "XDynaLoadDrivingVideo"), None)
    create = next(n for n in api.values() if n["class_type"] == "CreateVideo")
    if driving is not None:  # (a keypoints-driven workflow has no clip: its fps is a widget, no sound)
        assert create["inputs"]["audio"] == [driving, 1] and create["inputs"]["fps"] == [driving, 2]
    wf = make_ui.WORKFLOWS[name]
    assert wf["title"] and wf["description"].endswith(".") and wf["description"].count(". ") == 0
    cards = {c["name"]: c for c in json.loads(make_ui.CARDS_PATH.read_text())}
    assert cards[name]["title"] == wf["title"] and cards[name]["description"] == wf["description"]
    assert not set("-_") & set(wf["description"])  # the browser shows - and _ of descriptions as spaces
    named = {v for n in api.values() for k, v in n["inputs"].items()
             if isinstance(v, str) and v.endswith((".safetensors", ".ckpt"))}
    listed = {m["name"]: m for m in ui["models"]}
    assert set(listed) == named
    assert len({m["url"] for m in ui["models"]}) == len(ui["models"])  # the frontend keys them by url
    folder_of = {"unet_name": "xdyna", "pose_controlnet": "xdyna", "face_controlnet": "xdyna", "ipadapter_name":
                 "ipadapter", "clip_name": "clip_vision", "ckpt_name": "checkpoints"}
    for n in api.values():
        for k, v in n["inputs"].items():
            if isinstance(v, str) and v in listed:
                assert listed[v]["directory"] == folder_of[k], (k, v)  # into the folder its loader lists
    for m in ui["models"]:
        # the link is the file itself, saved under the name the workflow uses, and one the frontend offers
        assert m["url"].startswith(make_ui.DOWNLOAD_URL_PREFIXES) and m["name"].endswith(make_ui.DOWNLOAD_NAME_ENDINGS)
        url = urlparse(m["url"])
        assert not url.fragment and not url.query and "/resolve/" in url.path, m["url"]
        assert url.path.rsplit("/", 1)[-1] == m["name"], m
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert all(m["name"] in note for m in ui["models"])
