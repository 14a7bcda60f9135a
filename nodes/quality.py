"""Quality report node: scores a result (pose agreement, identity, window seams) in the graph.
Thin adapter over xdyna_core.quality.report; model folders and previews come from comfy_bridge."""
from __future__ import annotations

import json

import torch

from ..xdyna_core.preprocess import driving as drv
from ..xdyna_core.quality.report import ReportOptions, quality_report, summary
from ..xdyna_core.sampling.context_windows import validate_context

from . import comfy_bridge as bridge
from .pose import BACKEND_INPUT


class XDynaQualityReport:
    DESCRIPTION = (
        "Scores an animation. Pose agreement: the result's keypoints, found with the same detector, against "
        "the driving keypoints in the result's geometry (same fit / align as the pose extraction): PCK at 0.05 "
        "and 0.1 of the person's box diagonal, body and hands. Identity: ArcFace cosine similarity of the "
        "reference face and each result face (glintr100.onnx of antelopev2 or w600k_r50.onnx of buffalo_l in "
        "models/insightface/models/<pack>/; skipped with a note without it). Stability: frame-to-frame change "
        "at the sampler's context-window seams against inside the windows (1 = no window flicker)."
    )
    CATEGORY = "X-Dyna"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("report_json", "plot", "summary")
    OUTPUT_TOOLTIPS = (
        "Every figure as JSON: pck@0.05 (overall pose score), pck@0.1, pck@0.05/body, pck@0.05/hands, identity, "
        "seam_ratio, seam_excess and per-frame curves.",
        "Per-frame curves with the context-window seams marked.",
        "The main figures in three lines.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("IMAGE", {"tooltip": "The reference picture the result was made from."}),
                "driving_images": ("IMAGE", {"tooltip": "The driving frames given to XDynaPoseExtract (its input, "
                                                        "not its driving_images output)."}),
                "result": ("IMAGE", {"tooltip": "The decoded result frames."}),
                "backend": BACKEND_INPUT,
                "fit": (list(drv.FITS), {"default": "crop", "tooltip": "The fit XDynaPoseExtract used."}),
                "align": ("BOOLEAN", {"default": False, "tooltip": "XDynaPoseExtract aligned onto the reference."}),
                "context_length": ("INT", {"default": 16, "min": 1, "max": 256,
                                           "tooltip": "The sampler's context_length (where the seams are)."}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 255,
                                            "tooltip": "The sampler's context_overlap."}),
            },
            "optional": {
                "seed": ("INT", {"default": -1, "min": -1, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "The sampler's seed: its per-step window offsets are replayed to "
                                            "find the seams. -1: unknown, the fixed schedule (offset 0) is used."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": 1000, "tooltip": "The sampler's steps."}),
                "latent": (["sample", "mean"], {"default": "sample",
                                                "tooltip": "XDynaReferenceEncode's latent mode (its first draw)."}),
            },
        }

    def report(self, reference, driving_images, result, backend, fit, align, context_length, context_overlap,
               seed=-1, steps=25, latent="sample"):
        validate_context(context_length, context_overlap)
        ref = drv.ImageBatchFrames(reference, "reference")[0]
        frames = drv.ImageBatchFrames(result, "result")
        driving = drv.ImageBatchFrames(driving_images, "driving_images")
        opts = ReportOptions(backend=backend, fit=fit, align=bool(align), context_length=int(context_length),
                             context_overlap=int(context_overlap), seed=None if int(seed) < 0 else int(seed),
                             steps=int(steps), latent=latent, model_dirs=bridge.detector_dirs(),
                             insightface_dirs=bridge.folder_paths_of("insightface"))
        figures, plot = quality_report(ref, driving, frames, opts, log=lambda s: bridge.log.warning("XDynaQualityReport: %s", s))
        image = torch.from_numpy(plot).float().div_(255.0)[None]
        return (json.dumps(figures, indent=1, allow_nan=False), image, summary(figures))

    def run(self, *args, **kwargs):
        out = self.report(*args, **kwargs)
        return {"ui": {**bridge.image_preview(out[1], "quality"), "text": [out[2]]}, "result": out}


NODE_CLASS_MAPPINGS = {"XDynaQualityReport": XDynaQualityReport}
NODE_DISPLAY_NAME_MAPPINGS = {"XDynaQualityReport": "X-Dyna Quality Report"}
