"""Pose nodes: driving frames -> X-Dyna skeleton frames (and POSE_KEYPOINT), foreign keypoints ->
skeleton frames, and alignment of a pose clip onto the reference person.

Thin adapters over xdyna_core.preprocess.driving; progress, cancellation and detector folders
come from comfy_bridge.
"""
from __future__ import annotations

import os

from ..xdyna_core.preprocess import driving as drv

from . import comfy_bridge as bridge
from .reference import reference_size, size_inputs

CATEGORY = "X-Dyna/preprocess"


def _size_inputs():
    return size_inputs(" of the skeleton frames (connect the width/height of X-Dyna Load Driving Video; "
                       "it must be the reference's)")


ENCODED_REFERENCE_INPUT = ("XDYNA_REFERENCE", {
    "tooltip": "Optional: the encoded reference. Connected, width x height is checked against its working size "
               "before any detection runs."})


def _working_size(width, height, encoded_reference, what: str):
    """(w, h) by the size rule, and equal to the reference's when one is connected (checked first)."""
    size = drv.check_output_size(width, height)
    if encoded_reference is not None:
        drv.check_same_size(size, reference_size(encoded_reference), what)
    return size


BACKEND_INPUT = (list(drv.POSE_BACKENDS), {
    "default": "auto",
    "tooltip": "Pose detector. auto: DWPose when its files (yolox_l.onnx or .torchscript.pt, "
               "dw-ll_ucoco_384.onnx or dw-ll_ucoco_384_bs5.torchscript.pt) are in models/xdyna/detectors "
               "or comfyui_controlnet_aux's ckpts, else MediaPipe 0.10.14 when installed (optional, "
               "Python 3.10-3.12). Nothing is downloaded.",
})


def _progress(total: int):
    """Per-frame callback: cancel point plus one progress step."""
    bar = bridge.Progress(total, previews=False)

    def tick(_i):
        bridge.raise_if_interrupted()
        bar.update(1)
    return tick


def _cancel_point(_i):
    bridge.raise_if_interrupted()


def _first_image(image, what: str):
    return drv.ImageBatchFrames(image, what)[0]


class XDynaPoseExtract:
    DESCRIPTION = (
        "Detects the body pose in every driving frame and renders X-Dyna skeletons (OpenPose body without "
        "the head, plus hands, on black) at width x height. fit=crop crops each frame to the output aspect "
        "the way X-Dyna does (centred horizontally, top-biased) then resizes; stretch resizes only. With a "
        "reference image and align on, the driving skeleton is scaled and moved onto the reference person "
        "(the reference is centre-cropped/resized to width x height first, as the sampler does) and the "
        "driving frames are warped the same way. A frame without a person gives a black pose frame and "
        "'people': [] in pose_keypoint; a clip without any person is an error. driving_images are the "
        "frames in the same geometry, for XDynaExtractExpression."
    )
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("pose_keypoint", "pose_images", "driving_images", "alignment")
    OUTPUT_TOOLTIPS = (
        ("Keypoints per frame in output pixels (comfyui_controlnet_aux format, 68 face points when the "
         "backend gives them); feed XDynaPoseFromKeypoints, XDynaPoseAlign or XDynaExtractExpression."),
        "Rendered X-Dyna skeletons, width x height: the pose input of XDynaSampler.",
        "The driving frames in the output geometry (cropped/stretched or aligned).",
        "What was done: geometry or alignment fit, frames without a person.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Driving video frames (a batch, e.g. from LoadVideo + "
                                                "GetVideoComponents or VHS_LoadVideo)."}),
                **_size_inputs(),
                "fit": (list(drv.FITS), {"default": "crop",
                                         "tooltip": "crop: X-Dyna's crop to the output aspect (top-biased) then "
                                                    "resize. stretch: resize without cropping."}),
                "backend": BACKEND_INPUT,
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip": "Reference picture (first image used). With align on, the "
                                                   "driving skeleton is fitted to this person."}),
                "align": ("BOOLEAN", {"default": False,
                                      "tooltip": "Fit the driving skeleton (scale + shift) to the person in "
                                                 "the reference image. Needs the reference input."}),
                "encoded_reference": ENCODED_REFERENCE_INPUT,
            },
        }

    def extract(self, images, width, height, fit, backend, reference=None, align=False, encoded_reference=None):
        size = _working_size(width, height, encoded_reference, "X-Dyna Pose Extract's width x height")
        frames = drv.ImageBatchFrames(images, "images")
        if align and reference is None:
            raise ValueError("align is on but no reference image is connected")
        ref = _first_image(reference, "reference") if align else None
        name, detector = drv.open_pose_detector(backend, bridge.detector_dirs())
        try:
            result = drv.extract_driving_pose(frames, detector, size, fit, ref, on_frame=_progress(len(frames)))
        finally:
            drv.close_quietly(detector)
        if result.is_fallback or result.without_person:
            bridge.log.warning("XDynaPoseExtract: %s", result.description.replace("\n", "; "))
        pose_images = drv.render_batch(result.poses, size, on_frame=_cancel_point)
        driving = frames.as_image_batch() if result.geometry.mode == "none" else None
        if driving is None:
            driving = drv.map_frames(frames, result.geometry.image, size, on_frame=_cancel_point)
        note = result.description + ("" if reference is None or align else "\nreference not used (align is off)")
        return (result.keypoints, pose_images, driving, f"backend {name}; {note}")

    run = bridge.with_frames_preview(extract, 1, "pose")


