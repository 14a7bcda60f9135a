"""X-Dyna Quality Report node on the fake ComfyUI: contract, registration, a real MediaPipe run on a
few frames with the stand-in ArcFace in models/insightface/models/buffalo_l/, and the UI preview."""
import json
import os

import pytest
import torch

from tests.conftest import assets_dir
from tests.core.test_quality import make_arcface_onnx
from tests.nodes_ci.test_pose_nodes import isolate_detector_search, to_image
from xdyna_core.preprocess.video import read_video


@pytest.fixture
def quality(comfy):
    from nodes import quality

    return quality


def test_contract(quality):
    cls = quality.XDynaQualityReport
    assert quality.NODE_CLASS_MAPPINGS == {"XDynaQualityReport": cls}
    assert quality.NODE_DISPLAY_NAME_MAPPINGS["XDynaQualityReport"] == "X-Dyna Quality Report"
    spec = cls.INPUT_TYPES()
    assert {"reference", "driving_images", "result"} <= set(spec["required"])
    for name, entry in spec["required"].items():
        assert entry[1].get("tooltip"), name
    assert cls.RETURN_TYPES == ("STRING", "IMAGE", "STRING") and len(cls.OUTPUT_TOOLTIPS) == 3
    assert cls.OUTPUT_NODE is True


def test_node_scores_driving_against_itself(quality, comfy, monkeypatch, tmp_path):
    pytest.importorskip("mediapipe")
    isolate_detector_search(monkeypatch, tmp_path)
    make_arcface_onnx(comfy.models_dir / "insightface" / "models" / "buffalo_l" / "w600k_r50.onnx")
    frames = read_video(assets_dir() / "driving_video" / "example_1_driving_1.mp4", start=100, frame_count=3)[0]
    ref = read_video(assets_dir() / "reference_image" / "example_1.png")[0]
    out = quality.XDynaQualityReport().run(to_image(ref), to_image(frames), to_image(frames), "mediapipe", "crop",
                                           False, 2, 0)
    report_json, plot, summary = out["result"]
    figures = json.loads(report_json)
    assert figures["pck@0.05"] >= 0.99 and figures["seams"] == [1, 2]  # windows [0, 1], [2, 0]
    assert "w600k_r50.onnx" in figures["identity_note"]
    assert plot.dtype == torch.float32 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[2] == 960
    assert "pck@0.05" in summary
    (shown,) = out["ui"]["images"]
    assert shown["type"] == "temp" and os.path.isfile(tmp_path / "temp" / shown["subfolder"] / shown["filename"])

    with pytest.raises(ValueError, match="context_overlap"):
        quality.XDynaQualityReport().run(to_image(ref), to_image(frames), to_image(frames), "mediapipe", "crop",
                                         False, 2, 2)
