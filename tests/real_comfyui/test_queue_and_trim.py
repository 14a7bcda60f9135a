"""What ComfyUI checks when a prompt is queued, and a trimmed VIDEO, on a real server:

* a UNet file that is cut short is not offered in the loader's dropdown, and a prompt naming it is refused
  at queue time (HTTP 400 naming the file, from the loader's validate_inputs) before any node runs;
* Load Video -> Trim Video (Video Slice, 1.0 s from 1.0 s; ComfyUI >= the version that has it) -> X-Dyna
  Load Driving Video gives exactly the slice's frames."""
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.clips import frame_index, write_clip
from tests.real_comfyui.support import record, variant_of


def post_prompt(server, graph):
    """(HTTP status, JSON body) of POST /prompt."""
    req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": graph}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(server, prompt_id, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = server.get(f"/history/{prompt_id}").get(prompt_id, {})
        if rec.get("status", {}).get("completed") is not None:
            return rec
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s")


def test_truncated_unet_is_not_listed_and_is_refused_at_queue_time(comfy_server, comfy_models):
    good = comfy_models / "xdyna" / "unet-checkpoint-epoch-5.ckpt"
    cut = comfy_models / "xdyna" / "cut-unet-checkpoint.safetensors"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    try:
        listed = comfy_server.get("/object_info/XDynaModelLoader")["XDynaModelLoader"]["input"]["required"]
        options = listed["unet_name"][1]["options"] if listed["unet_name"][0] == "COMBO" else listed["unet_name"][0]
        assert good.name in options and cut.name not in options
        wf = variant_of("xdyna_pose")
        loader = next(nid for nid, n in wf.items() if n["class_type"] == "XDynaModelLoader")
        wf[loader]["inputs"]["unet_name"] = cut.name
        before = len(comfy_server.get("/history"))
        t0 = time.perf_counter()
        status, body = post_prompt(comfy_server, wf)
        record("queue-time refusal of a truncated UNet (POST /prompt)", time.perf_counter() - t0)
        assert status == 400, body
        errors = body["node_errors"][loader]["errors"]
        assert any(cut.name in e["details"] and "truncated" in e["details"] for e in errors), errors
        assert len(comfy_server.get("/history")) == before  # nothing was queued, no node ran
    finally:
        cut.unlink()


def test_video_slice_gives_exactly_the_slice(comfy_server, comfy_inputs, tmp_path):
    info = comfy_server.get("/object_info")
    if "Video Slice" not in info:
        pytest.skip("this ComfyUI has no Video Slice (Trim Video) node")
    clip = comfy_inputs / "numbered_30fps.mp4"
    write_clip(clip, 4, 30, 160, 120)  # frame i is grey level(i): its index is read back from the pixels
    wf = variant_of("xdyna_pose")
    driving = next(nid for nid, n in wf.items() if n["class_type"] == "XDynaLoadDrivingVideo")
    ref = wf[driving]["inputs"]["reference"]
    keep = {ref[0]}
    while True:  # the reference branch only: what Load Driving Video needs
        more = {v[0] for nid in keep for v in wf[nid]["inputs"].values() if isinstance(v, list)} - keep
        if not more:
            break
        keep |= more
    graph = {nid: wf[nid] for nid in keep}
    graph["80"] = {"class_type": "LoadVideo", "inputs": {"file": clip.name}}
    graph["81"] = {"class_type": "Video Slice", "inputs": {"video": ["80", 0], "start_time": 1.0, "duration": 1.0,
                                                            "strict_duration": False}}
    graph["82"] = {"class_type": "XDynaLoadDrivingVideo", "inputs": {
        "reference": ref, "start": 0, "frame_count": 0, "stride": 1, "target_fps": 0.0, "file": "none",
        "video": ["81", 0]}}
    graph["83"] = {"class_type": "SaveImage", "inputs": {"images": ["82", 0], "filename_prefix": "test/slice"}}
    status, body = post_prompt(comfy_server, graph)
    assert status == 200, body
    rec = wait_for(comfy_server, body["prompt_id"])
    assert rec["status"]["status_str"] == "success", rec["status"]
    images = rec["outputs"]["83"]["images"]
    from PIL import Image

    got = []
    for im in images:
        png = comfy_server.get(f"/view?filename={im['filename']}&subfolder={im['subfolder']}&type={im['type']}")
        path = tmp_path / im["filename"]
        path.write_bytes(png)
        got.append(frame_index(np.asarray(Image.open(path).convert("RGB"))))
    # native Trim Video keeps the frames with 1.0 s <= pts < 2.0 s: source frames 30..59
    assert got == [i % 28 for i in range(30, 60)]
