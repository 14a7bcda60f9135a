"""The pack's own ComfyUI socket types (V3 `io.Custom`), one definition each, shared by the node modules.
The type names are those of the V1 nodes, so saved workflows keep their links."""
from comfy_api.latest import io

Model = io.Custom("XDYNA_MODEL")              # loaders.XDynaModel
ControlNets = io.Custom("XDYNA_CONTROLNETS")  # loaders.XDynaControlNets
ImageProj = io.Custom("XDYNA_IMAGE_PROJ")     # loaders.XDynaImageProj
Reference = io.Custom("XDYNA_REFERENCE")      # reference.XDynaReferenceEncode's dict
Face = io.Custom("XDYNA_FACE")                # expression.make_face's dict
PoseKeypoint = io.Custom("POSE_KEYPOINT")     # comfyui_controlnet_aux's / ComfyUI's keypoint frames
PoseSettings = io.Custom("XDYNA_POSE_SETTINGS")  # pose.pose_settings: how the driving pose was made
