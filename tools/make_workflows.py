"""Generate the drag-and-drop (UI-format) workflows from their API-format twins, so the two never drift.

    python tools/make_workflows.py            # rewrite example_workflows/*.json from example_workflows/api/*_api.json
    python tools/make_workflows.py --check    # exit 1 when a UI file is not what its twin generates
    python tools/make_workflows.py --refresh-specs http://127.0.0.1:8188   # re-read node_specs.json from a server
    NODE_PATH=... python tools/make_workflows.py --thumbnails http://127.0.0.1:8188  # template thumbnails (.jpg)

The API twin (what `python -m xdyna_core batch` and the harness run) is the source. The frontend's
UI format also needs each node's socket/widget layout, which only the server knows (`/object_info`):
`node_specs.json` keeps that for the node types the workflows use, and the real-ComfyUI tier checks
it against the live servers (0.8.0 and 0.3.64) and loads every generated file in the frontend,
whose `graphToPrompt()` must give back the API twin. Layout (columns, notes) is defined below.
Standard library only: CI imports this module without ComfyUI.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = REPO / "example_workflows"  # ComfyUI's template browser lists this folder
API_DIR = WORKFLOW_DIR / "api"  # a sub-folder: the browser must not list API files as templates
SPECS_PATH = Path(__file__).resolve().parent / "node_specs.json"

# What the frontend turns into widgets (everything else is a socket).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
# node_specs.json is refreshed from this ComfyUI (what users run); on another version only our own nodes
# must match it (the native nodes' sockets differ between versions; the real tier runs the workflows on both)
SPECS_COMFYUI_VERSION = "0.33.0"
# Frontend rule (legacy convention kept by every frontend we support): an INT called seed /
# noise_seed, or any input with control_after_generate, gets a "control after generate" widget
# right after it, and its value is saved in widgets_values.
CONTROL_NAMES = {"seed", "noise_seed"}
CONTROL_VALUE = "fixed"  # shipped workflows are reproducible
# Upload options add a button widget whose saved value is "image" (also for videos).
UPLOAD_OPTIONS = ("image_upload", "video_upload")
UPLOAD_VALUE = "image"
# Frontend-only node types (not in /object_info, never in API format).
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}

XDYNA_FILES = "https://huggingface.co/Boese0601/X-Dyna/resolve/main/"  # the released X-Dyna weights
NOTE_COMMON = (
    "What to download (nothing is downloaded for you) and where it goes; each file as released, under\n"
    "its own name (the missing-models dialog links each one):\n"
    "  models/xdyna/          unet-checkpoint-epoch-5.ckpt, controlnet-checkpoint-epoch-5.ckpt{face}\n"
    "                         (huggingface.co/Boese0601/X-Dyna: unet/, controlnet/{face_dir})\n"
    "  models/ipadapter/      ip-adapter-plus_sd15.safetensors   (huggingface.co/h94/IP-Adapter, models/)\n"
    "  models/clip_vision/    model.safetensors  (h94/IP-Adapter models/image_encoder/: CLIP ViT-H/14)\n"
    "  models/checkpoints/    v1-5-pruned-emaonly.safetensors (Stable Diffusion 1.5)\n"
    "{detectors}"
    "\nThe working size is set once, on X-Dyna Reference Encode (multiples of 8; X-Dyna was trained at\n"
    "512x896); the driving video and the poses follow it. X-Dyna Load Driving Video decodes only the frames\n"
    "used (start, frame_count, stride or target_fps) at that size, and passes their sound to Create Video.\n"
    "Batch runs: python -m xdyna_core batch --workflow example_workflows/api/{name}_api.json ..."
)
DETECTORS = ("  models/xdyna/detectors/ yolox_l.onnx, dw-ll_ucoco_384.onnx (DWPose; or the .torchscript.pt\n"
             "                         files; comfyui_controlnet_aux's downloads are found where they are)\n")

# ComfyUI's missing-model dialog: one entry per file. Each link is the file itself, its last path segment
# is the entry's name (a browser saves a cross-origin download under the server's name, so another name
# would make the user rename it), on a host the frontend offers downloads from (huggingface.co), into the
# folder the loader lists. The X-Dyna loaders take the released .ckpt files as they are (weights_only).
_MODELS = {
    "unet": ("unet-checkpoint-epoch-5.ckpt", "xdyna", XDYNA_FILES + "unet/unet-checkpoint-epoch-5.ckpt"),
    "pose": ("controlnet-checkpoint-epoch-5.ckpt", "xdyna", XDYNA_FILES + "controlnet/controlnet-checkpoint-epoch-5.ckpt"),
    "face": ("controlnet-face-checkpoint-epoch-2.ckpt", "xdyna",
             XDYNA_FILES + "controlnet_face/controlnet-face-checkpoint-epoch-2.ckpt"),
    "ip": ("ip-adapter-plus_sd15.safetensors", "ipadapter",
           "https://huggingface.co/h94/IP-Adapter/resolve/main/models/ip-adapter-plus_sd15.safetensors"),
    "clip": ("model.safetensors", "clip_vision",
             "https://huggingface.co/h94/IP-Adapter/resolve/main/models/image_encoder/model.safetensors"),
    "sd15": ("v1-5-pruned-emaonly.safetensors", "checkpoints",
             "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors"),
}
# What the frontend (comfyui-frontend-package 1.49, missingModelMetadata) offers to download: these url
# prefixes and file name endings; anything else is shown without a download button.
DOWNLOAD_URL_PREFIXES = ("https://civitai.com/", "https://civitai.red/", "https://huggingface.co/")
DOWNLOAD_NAME_ENDINGS = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")


def models_of(*keys) -> list:
    return [{"name": n, "directory": d, "url": u} for n, d, u in (_MODELS[k] for k in keys)]


# Per workflow: card title and one-sentence description (the template browser), note text, layout
# (columns of node ids, top to bottom) and the model files it needs.
WORKFLOWS = {
    "xdyna_pose": {
        "title": "X-Dyna: animate a photo with a dance video",
        "description": "The person in the reference photo moves like the dancer in the driving video, with its sound.",
        "note": "X-Dyna: animate the reference photo with the body motion of the driving video.\n\n"
                + NOTE_COMMON.format(face="", face_dir="", detectors=DETECTORS, name="xdyna_pose"),
        "columns": [["1", "4", "7", "5", "6"], ["10", "15", "11"], ["2", "3", "14"],
                    ["20"], ["21", "22", "23"]],
        "models": models_of("unet", "pose", "ip", "clip", "sd15"),
    },
    "xdyna_pose_sface": {
        "title": "X-Dyna: body motion and facial expressions",
        "description": "Animates the reference photo with the body motion and the facial expressions of the "
                       "driving video, with its sound.",
        "note": "X-Dyna with S-Face: body motion plus facial expressions of the driving video.\n"
                "The S-Face patches come from the pose keypoints' face points (DWPose / MediaPipe);\n"
                "'landmarks' can also use insightface's 1k3d68.onnx (models/insightface/models/<pack>/).\n\n"
                + NOTE_COMMON.format(face=",\n                          controlnet-face-checkpoint-epoch-2.ckpt", face_dir=", controlnet_face/",
                                     detectors=DETECTORS, name="xdyna_pose_sface"),
        "columns": [["1", "4", "7", "5", "6"], ["10", "15", "11"], ["2", "3", "14", "16"],
                    ["20"], ["21", "22", "23"]],
        "models": models_of("unet", "pose", "face", "ip", "clip", "sd15"),
    },
    "xdyna_pose_video": {
        "title": "X-Dyna: animate a photo with a skeleton video",
        "description": "Animates the reference photo with a ready skeleton (pose) video, without any pose "
                       "detection.",
        "note": "X-Dyna driven by your own pose source: a pre-rendered skeleton video (X-Dyna style:\n"
                "OpenPose body without the head, plus hands, on black), e.g. the official aligned poses.\n"
                "Other POSE_KEYPOINT sources (comfyui_controlnet_aux DWPose/OpenPose, pose editors) go\n"
                "through 'X-Dyna Pose From Keypoints' (or 'X-Dyna Pose Align') into the sampler's pose.\n\n"
                + NOTE_COMMON.format(face="", face_dir="", detectors="", name="xdyna_pose_video"),
        "columns": [["1", "4", "7", "5", "6"], ["10", "15", "11"], ["2", "3", "14"],
                    ["20"], ["21", "22", "23"]],
        "models": models_of("unet", "pose", "ip", "clip", "sd15"),
    },
    "xdyna_pose_keypoints": {
        "title": "X-Dyna: animate a photo with pose keypoints",
        "description": "Animates the reference photo with keypoints from a JSON file or another pose node, "
                       "without a driving video.",
        "note": "X-Dyna driven by keypoints instead of a video: POSE_KEYPOINT JSON from ComfyUI's input\n"
                "folder (comfyui_controlnet_aux format: written by `python -m xdyna_core preprocess pose`,\n"
                "an OpenPose editor, or saved from a DWPose node). Or delete the loader and connect any\n"
                "node's POSE_KEYPOINT output (comfyui_controlnet_aux DWPose Estimator / OpenPose Pose, ...)\n"
                "to 'X-Dyna Pose From Keypoints' ('X-Dyna Pose Align' fits it to the reference person).\n"
                "Set the video's fps to the keypoints' frame rate.\n\n"
                + NOTE_COMMON.format(face="", face_dir="", detectors="", name="xdyna_pose_keypoints"),
        "columns": [["1", "4", "7", "5", "6"], ["10", "11", "14"], ["2", "3", "15"], ["20"], ["21", "22", "23"]],
        "models": models_of("unet", "pose", "ip", "clip", "sd15"),
    },
}
# The template cards' titles and descriptions, for web/xdyna.js (ComfyUI 0.8.0's template browser
# titles a pack's templates with their file names; the extension lists ours as a category with these).
CARDS_PATH = REPO / "web" / "templates.json"

COLUMN_GAP, ROW_GAP, MARGIN = 60, 40, 40
NOTE_SIZE = (680, 330)


# ------------------------------------------------------------------------------------- specs

def _input_spec(name: str, spec: list) -> dict:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    typ = "COMBO" if isinstance(kind, list) else str(kind)
    typ = "COMBO" if typ == DYNAMIC_COMBO else typ  # 0.33's SaveVideo format/codec: a combo widget in the UI
    widget = typ in WIDGET_TYPES and not opts.get("forceInput", False)
    entry = {"name": name, "type": typ, "widget": widget}
    if widget and typ == "INT" and (opts.get("control_after_generate") or name in CONTROL_NAMES):
        entry["control"] = True
    if any(opts.get(o) for o in UPLOAD_OPTIONS):
        entry["upload"] = True
    return entry


def specs_from_object_info(object_info: dict, types) -> dict:
    """The part of /object_info the UI format depends on, for the given node types."""
    out = {}
    for t in sorted(types):
        if t in FRONTEND_ONLY:
            continue
        info = object_info.get(t)
        if info is None:
            raise KeyError(f"node type {t} is not known to this server")
        order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
        inputs = []
        for section in ("required", "optional"):
            for name in order.get(section, []):
                e = _input_spec(name, info["input"][section][name])
                e["optional"] = section == "optional"
                inputs.append(e)
        out[t] = {"display_name": info.get("display_name") or t, "inputs": inputs,
                  "outputs": [{"name": n, "type": ty} for n, ty in zip(info["output_name"], info["output"])]}
    return out


def load_specs() -> dict:
    return json.loads(SPECS_PATH.read_text())


def dump_specs(specs: dict) -> str:
    """node_specs.json text: one line per input/output, so diffs show what changed."""
    lines = ["{"]
    for i, (t, spec) in enumerate(sorted(specs.items())):
        lines.append(f'  {json.dumps(t)}: {{"display_name": {json.dumps(spec["display_name"])},')
        for key in ("inputs", "outputs"):
            items = ",\n".join("      " + json.dumps(e, sort_keys=True) for e in spec[key])
            lines.append(f'    "{key}": [' + ("\n" + items + "\n    ]" if items else "]") + ("," if key == "inputs" else ""))
        lines.append("  }" + ("," if i < len(specs) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- API -> UI

def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def ui_inputs(spec: dict) -> list:
    """Node input slots in the frontend's order: sockets first, then widget inputs (with the
    upload button after its combo)."""
    sockets = [e for e in spec["inputs"] if not e["widget"]]
    widgets = []
    for e in spec["inputs"]:
        if e["widget"]:
            widgets.append(e)
            if e.get("upload"):
                widgets.append({"name": "upload", "type": "IMAGEUPLOAD", "widget": True, "button": True})
    return sockets + widgets


def widget_values(spec: dict, inputs: dict, defaults: dict | None = None) -> list:
    """widgets_values as the frontend saves them (a linked widget keeps a placeholder value)."""
    values = []
    for e in spec["inputs"]:
        if not e["widget"]:
            continue
        v = inputs.get(e["name"])
        if v is None or _is_link(v):
            v = (defaults or {}).get(e["name"], 0)
        values.append(v)
        if e.get("control"):
            values.append(CONTROL_VALUE)
        if e.get("upload"):
            values.append(UPLOAD_VALUE)
    return values


def widget_names(spec: dict) -> list:
    """Input name (or None for control/upload extras) of every widgets_values position."""
    names = []
    for e in spec["inputs"]:
        if e["widget"]:
            names.append(e["name"])
            names += [None] * (bool(e.get("control")) + bool(e.get("upload")))
    return names


# Room for what web/xdyna.js draws: the progress label and the animated frame preview.
LABEL_H, PREVIEW_H = 24, 200
PREVIEW_TYPES = {"XDynaPoseExtract", "XDynaPoseFromKeypoints", "XDynaPoseAlign", "XDynaExtractExpression"}
LABEL_TYPES = PREVIEW_TYPES | {"XDynaSampler", "XDynaReferenceEncode", "XDynaLoadDrivingVideo"}


def _node_size(node_type: str, spec: dict) -> list:
    slots = ui_inputs(spec)
    rows = max(len([s for s in slots if not s["widget"]]), len(spec["outputs"]))
    n_widgets = len([s for s in slots if s["widget"]]) + sum(1 for e in spec["inputs"] if e.get("control"))
    height = 30 + 22 * rows + 26 * n_widgets + 10
    width = 340
    if node_type == "CLIPTextEncode":
        height = 150
    elif node_type == "LoadImage":
        height = max(height, 380)
    elif node_type == "LoadVideo":
        height = max(height, 640)  # the frontend shows the video (portrait here) below the widgets
    if node_type in LABEL_TYPES:
        height += LABEL_H
    if node_type in PREVIEW_TYPES:
        height += PREVIEW_H
    return [width, height]


def _depth_order(api: dict) -> list:
    """Node ids in an execution order (inputs before consumers), ties by numeric id."""
    done, order = set(), []

    def visit(nid, stack=()):
        if nid in done:
            return
        if nid in stack:
            raise ValueError(f"cycle through node {nid}")
        for v in api[nid]["inputs"].values():
            if _is_link(v):
                if v[0] not in api:
                    raise ValueError(f"node {nid} links to missing node {v[0]}")
                visit(v[0], stack + (nid,))
        done.add(nid)
        order.append(nid)

    for nid in sorted(api, key=int):
        visit(nid)
    return order


# What a linked widget shows (the frontend keeps a value under the link).
# values of widgets an API file does not set (linked, or new in a later ComfyUI: CreateVideo's bit_depth)
LINKED_WIDGET_VALUES = {"fps": 30.0, "width": 512, "height": 896, "bit_depth": 8}


def api_to_ui(api: dict, specs: dict, columns: list, note: str = "", models: list | None = None) -> dict:
    """UI-format workflow (schema version 0.4, as ComfyUI's frontend saves it) for an API graph."""
    placed = [nid for col in columns for nid in col]
    if sorted(placed, key=int) != sorted(api, key=int):
        raise ValueError(f"layout columns {sorted(placed, key=int)} do not list the API nodes {sorted(api, key=int)}")
    missing = sorted({n["class_type"] for n in api.values()} - set(specs))
    if missing:
        raise KeyError(f"no node spec for {missing}: run make_ui.py --refresh-specs against a server")
    order = {nid: i for i, nid in enumerate(_depth_order(api))}

    pos, x = {}, MARGIN
    for col in columns:
        y, width = MARGIN + NOTE_SIZE[1] + ROW_GAP, 0
        for nid in col:
            size = _node_size(api[nid]["class_type"], specs[api[nid]["class_type"]])
            pos[nid] = ([x, y], size)
            y += size[1] + ROW_GAP
            width = max(width, size[0])
        x += width + COLUMN_GAP

    nodes, links = [], []
    out_links: dict = {}
    slot_of = {nid: {s["name"]: i for i, s in enumerate(ui_inputs(specs[api[nid]["class_type"]]))} for nid in api}
    link_id = 0
    for nid in sorted(api, key=int):  # links numbered by target node, then input order
        spec = specs[api[nid]["class_type"]]
        for e in spec["inputs"]:
            v = api[nid]["inputs"].get(e["name"])
            if _is_link(v):
                link_id += 1
                src, src_slot = v[0], int(v[1])
                src_type = specs[api[src]["class_type"]]["outputs"][src_slot]["type"]
                links.append([link_id, int(src), src_slot, int(nid), slot_of[nid][e["name"]], src_type])
                out_links.setdefault((src, src_slot), []).append(link_id)
    by_target = {(l[3], l[4]): l[0] for l in links}

    for nid in sorted(api, key=int):
        node = api[nid]
        t = node["class_type"]
        spec = specs[t]
        unknown = set(node["inputs"]) - {e["name"] for e in spec["inputs"]}
        if unknown:
            raise ValueError(f"node {nid} ({t}) has inputs {sorted(unknown)} the node does not declare")
        inputs = []
        for i, s in enumerate(ui_inputs(spec)):
            slot = {"localized_name": s["name"] if not s.get("button") else "choose file to upload",
                    "name": s["name"], "type": s["type"]}
            if s.get("optional") and not s["widget"]:
                slot["shape"] = 7  # hollow dot: optional socket
            if s["widget"]:
                slot["widget"] = {"name": s["name"]}
            slot["link"] = by_target.get((int(nid), i))
            inputs.append(slot)
        outputs = [{"localized_name": o["name"], "name": o["name"], "type": o["type"],
                    "links": out_links.get((nid, i)) or None} for i, o in enumerate(spec["outputs"])]
        (p, size) = pos[nid]
        ui = {"id": int(nid), "type": t, "pos": p, "size": size, "flags": {}, "order": order[nid], "mode": 0,
              "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": t},
              "widgets_values": widget_values(spec, node["inputs"], LINKED_WIDGET_VALUES)}
        title = node.get("_meta", {}).get("title")
        if title and title != spec["display_name"]:
            ui["title"] = title
        nodes.append(ui)

    last_id = max(int(n) for n in api)
    if note:
        last_id += 1
        nodes.append({"id": last_id, "type": "Note", "pos": [MARGIN, MARGIN], "size": list(NOTE_SIZE), "flags": {},
                      "order": len(api), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                      "widgets_values": [note], "color": "#432", "bgcolor": "#653"})
    ui = {"last_node_id": last_id, "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
          "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [90, 60]}}, "version": 0.4}
    if models:
        ui["models"] = models  # the frontend's missing-model dialog reads these
    return ui


def ui_to_api_view(ui: dict, specs: dict) -> dict:
    """What a UI workflow means in API terms: {id: (class_type, {input: value or [src, slot]})},
    frontend-only nodes dropped. Used to check a UI file against its twin without a frontend."""
    links = {l[0]: l for l in ui["links"]}
    out = {}
    for n in ui["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        spec = specs[n["type"]]
        inputs = {}
        for name, value in zip(widget_names(spec), n.get("widgets_values") or []):
            if name is not None:
                inputs[name] = value
        for slot in n.get("inputs", []):
            if slot.get("link") is not None:
                l = links[slot["link"]]
                inputs[slot["name"]] = [str(l[1]), l[2]]
        out[str(n["id"])] = (n["type"], inputs)
    return out


def api_view(api: dict) -> dict:
    return {nid: (n["class_type"], dict(n["inputs"])) for nid, n in api.items()}


# ------------------------------------------------------------------------------------- files

def twin_paths() -> dict:
    """{name: (ui path, api path)} for every workflow defined here."""
    return {name: (WORKFLOW_DIR / f"{name}.json", API_DIR / f"{name}_api.json") for name in WORKFLOWS}


def render(name: str, specs: dict | None = None) -> str:
    _, api_path = twin_paths()[name]
    api = json.loads(api_path.read_text())
    wf = WORKFLOWS[name]
    ui = api_to_ui(api, specs or load_specs(), wf["columns"], wf["note"], wf["models"])
    return json.dumps(ui, indent=1) + "\n"


def render_cards() -> str:
    """web/templates.json: [{name, title, description}] of every workflow, in menu order."""
    cards = [{"name": n, "title": w["title"], "description": w["description"]} for n, w in WORKFLOWS.items()]
    return json.dumps(cards, indent=1) + "\n"


def used_types() -> set:
    return {n["class_type"] for _, api_path in twin_paths().values()
            for n in json.loads(api_path.read_text()).values()}


THUMB_SIZE = (640, 400)


def write_thumbnails(url: str) -> None:
    """<name>.jpg next to each UI file (the template browser's card image): the graph as the real
    frontend draws it, via ui_check.js in headless Chromium (needs node, playwright-core, Chromium)."""
    import subprocess
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        for name, (ui_path, _) in twin_paths().items():
            raw = Path(tmp) / f"{name}.jpg"
            subprocess.run(["node", str(Path(__file__).with_name("ui_check.js")), "--url", url, "--workflow",
                            str(ui_path), "--out", str(Path(tmp) / f"{name}.png"), "--report",
                            str(Path(tmp) / f"{name}.json"), "--thumbnail", str(raw), "--width", "2400",
                            "--height", "1500"], check=True)
            img = Image.open(raw).convert("RGB")
            img.thumbnail(THUMB_SIZE, Image.LANCZOS)
            img.save(ui_path.with_suffix(".jpg"), quality=85, optimize=True)
            print(f"wrote {ui_path.with_suffix('.jpg').relative_to(REPO)}")


# The pictures each card shows (files of tests/data/assets): the reference photo and the driving input.
THUMB_INPUTS = {
    "xdyna_pose": ("reference_image/example_1.png", "driving_video/example_1_driving_1.mp4", "driving video"),
    "xdyna_pose_sface": ("reference_image/example_2.jpg", "driving_video/example_2_driving_2.mp4", "driving video"),
    "xdyna_pose_video": ("reference_image/example_1.png", "poses/example_1_pose_1.mp4", "pose video"),
    # the keypoints drawn as X-Dyna draws them (the official pose rendering of the same clip)
    "xdyna_pose_keypoints": ("reference_image/example_1.png", "poses/example_1_pose_1.mp4", "pose keypoints"),
}


def write_input_thumbnails(assets: Path) -> None:
    """<name>.jpg next to each UI file: the reference photo and a frame of the driving input, labelled,
    readable at card size. (No output frame: the released weights are not available to render one.)"""
    import av
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=26)
    w, h = THUMB_SIZE
    for name, (ref, clip, label) in THUMB_INPUTS.items():
        with av.open(str(assets / clip)) as c:
            frame = next(iter(c.decode(video=0))).to_image()
        card = Image.new("RGB", (w, h), (24, 24, 28))
        draw = ImageDraw.Draw(card)
        panels = [(Image.open(assets / ref).convert("RGB"), "reference photo"), (frame, label)]
        pw = (w - 60) // 2
        for i, (img, text) in enumerate(panels):
            img.thumbnail((pw, h - 70), Image.LANCZOS)
            x = 20 + i * (pw + 20) + (pw - img.width) // 2
            card.paste(img, (x, 20))
            draw.text((20 + i * (pw + 20) + pw // 2, h - 28), text, fill=(235, 235, 235), font=font, anchor="mm")
        path = WORKFLOW_DIR / f"{name}.jpg"
        card.save(path, quality=88, optimize=True)
        print(f"wrote {path.relative_to(REPO)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    ap.add_argument("--refresh-specs", metavar="URL", help="rewrite node_specs.json from a running ComfyUI first")
    ap.add_argument("--thumbnails", metavar="URL", help="also draw the template thumbnails with a running ComfyUI")
    ap.add_argument("--input-thumbnails", metavar="ASSETS", help="template thumbnails from the example inputs")
    args = ap.parse_args(argv)
    if args.refresh_specs:
        with urllib.request.urlopen(args.refresh_specs.rstrip("/") + "/object_info", timeout=60) as r:
            object_info = json.load(r)
        SPECS_PATH.write_text(dump_specs(specs_from_object_info(object_info, used_types())))
        print(f"wrote {SPECS_PATH}")
    stale = []
    for name, (ui_path, _) in twin_paths().items():
        text = render(name)
        if ui_path.exists() and ui_path.read_text() == text:
            continue
        stale.append(ui_path)
        if not args.check:
            ui_path.write_text(text)
            print(f"wrote {ui_path.relative_to(REPO)}")
    cards = render_cards()
    if not CARDS_PATH.exists() or CARDS_PATH.read_text() != cards:
        stale.append(CARDS_PATH)
        if not args.check:
            CARDS_PATH.write_text(cards)
            print(f"wrote {CARDS_PATH.relative_to(REPO)}")
    if args.input_thumbnails and not args.check:
        write_input_thumbnails(Path(args.input_thumbnails))
    if args.thumbnails and not args.check:
        write_thumbnails(args.thumbnails)
    if args.check and stale:
        print("out of date (run python tools/make_workflows.py): " + ", ".join(str(p.relative_to(REPO)) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
