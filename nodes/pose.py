"""Pose nodes: driving frames -> X-Dyna skeleton frames (and POSE_KEYPOINT), foreign keypoints ->
skeleton frames, and alignment of a pose clip onto the reference person.

Thin adapters over xdyna_core.preprocess.driving; progress, cancellation and detector folders
come from comfy_bridge.
"""
from __future__ import annotations

import os

from comfy_api.latest import io

from ..xdyna_core.preprocess import driving as drv

from . import comfy_bridge as bridge
from . import xdyna_types as T
from .reference import reference_size, size_inputs

CATEGORY = "X-Dyna/preprocess"


def _size_inputs(what=" of the skeleton frames (connect the width/height of X-Dyna Load Driving Video; it "
                       "must be the reference's)"):
    return size_inputs(what)


def encoded_reference_input(tooltip="Optional: the encoded reference. Connected, width x height is checked "
                                    "against its working size before any detection runs."):
    return T.Reference.Input("encoded_reference", optional=True, tooltip=tooltip)


def pose_settings(fit: str, align: bool, backend: str) -> dict:
    """XDYNA_POSE_SETTINGS: how the driving pose was made, for X-Dyna Quality Report (same geometry)."""
    return {"fit": fit, "align": bool(align), "backend": backend}


def _working_size(width, height, encoded_reference, what: str):
    """(w, h) by the size rule, and equal to the reference's when one is connected (checked first)."""
    size = drv.check_output_size(width, height)
    if encoded_reference is not None:
        drv.check_same_size(size, reference_size(encoded_reference), what)
    return size


def backend_input(tooltip="Pose detector. auto: DWPose when its files (yolox_l.onnx or .torchscript.pt, "
                          "dw-ll_ucoco_384.onnx or dw-ll_ucoco_384_bs5.torchscript.pt) are in models/xdyna/detectors "
                          "or comfyui_controlnet_aux's ckpts, else MediaPipe 0.10.14 when installed (optional, "
                          "Python 3.10-3.12). Nothing is downloaded."):
    return io.Combo.Input("backend", options=list(drv.POSE_BACKENDS), default="auto", tooltip=tooltip)


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


class XDynaPoseExtract(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaPoseExtract",
            display_name="X-Dyna Pose Extract",
            category=CATEGORY,
            description=(
                "Detects the body pose in every driving frame and renders X-Dyna skeletons (OpenPose body without "
                "the head, plus hands, on black) at width x height. fit=crop crops each frame to the output aspect "
                "the way X-Dyna does (centred horizontally, top-biased) then resizes; stretch resizes only. With a "
                "reference image and align on, the driving skeleton is scaled and moved onto the reference person "
                "(the reference is centre-cropped/resized to width x height first, as the sampler does) and the "
                "driving frames are warped the same way. A frame without a person gives a black pose frame and "
                "'people': [] in pose_keypoint; a clip without any person is an error. driving_images are the "
                "frames in the same geometry, for XDynaExtractExpression."),
            inputs=[
                io.Image.Input("images", tooltip="Driving video frames (a batch, e.g. from X-Dyna Load Driving Video, "
                                                 "or Load Video + Get Video Components)."),
                *_size_inputs(),
                io.Combo.Input("fit", options=list(drv.FITS), default="crop",
                               tooltip="crop: X-Dyna's crop to the output aspect (top-biased) then resize. stretch: "
                                       "resize without cropping."),
                backend_input(),
                io.Image.Input("reference", optional=True, tooltip="Reference picture (first image used). With align "
                                                                   "on, the driving skeleton is fitted to this person."),
                io.Boolean.Input("align", default=False, optional=True,
                                 tooltip="Fit the driving skeleton (scale + shift) to the person in the reference "
                                         "image. Needs the reference input."),
                encoded_reference_input(),
            ],
            outputs=[
                T.PoseKeypoint.Output("pose_keypoint", tooltip=(
                    "Keypoints per frame in output pixels (comfyui_controlnet_aux format, 68 face points when the "
                    "backend gives them); feed XDynaPoseFromKeypoints, XDynaPoseAlign or XDynaExtractExpression.")),
                io.Image.Output("pose_images", tooltip="Rendered X-Dyna skeletons, width x height: the pose input of "
                                                       "XDynaSampler."),
                io.Image.Output("driving_images", tooltip="The driving frames in the output geometry "
                                                          "(cropped/stretched or aligned)."),
                io.String.Output("alignment", tooltip="What was done: geometry or alignment fit, frames without a "
                                                      "person."),
                T.PoseSettings.Output("pose_settings", tooltip="fit, align and backend of this extraction: the "
                                                               "pose_settings input of X-Dyna Quality Report."),
            ],
        )

    @classmethod
    def execute(cls, images, width, height, fit, backend, reference=None, align=False, encoded_reference=None):
        out = cls.extract(images, width, height, fit, backend, reference, align, encoded_reference)
        return io.NodeOutput(*out, pose_settings(fit, align, backend), ui=bridge.frames_preview(out[1], "pose"))

    @classmethod
    def extract(cls, images, width, height, fit, backend, reference=None, align=False, encoded_reference=None):
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


class XDynaPoseFromKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaPoseFromKeypoints",
            display_name="X-Dyna Pose From Keypoints",
            category=CATEGORY,
            description=(
                "Renders POSE_KEYPOINT from any source (this pack's XDynaPoseExtract, comfyui_controlnet_aux "
                "DWPose/OpenPose, ComfyUI's SDPose Keypoint Extractor, an OpenPose editor, loaded JSON) as X-Dyna "
                "skeleton frames: OpenPose body without the head, plus hands, on black, line widths scaled to the "
                "output size. Keypoints are mapped from each frame's canvas to the working size (stretch, or crop "
                "= X-Dyna's crop2ratio); normalised (0..1) coordinates are accepted. With encoded_reference "
                "connected the working size is the reference's (width and height are then not used). A frame "
                "without a person is black; a list without any person is an error."),
            inputs=[
                T.PoseKeypoint.Input("pose_keypoint", tooltip="Keypoints per frame (POSE_KEYPOINT format of "
                                                              "comfyui_controlnet_aux and ComfyUI)."),
                *_size_inputs(" of the skeleton frames, when no encoded_reference is connected"),
                io.Combo.Input("fit", options=["stretch", "crop"], default="stretch",
                               tooltip="How a canvas of another size maps to the output: stretch, or crop to the "
                                       "output aspect (top-biased) as X-Dyna does."),
                encoded_reference_input("The encoded reference (X-Dyna Reference Encode): connected, its working "
                                        "size is the size of the skeleton frames."),
            ],
            outputs=[io.Image.Output("pose_images", tooltip="Rendered X-Dyna skeletons at the working size: the pose "
                                                            "input of XDynaSampler.")],
        )

    @classmethod
    def execute(cls, pose_keypoint, width, height, fit, encoded_reference=None):
        out = cls.render(pose_keypoint, width, height, fit, encoded_reference)
        return io.NodeOutput(*out, ui=bridge.frames_preview(out[0], "pose"))

    @classmethod
    def render(cls, pose_keypoint, width, height, fit, encoded_reference=None):
        size = reference_size(encoded_reference) if encoded_reference is not None else drv.check_output_size(width, height)
        frames = drv.parse_keypoints(pose_keypoint)
        missing = drv.require_person(frames, "pose_keypoint")
        if missing:
            bridge.log.warning("XDynaPoseFromKeypoints: %d/%d frames without a person (black pose frames)",
                               missing, len(frames))
        poses = drv.fit_keypoints(frames, size, fit)
        return (drv.render_batch(poses, size, on_frame=_progress(len(poses))),)


