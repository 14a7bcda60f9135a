"""Quality report node: scores a result (pose agreement, identity, window seams) in the graph.
Thin adapter over xdyna_core.quality.report; model folders and previews come from comfy_bridge.

The run's settings come over links, never from widgets of their own: the sampler's LATENT carries seed,
steps, context windows and latent mode (sampler.RUN_KEY), X-Dyna Pose Extract's pose_settings the fit,
align and detector, so the seams are replayed with the run's own window offsets."""
from __future__ import annotations

import json

import torch
from comfy_api.latest import io

from ..xdyna_core.preprocess import driving as drv
from ..xdyna_core.quality.report import ReportOptions, quality_report, summary
from ..xdyna_core.sampling.context_windows import validate_context

from . import comfy_bridge as bridge
from . import xdyna_types as T
from .pose import pose_settings
from .sampler import RUN_KEY

# X-Dyna's own preprocessing, when no pose_settings are connected (e.g. poses from keypoints)
DEFAULT_POSE_SETTINGS = pose_settings("crop", False, "auto")


def run_settings(latent) -> dict:
    """The settings X-Dyna Sampler recorded in its LATENT output."""
    run = latent.get(RUN_KEY) if isinstance(latent, dict) else None
    if not isinstance(run, dict):
        raise ValueError("run: expected the latent output of X-Dyna Sampler (it carries the run's seed, steps and "
                         "context windows); this LATENT has none")
    return run


class XDynaQualityReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaQualityReport",
            display_name="X-Dyna Quality Report",
            category="X-Dyna",
            description=(
                "Scores an animation. Pose agreement: the result's keypoints, found with the same detector, against "
                "the driving keypoints in the result's geometry (same fit / align as the pose extraction): PCK at "
                "0.05 and 0.1 of the person's box diagonal, body and hands. Identity: ArcFace cosine similarity of "
                "the reference face and each result face (glintr100.onnx of antelopev2 or w600k_r50.onnx of "
                "buffalo_l in models/insightface/models/<pack>/; skipped with a note without it). Stability: "
                "frame-to-frame change at the sampler's context-window seams against inside the windows (1 = no "
                "window flicker), replayed from the run's seed and steps."),
            inputs=[
                io.Image.Input("reference", tooltip="The reference picture the result was made from."),
                io.Image.Input("driving_images", tooltip="The driving frames given to X-Dyna Pose Extract (its input, "
                                                         "not its driving_images output)."),
                io.Image.Input("result", tooltip="The decoded result frames."),
                io.Latent.Input("run", tooltip="The latent output of X-Dyna Sampler: it carries the run's seed, steps, "
                                               "context windows and latent mode."),
                T.PoseSettings.Input("pose_settings", optional=True, tooltip=(
                    "The pose_settings output of X-Dyna Pose Extract (fit, align, detector). Not connected: "
                    "X-Dyna's crop, no alignment, detector auto.")),
            ],
            outputs=[
                io.String.Output("report_json", tooltip=(
                    "Every figure as JSON: pck@0.05 (overall pose score), pck@0.1, pck@0.05/body, pck@0.05/hands, "
                    "identity, seam_ratio, seam_excess and per-frame curves.")),
                io.Image.Output("plot", tooltip="Per-frame curves with the context-window seams marked."),
                io.String.Output("summary", tooltip="The main figures in three lines."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reference, driving_images, result, run, pose_settings=None):
        out = cls.report(reference, driving_images, result, run, pose_settings)
        return io.NodeOutput(*out, ui={**bridge.image_preview(out[1], "quality"), "text": [out[2]]})

    @classmethod
    def report(cls, reference, driving_images, result, run, pose_settings=None):
        settings = run_settings(run)
        pose = dict(DEFAULT_POSE_SETTINGS, **(pose_settings or {}))
        validate_context(settings["context_length"], settings["context_overlap"])
        ref = drv.ImageBatchFrames(reference, "reference")[0]
        frames = drv.ImageBatchFrames(result, "result")
        driving = drv.ImageBatchFrames(driving_images, "driving_images")
        opts = ReportOptions(backend=pose["backend"], fit=pose["fit"], align=bool(pose["align"]),
                             context_length=int(settings["context_length"]),
                             context_overlap=int(settings["context_overlap"]), seed=int(settings["seed"]),
                             steps=int(settings["steps"]), latent=settings["latent"],
                             model_dirs=bridge.detector_dirs(), insightface_dirs=bridge.folder_paths_of("insightface"))
        figures, plot = quality_report(ref, driving, frames, opts,
                                       log=lambda s: bridge.log.warning("XDynaQualityReport: %s", s))
        image = torch.from_numpy(plot).float().div_(255.0)[None]
        return (json.dumps(figures, indent=1, allow_nan=False), image, summary(figures))


NODES = [XDynaQualityReport]