class XDynaPoseFromKeypoints:
    DESCRIPTION = (
        "Renders POSE_KEYPOINT from any source (this pack's XDynaPoseExtract, comfyui_controlnet_aux "
        "DWPose/OpenPose, an OpenPose editor, loaded JSON) as X-Dyna skeleton frames: OpenPose body "
        "without the head, plus hands, on black, line widths scaled to the output size. Keypoints are "
        "mapped from each frame's canvas to width x height (stretch, or crop = X-Dyna's crop2ratio); "
        "normalised (0..1) coordinates are accepted. A frame without a person is black; a list without "
        "any person is an error."
    )
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_images",)
    OUTPUT_TOOLTIPS = ("Rendered X-Dyna skeletons, width x height: the pose input of XDynaSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Keypoints per frame (comfyui_controlnet_aux "
                                                               "POSE_KEYPOINT format)."}),
                **_size_inputs(),
                "fit": (["stretch", "crop"], {"default": "stretch",
                                              "tooltip": "How a canvas of another size maps to the output: "
                                                         "stretch, or crop to the output aspect (top-biased) "
                                                         "as X-Dyna does."}),
            },
            "optional": {"encoded_reference": ENCODED_REFERENCE_INPUT},
        }

    def render(self, pose_keypoint, width, height, fit, encoded_reference=None):
        size = _working_size(width, height, encoded_reference, "X-Dyna Pose From Keypoints' width x height")
        frames = drv.parse_keypoints(pose_keypoint)
        missing = drv.require_person(frames, "pose_keypoint")
        if missing:
            bridge.log.warning("XDynaPoseFromKeypoints: %d/%d frames without a person (black pose frames)",
                               missing, len(frames))
        poses = drv.fit_keypoints(frames, size, fit)
        return (drv.render_batch(poses, size, on_frame=_progress(len(poses))),)

    run = bridge.with_frames_preview(render, 0, "pose")


