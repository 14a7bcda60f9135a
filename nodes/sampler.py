"""XDynaSampler: the temporal X-Dyna denoising loop on native CONDITIONING, returning a LATENT."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..xdyna_core.pixels import to_uint8
from ..xdyna_core.preprocess.driving import check_same_size
from ..xdyna_core.sampling.settings import SEED_MAX, SEED_MIN
from . import comfy_bridge as bridge
from . import xdyna_types as T

CONTROL_MAX = 4.0
RUN_KEY = "xdyna_run"  # the LATENT's record of the run's settings, read by X-Dyna Quality Report


def _text(cond, name: str) -> torch.Tensor:
    try:
        t = cond[0][0]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"{name}: expected CONDITIONING from CLIPTextEncode") from None
    if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[1] % 77:
        raise ValueError(f"{name}: expected SD1.5 text embeddings (1, 77·k, 768), got {getattr(t, 'shape', None)}")
    return t[:1]


def _chw_uint8(image: torch.Tensor) -> torch.Tensor:
    return to_uint8(image[..., :3]).permute(0, 3, 1, 2).contiguous()


def check_inputs(reference: dict, pose: torch.Tensor, face, use_face: bool):
    h, w = reference["height"], reference["width"]
    if pose.ndim != 4 or pose.shape[0] < 1:
        raise ValueError(f"pose: expected an IMAGE batch of skeleton frames, got shape {tuple(pose.shape)}")
    check_same_size((pose.shape[2], pose.shape[1]), (w, h), "the pose frames' size")
    if use_face:
        for part in ("local", "global"):
            f = face[part]
            if f.shape[0] != pose.shape[0]:
                raise ValueError(f"face {part} has {f.shape[0]} frames but pose has {pose.shape[0]}: "
                                 f"extract both from the same driving frames")
            if tuple(f.shape[1:3]) != (h, w):
                raise ValueError(f"face {part} frames are {f.shape[2]}x{f.shape[1]}, expected {w}x{h}")


def face_decision(controlnets, face, face_strength):
    """(S-Face ControlNet used?, why not when something asked for it): the job's rule on node inputs."""
    from ..xdyna_core.job import face_control

    return face_control(face is not None, controlnets.face is not None,
                        face is not None and any(face.get("has_face", [True])), face_strength)


class XDynaSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="XDynaSampler",
            display_name="X-Dyna Sampler",
            category="X-Dyna",
            description=("X-Dyna's DDIM loop: frame 0 is the clean reference latent, the pose (+ S-Face) ControlNets "
                         "drive frames 1..N, long videos run in 16-frame windows that wrap around. Returns the video "
                         "latents (frames on the batch axis) for the native VAE Decode; the latent also carries the "
                         "run's settings (seed, steps, context windows, latent mode) for X-Dyna Quality Report. "
                         "Without a face input, or when no face was found in the driving video, the S-Face "
                         "ControlNet is skipped."),
            inputs=[
                T.Model.Input("model", tooltip="The X-Dyna UNet (X-Dyna UNet Loader)."),
                T.ControlNets.Input("controlnets", tooltip="Pose (+ optional S-Face) ControlNets (X-Dyna ControlNet "
                                                           "Loader)."),
                T.Reference.Input("reference", tooltip="The encoded reference (X-Dyna Reference Encode); its width x "
                                                       "height is the working size."),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode of the prompt (X-Dyna uses an empty "
                                                          "prompt)"),
                io.Conditioning.Input("negative", tooltip="CLIPTextEncode of the negative prompt (empty in X-Dyna)"),
                io.Image.Input("pose", tooltip="rendered skeleton frames at the reference's width/height"),
                io.Int.Input("seed", default=42, min=SEED_MIN, max=SEED_MAX,
                             tooltip="Seeds every random draw (reference latent sample, noise, window offsets): the "
                                     "same seed gives the same video, here and on the command line."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="DDIM steps (X-Dyna uses 25)."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1,
                               tooltip="<= 1 runs without classifier-free guidance"),
                io.Float.Input("pose_strength", default=1.0, min=0.0, max=CONTROL_MAX, step=0.05,
                               tooltip="Scale of the pose ControlNet's residuals (1 = X-Dyna)."),
                io.Float.Input("face_strength", default=1.0, min=0.0, max=CONTROL_MAX, step=0.05,
                               tooltip="Scale of the S-Face ControlNet's residuals (1 = X-Dyna; 0 switches it off)."),
                io.Int.Input("context_length", default=16, min=2, max=24,
                             tooltip="Frames per UNet window (16 = what the motion module was trained on; at most "
                                     "24)."),
                io.Int.Input("context_overlap", default=4, min=0, max=23,
                             tooltip="Frames shared by neighbouring windows (below context_length); more overlap = "
                                     "smoother joins, more windows."),
                T.Face.Input("face", optional=True, tooltip="S-Face patches from X-Dyna Extract Expression"),
            ],
            outputs=[io.Latent.Output("latent", tooltip="The video latents, frames on the batch axis (the reference "
                                                        "frame not included): decode with the native VAE Decode. "
                                                        "Also the run input of X-Dyna Quality Report.")],
        )

    @classmethod
    def execute(cls, model, controlnets, reference, positive, negative, pose, seed, steps, cfg, pose_strength,
                face_strength, context_length, context_overlap, face=None):
        out = cls.sample(model, controlnets, reference, positive, negative, pose, seed, steps, cfg, pose_strength,
                         face_strength, context_length, context_overlap, face)
        why = face_decision(controlnets, face, face_strength)[1]
        return io.NodeOutput(*out, ui={bridge.WARNING_KEY: [why] if why else []})

    @classmethod
    def sample(cls, model, controlnets, reference, positive, negative, pose, seed, steps, cfg, pose_strength,
               face_strength, context_length, context_overlap, face=None):
        from ..xdyna_core.job import SamplingSettings, progress_total, run_sampling
        from ..xdyna_core.job_checks import check_sampling
        from ..xdyna_core.models.attention import use_attention_backend
        from ..xdyna_core.sampling.memory import window_activation_bytes
        from ..xdyna_core.sampling.pipeline import SamplerHooks, SamplingCancelled

        enc = reference["encoding"]
        use_face, why = face_decision(controlnets, face, face_strength)
        if why:
            bridge.log.warning("XDynaSampler: %s", why)
        settings = SamplingSettings(steps=steps, cfg=cfg, seed=seed, context_length=context_length,
                                    context_overlap=context_overlap, pose_strength=pose_strength,
                                    face_strength=face_strength, latent=reference.get("latent_mode", "sample"))
        # the command line's checks of the same value; the window limit from the loaded UNet's config
        check_sampling(settings, model.patcher.model.config.motion_max_len, flag=str)
        check_inputs(reference, pose, face, use_face)
        n = pose.shape[0]
        patchers = [model.patcher, controlnets.pose, controlnets.face if use_face else None]
        dtype = model.compute_dtype
        # what a window needs beyond the weights: ComfyUI then unloads other models (CLIP, VAE,
        # CLIP vision) or loads ours partially on small cards instead of running out of memory
        lat_h, lat_w = enc.moments.mean.shape[-2:]
        activations = window_activation_bytes(model.patcher.model.config, lat_h, lat_w, min(n, context_length),
                                              2 if cfg > 1.0 else 1, dtype)
        bridge.load_on_device(patchers, memory_required=activations)
        device = bridge.torch_device()
        face_cond = None
        if use_face:
            face_cond = torch.cat([_chw_uint8(face["local"]), _chw_uint8(face["global"])], dim=1)

        progress = bridge.Progress(progress_total(n, steps, context_length, context_overlap))
        hooks = SamplerHooks(progress=lambda *a: progress.update(1),
                             preview=lambda s, ns, x0, lat: progress.update(0, x0[:, :, 0]),
                             should_cancel=bridge.interrupted)
        try:
            with use_attention_backend(bridge.attention_backend()), torch.no_grad():
                latents = run_sampling(model.patcher.model, enc, _text(positive, "positive"),
                                       _text(negative, "negative"), _chw_uint8(pose), settings,
                                       pose_controlnet=controlnets.pose.model,
                                       face_controlnet=controlnets.face.model if use_face else None,
                                       face_cond=face_cond, device=device, dtype=dtype, hooks=hooks)
        except SamplingCancelled:
            bridge.free_models(patchers)
            bridge.raise_if_interrupted()
            raise
        samples = latents[0].permute(1, 0, 2, 3).float() / enc.scaling_factor
        run = {"seed": int(seed), "steps": int(steps), "context_length": int(context_length),
               "context_overlap": int(context_overlap), "latent": settings.latent}
        return ({"samples": samples.to(bridge.intermediate_device()), RUN_KEY: run},)


NODES = [XDynaSampler]
