"""S-Face node: driving frames -> the local (eyes + mouth) and global (face box) control images of
X-Dyna's face ControlNet. Thin adapter over xdyna_core.preprocess.driving."""
from __future__ import annotations

from comfy_api.latest import io

from ..xdyna_core.preprocess import driving as drv

from . import comfy_bridge as bridge
from . import xdyna_types as T

def make_face(batches: drv.FaceBatches, source: str) -> dict:
    """The XDYNA_FACE value: {"local", "global": IMAGE [N, H, W, 3], "has_face": [bool] * N,
    "width", "height", "source": landmark source used}."""
    h, w = batches.local.shape[1:3]
    return {"local": batches.local, "global": batches.global_, "has_face": list(batches.has_face),
            "width": int(w), "height": int(h), "source": source}


class XDynaExtractExpression(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaExtractExpression",
            display_name="X-Dyna Extract Expression (S-Face)",
            category="X-Dyna/preprocess",
            description=(
                "S-Face inputs for X-Dyna's face ControlNet: finds 68 face landmarks in every driving frame and "
                "cuts the 'global' image (the enlarged face box on black) and the 'local' image (eye and mouth "
                "windows on black), exactly as X-Dyna does. Feed driving_images already in the output geometry "
                "(XDynaPoseExtract's driving_images) so the patches line up with the pose frames. With "
                "carry_missing, a frame where no face is found reuses the nearest good face box with its own "
                "pixels; off, it gets black patches (the original behaviour). has_face marks the frames where a "
                "face was found. If no frame has a face, nothing fails: the patches are black, has_face is all "
                "false, a warning is logged, and XDynaSampler switches the face ControlNet off."),
            inputs=[
                io.Image.Input("driving_images", tooltip="Driving frames in the output geometry, e.g. "
                                                         "XDynaPoseExtract's driving_images."),
                io.Combo.Input("landmarks", options=list(drv.LANDMARK_SOURCES), default="auto", tooltip=(
                    "68-point face landmark source. pose_keypoint: the face points of the pose_keypoint input "
                    "(DWPose, MediaPipe, SDPose). insightface: 1k3d68.onnx from models/insightface/models/<pack>/. "
                    "mediapipe: FaceMesh on the head. auto: pose_keypoint when it has face points, else insightface "
                    "when its file is found, else mediapipe.")),
                T.PoseKeypoint.Input("pose_keypoint", optional=True, tooltip=(
                    "Keypoints of the same frames (XDynaPoseExtract's pose_keypoint): face points for "
                    "landmarks=pose_keypoint/auto, head boxes for the other sources. Without it a pose detector "
                    "finds the heads.")),
                io.Boolean.Input("carry_missing", default=True, optional=True, tooltip=(
                    "Frames without a detected face reuse the nearest good face box (with their own pixels). Off: "
                    "black patches there, as the original X-Dyna code.")),
            ],
            outputs=[
                T.Face.Output("face", tooltip="S-Face control images (local, global) and per-frame has_face, for "
                                              "XDynaSampler's face input."),
                io.Image.Output("preview", tooltip="For display: the face box at half brightness with the eye/mouth "
                                                   "windows at full brightness."),
            ],
        )

    @classmethod
    def execute(cls, driving_images, landmarks, pose_keypoint=None, carry_missing=True):
        out = cls.extract(driving_images, landmarks, pose_keypoint, carry_missing)
        return io.NodeOutput(*out, ui=bridge.frames_preview(out[1], "face"))

    @classmethod
    def extract(cls, driving_images, landmarks, pose_keypoint=None, carry_missing=True):
        frames = drv.ImageBatchFrames(driving_images, "driving_images")
        poses = None if pose_keypoint is None else drv.poses_for_frames(pose_keypoint, len(frames), frames.size)
        bar = bridge.Progress(len(frames), previews=False)

        def tick(_i):
            bridge.raise_if_interrupted()
            bar.update(1)

        points, source = drv.face_landmarks(frames, landmarks, poses, bridge.detector_dirs(), on_frame=tick)
        batches = drv.face_patch_batches(frames, points, carry_missing,
                                         on_frame=lambda _i: bridge.raise_if_interrupted())
        found = sum(batches.has_face)
        if found == 0:
            bridge.log.warning("XDynaExtractExpression: no face found in any of the %d frames (landmarks %s): "
                               "the face patches are black and the sampler will switch the face ControlNet "
                               "off", len(frames), source)
        else:
            bridge.log.info("XDynaExtractExpression: face landmarks (%s) in %d/%d frames", source, found,
                            len(frames))
        return (make_face(batches, source), batches.preview())


NODES = [XDynaExtractExpression]