class XDynaPoseAlign:
    DESCRIPTION = (
        "Fits a pose clip (POSE_KEYPOINT) onto the person of the reference picture: one scale and shift "
        "(no rotation) from the body segments visible in both, estimated on align_frame (-1: the first "
        "frame showing neck, shoulders and hips), applied to every frame. The reference is centre-cropped "
        "and resized to width x height as the sampler does, and its pose is detected with the chosen "
        "backend. Without common body segments it falls back to X-Dyna's crop and says WARNING in "
        "alignment."
    )
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE", "STRING")
    RETURN_NAMES = ("pose_keypoint", "pose_images", "alignment")
    OUTPUT_TOOLTIPS = (
        "The aligned keypoints in output pixels (width x height).",
        "Rendered aligned X-Dyna skeletons: the pose input of XDynaSampler.",
        "The fitted scale, anchor and shift (WARNING when it fell back to a plain crop).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Driving keypoints per frame (any source)."}),
                "reference": ("IMAGE", {"tooltip": "Reference picture of the person to animate (first image "
                                                   "used)."}),
                **_size_inputs(),
                "backend": BACKEND_INPUT,
            },
            "optional": {
                "align_frame": ("INT", {"default": -1, "min": -1, "max": 100000,
                                        "tooltip": "Driving frame the fit is estimated on; -1 chooses the "
                                                   "first frame showing neck, shoulders and hips."}),
                "encoded_reference": ENCODED_REFERENCE_INPUT,
            },
        }

    def align(self, pose_keypoint, reference, width, height, backend, align_frame=-1, encoded_reference=None):
        size = _working_size(width, height, encoded_reference, "X-Dyna Pose Align's width x height")
        frames = drv.parse_keypoints(pose_keypoint)
        drv.require_person(frames, "pose_keypoint")  # before the detector runs
        ref = _first_image(reference, "reference")
        name, detector = drv.open_pose_detector(backend, bridge.detector_dirs())
        try:
            ref_pose = drv.reference_pose(detector, ref, size)
        finally:
            drv.close_quietly(detector)
        aligned, alignment, desc = drv.align_keypoints(frames, ref_pose, align_frame)
        if alignment.is_fallback:
            bridge.log.warning("XDynaPoseAlign: %s", desc)
        keypoints, drawn = drv.keypoint_round_trip(aligned)
        images = drv.render_batch(drawn, size, on_frame=_progress(len(drawn)))
        return (keypoints, images, f"backend {name} (reference pose); {desc}")

    run = bridge.with_frames_preview(align, 1, "pose")


class XDynaLoadPoseKeypoints:
    DESCRIPTION = ("Loads POSE_KEYPOINT JSON (the comfyui_controlnet_aux format, e.g. written by "
                   "`python -m xdyna_core preprocess pose` or an OpenPose editor) from ComfyUI's input folder, "
                   "for X-Dyna Pose From Keypoints: a custom pose source without any detector.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("POSE_KEYPOINT",)
    RETURN_NAMES = ("pose_keypoint",)
    OUTPUT_TOOLTIPS = ("Keypoints per frame (POSE_KEYPOINT): for X-Dyna Pose From Keypoints or Pose Align.",)

    @classmethod
    def INPUT_TYPES(cls):
        # xdyna_json_upload: web/xdyna.js adds an upload button that puts a .json into the input folder
        return {"required": {"keypoints_file": (bridge.input_files([".json"]),
                                                {"xdyna_json_upload": True,
                                                 "tooltip": "a .json file in ComfyUI's input folder (the upload "
                                                            "button adds one)"})}}

    @classmethod
    def IS_CHANGED(cls, keypoints_file):
        try:
            return os.path.getmtime(bridge.input_path(keypoints_file))
        except FileNotFoundError:
            return float("nan")

    def load(self, keypoints_file):
        from ..xdyna_core.preprocess.keypoints import load_keypoints, to_pose_keypoint_json

        frames = load_keypoints(bridge.input_path(keypoints_file))
        if not frames:
            raise ValueError(f"{keypoints_file} holds no frames")
        return (to_pose_keypoint_json(frames),)


NODE_CLASS_MAPPINGS = {
    "XDynaLoadPoseKeypoints": XDynaLoadPoseKeypoints,
    "XDynaPoseExtract": XDynaPoseExtract,
    "XDynaPoseFromKeypoints": XDynaPoseFromKeypoints,
    "XDynaPoseAlign": XDynaPoseAlign,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "XDynaLoadPoseKeypoints": "X-Dyna Load Pose Keypoints (JSON)",
    "XDynaPoseExtract": "X-Dyna Pose Extract",
    "XDynaPoseFromKeypoints": "X-Dyna Pose From Keypoints",
    "XDynaPoseAlign": "X-Dyna Pose Align",
}