class XDynaPoseAlign(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaPoseAlign",
            display_name="X-Dyna Pose Align",
            category=CATEGORY,
            description=(
                "Fits a pose clip (POSE_KEYPOINT) onto the person of the reference picture: one scale and shift "
                "(no rotation) from the body segments visible in both, estimated on align_frame (-1: the first "
                "frame showing neck, shoulders and hips), applied to every frame. The reference is centre-cropped "
                "and resized to width x height as the sampler does, and its pose is detected with the chosen "
                "backend. Without common body segments it falls back to X-Dyna's crop and says WARNING in "
                "alignment."),
            inputs=[
                T.PoseKeypoint.Input("pose_keypoint", tooltip="Driving keypoints per frame (any source)."),
                io.Image.Input("reference", tooltip="Reference picture of the person to animate (first image used)."),
                *_size_inputs(),
                backend_input(),
                io.Int.Input("align_frame", default=-1, min=-1, max=100000, optional=True,
                             tooltip="Driving frame the fit is estimated on; -1 chooses the first frame showing "
                                     "neck, shoulders and hips."),
                encoded_reference_input(),
            ],
            outputs=[
                T.PoseKeypoint.Output("pose_keypoint", tooltip="The aligned keypoints in output pixels (width x "
                                                               "height)."),
                io.Image.Output("pose_images", tooltip="Rendered aligned X-Dyna skeletons: the pose input of "
                                                       "XDynaSampler."),
                io.String.Output("alignment", tooltip="The fitted scale, anchor and shift (WARNING when it fell back "
                                                      "to a plain crop)."),
            ],
        )

    @classmethod
    def execute(cls, pose_keypoint, reference, width, height, backend, align_frame=-1, encoded_reference=None):
        out = cls.align(pose_keypoint, reference, width, height, backend, align_frame, encoded_reference)
        return io.NodeOutput(*out, ui=bridge.frames_preview(out[1], "pose"))

    @classmethod
    def align(cls, pose_keypoint, reference, width, height, backend, align_frame=-1, encoded_reference=None):
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


class XDynaLoadPoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaLoadPoseKeypoints",
            display_name="X-Dyna Load Pose Keypoints (JSON)",
            category=CATEGORY,
            description=("Loads POSE_KEYPOINT JSON (the comfyui_controlnet_aux format, e.g. written by "
                         "`python -m xdyna_core preprocess pose` or an OpenPose editor) from ComfyUI's input folder, "
                         "for X-Dyna Pose From Keypoints: a custom pose source without any detector."),
            inputs=[
                # xdyna_json_upload: web/xdyna.js adds an upload button that puts a .json into the input folder
                io.Combo.Input("keypoints_file", options=bridge.input_files([".json"]),
                               extra_dict={"xdyna_json_upload": True},
                               tooltip="a .json file in ComfyUI's input folder (the upload button adds one)"),
            ],
            outputs=[T.PoseKeypoint.Output("pose_keypoint", tooltip="Keypoints per frame (POSE_KEYPOINT): for X-Dyna "
                                                                    "Pose From Keypoints or Pose Align.")],
        )

    @classmethod
    def fingerprint_inputs(cls, keypoints_file):
        try:
            return os.path.getmtime(bridge.input_path(keypoints_file))
        except FileNotFoundError:
            return float("nan")

    @classmethod
    def execute(cls, keypoints_file):
        return io.NodeOutput(*cls.load(keypoints_file))

    @classmethod
    def load(cls, keypoints_file):
        from ..xdyna_core.preprocess.keypoints import load_keypoints, to_pose_keypoint_json

        frames = load_keypoints(bridge.input_path(keypoints_file))
        if not frames:
            raise ValueError(f"{keypoints_file} holds no frames")
        return (to_pose_keypoint_json(frames),)


NODES = [XDynaLoadPoseKeypoints, XDynaPoseExtract, XDynaPoseFromKeypoints, XDynaPoseAlign]
