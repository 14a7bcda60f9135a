"""Sampler parity with the official pipeline (goldens on tiny random models) and its contracts.

Tolerances (spec §8): teacher-forced step |Δ| <= 1e-4·max(1, max|ref|); free-running latents and
video |Δ| <= 5e-3·max|ref|; indices exact. Every setting is read from the golden json.
"""
import dataclasses
import copy

import pytest
import torch

from xdyna_core.models import ControlNetConfig, ControlNetModel, UNet3DConditionModel, UNet3DConfig
from xdyna_core.sampling.context_windows import context_windows
from xdyna_core.sampling.controls import ConstantControlClipError, face_clip, hwc_to_chw, pose_clip
from xdyna_core.sampling.init_latents import blurred_repeated_latents, noised_initial_latents
from xdyna_core.sampling.pipeline import (InjectedRandomness, SamplerHooks, XDynaSampler, decode_latents,
                                          sample_video)
from xdyna_core.sampling.scheduler import DDIMConfig, DDIMScheduler
from xdyna_core.sampling.settings import SamplingSettings

PIPELINE_CASES = ["pipeline_3steps", "pipeline_25steps", "pipeline_long_context"]
TEACHER_TOL, FREE_TOL = 1e-4, 5e-3


def max_err(a, b):
    assert a.shape == b.shape, f"shape {tuple(a.shape)} vs golden {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


def assert_close(actual, ref, name, tol, floor=1.0):
    """|Δ| <= tol·max(floor, max|ref|): floor 1 for teacher-forced, 0 for free-running checks."""
    bound = tol * max(floor, ref.abs().max().item())
    err = max_err(actual, ref)
    assert err <= bound, f"{name}: max |Δ| {err:.3g} > {bound:.3g}"
    return err


@pytest.fixture(scope="module")
def models(golden):
    meta, sd = golden("tiny_unet")
    cfg = meta["config"]
    unet = UNet3DConditionModel(UNet3DConfig.from_diffusers_config(cfg["sd_config"], cfg.get("unet_additional_kwargs")))
    unet.load_state_dict(sd, strict=True)
    nets = {}
    for kind in ("pose", "face"):
        meta, sd = golden(f"tiny_controlnet_{kind}")
        net = ControlNetModel(ControlNetConfig.from_diffusers_config(meta["config"]))
        net.load_state_dict(sd, strict=True)
        nets[kind] = net.eval()
    return {"unet": unet.eval(), **nets}


@pytest.fixture(scope="module")
def vae(golden):
    vae_mod = pytest.importorskip("xdyna_core.models.vae")
    meta, sd = golden("tiny_vae")
    model = vae_mod.AutoencoderKL(vae_mod.AutoencoderKLConfig.from_diffusers_config(meta["config"]))
    model.load_state_dict(sd, strict=True)
    return model.eval()


def face_frames(t):
    return torch.cat([hwc_to_chw(t["face_local_frames_u8"]), hwc_to_chw(t["face_global_frames_u8"])], dim=1)


def golden_kwargs(meta, t, models):
    call = meta["call"]
    assert call["controlnet_conditioning_scale"] == 1.0 and call["eta"] == 0.0
    return dict(unet=models["unet"], ref_latent=t["ref_latent"], text_cond=t["text_cond"],
                text_uncond=t["text_uncond"], image_tokens_cond=t["image_tokens_cond"],
                image_tokens_uncond=t["image_tokens_uncond"], pose_controlnet=models["pose"],
                face_controlnet=models["face"], pose_cond=hwc_to_chw(t["pose_frames_u8"]), face_cond=face_frames(t),
                settings=SamplingSettings(steps=call["num_inference_steps"], cfg=call["guidance_scale"],
                                          context_length=call["context_frames"],
                                          context_overlap=call["context_overlap"]),
                strength=call["strength"], scheduler=DDIMScheduler(DDIMConfig.from_dict(meta["scheduler"])),
                injected=InjectedRandomness(blur_keep_mask=t["blur_keep_mask"], init_noise=t["init_noise"],
                                            window_offsets=t["window_offsets"].tolist()))


def golden_sampler(meta, t, models):
    kw = golden_kwargs(meta, t, models)
    sampler = XDynaSampler(kw["unet"], kw["pose_controlnet"], kw["face_controlnet"], kw["scheduler"])
    cond = sampler.prepare(kw["ref_latent"], kw["text_cond"], kw["text_uncond"], kw["image_tokens_cond"],
                           kw["image_tokens_uncond"], pose_cond=kw["pose_cond"], face_cond=kw["face_cond"],
                           guidance_scale=kw["settings"].cfg)
    return sampler, cond


# ---------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("case", ["pipeline_3steps", "pipeline_25steps"])   # the cases that record them
def test_control_normalisation_exact(golden, case):
    _, t = golden(case)
    if "pose_cond_normalized" not in t and "face_cond_normalized" not in t:
        pytest.skip(f"{case} records no normalised controls")
    if "pose_cond_normalized" in t:
        assert torch.equal(pose_clip(hwc_to_chw(t["pose_frames_u8"])).normalized(), t["pose_cond_normalized"])
        # float input in [0, 1] (pixel / 255) gives the same tensor
        as_float = hwc_to_chw(t["pose_frames_u8"]).float() / 255
        assert torch.equal(pose_clip(as_float).normalized(), t["pose_cond_normalized"])
    if "face_cond_normalized" in t:
        clip = face_clip(face_frames(t))
        assert torch.equal(clip.normalized(), t["face_cond_normalized"])
        # a window slice equals the slice of the whole normalised clip
        idx = list(range(clip.num_frames))[::-1]
        assert torch.equal(clip.window(idx), t["face_cond_normalized"][idx])


def test_constant_clips():
    black = torch.zeros(3, 3, 16, 8, dtype=torch.uint8)
    with pytest.raises(ConstantControlClipError, match="pose clip is constant"):
        pose_clip(black)
    some = torch.randint(0, 256, (3, 3, 16, 8), dtype=torch.uint8)
    with pytest.warns(UserWarning, match="constant"):
        clip = face_clip(torch.cat([black, some], dim=1))     # no eye/mouth patch anywhere
    x = clip.normalized()
    assert torch.isfinite(x).all()
    assert torch.equal(x[:, :3], torch.zeros_like(x[:, :3]))
    assert torch.equal(x[:, 3:], pose_clip(some).normalized())   # the other half is normalised alone
    with pytest.warns(UserWarning):
        all_black = face_clip(torch.zeros(3, 6, 16, 8, dtype=torch.uint8)).normalized()
    assert torch.equal(all_black, torch.zeros_like(all_black))


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(3, 4, 16, 8, dtype=torch.uint8), "3 channels"),
    (torch.zeros(3, 16, 8, dtype=torch.uint8), "shape"),
    (torch.full((2, 3, 16, 8), 2.0), r"\[0, 1\]"),
    (torch.zeros(2, 3, 16, 8, dtype=torch.int32), "uint8"),
])
def test_bad_control_frames_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        pose_clip(bad)


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_blur_mix_and_initial_latents(golden, case):
    meta, t = golden(case)
    sched = DDIMScheduler(DDIMConfig.from_dict(meta["scheduler"]))
    n = meta["call"]["video_length"]
    mixed = blurred_repeated_latents(t["ref_latent"], n, t["blur_keep_mask"])
    assert_close(mixed, t["blurred_repeated_latents"], "blurred_repeated_latents", 1e-6)
    init = noised_initial_latents(sched, mixed, t["init_noise"], int(t["timesteps"][0]))
    assert torch.equal(init[:, :, :1], t["ref_latent"])
    assert_close(init[:, :, 1:], t["latents_before_each_step"][0], "initial latents", 1e-6)


# ---------------------------------------------------------------------------------- first UNet call
def test_first_unet_call_inputs_and_output(golden, models):
    meta, t = golden("pipeline_3steps")
    calls = []

    def recording_unet(sample, timestep, context, down_block_additional_residuals=None,
                       mid_block_additional_residual=None):
        out = models["unet"](sample, timestep, context, down_block_additional_residuals,
                             mid_block_additional_residual)
        if not calls:
            calls.append((sample, timestep, context, down_block_additional_residuals,
                          mid_block_additional_residual, out))
        return out

    sampler, cond = golden_sampler(meta, t, models)
    sampler.unet = recording_unet
    offset = int(t["window_offsets"][0])
    windows = context_windows(meta["call"]["video_length"], meta["call"]["context_frames"],
                              meta["call"]["context_overlap"], offset)
    sampler.predict_noise(cond, t["latents_before_each_step"][0], int(t["timesteps"][0]), windows)
    sample, timestep, context, downs, mid, out = calls[0]
    assert timestep == int(t["step0_unet_timestep"])
    assert_close(sample, t["step0_unet_sample"], "step0 sample", 1e-6)
    assert torch.equal(context, t["step0_unet_encoder_hidden_states"])
    n_down = len([k for k in t if k.startswith("step0_unet_down_residual_")])
    assert len(downs) == n_down
    for i, r in enumerate(downs):
        ref = t[f"step0_unet_down_residual_{i:02d}"]
        assert torch.equal(r[:, :, 0], torch.zeros_like(r[:, :, 0])), "frame 0 residual must be zero"
        assert_close(r, ref, f"down residual {i}", TEACHER_TOL)
    assert_close(mid, t["step0_unet_mid_residual"], "mid residual", TEACHER_TOL)
    assert_close(out, t["step0_unet_out"], "step0 unet out", TEACHER_TOL)


# ---------------------------------------------------------------------------------- full pipeline
def test_teacher_forced_steps_3steps(golden, models):
    meta, t = golden("pipeline_3steps")
    sampler, cond = golden_sampler(meta, t, models)
    call = meta["call"]
    for s, ts in enumerate(t["timesteps"].tolist()):
        windows = context_windows(call["video_length"], call["context_frames"], call["context_overlap"],
                                  int(t["window_offsets"][s]))
        assert windows == meta["context_windows_per_step"][s]
        eps = sampler.predict_noise(cond, t["latents_before_each_step"][s], ts, windows)
        assert_close(eps, t["guided_eps_each_step"][s], f"guided eps step {s}", TEACHER_TOL)
        prev, _ = sampler.scheduler.step(eps, ts, t["latents_before_each_step"][s], call["num_inference_steps"])
        assert_close(prev, t["latents_after_each_step"][s], f"latents after step {s}", TEACHER_TOL)


def _free_running(golden, models, vae, case, dtype):
    """Run the golden case end to end with the networks in `dtype`; returns per-step latents, video."""
    meta, t = golden(case)
    if dtype != torch.float32:
        models = {k: copy.deepcopy(m).to(dtype) for k, m in models.items()}
        vae = copy.deepcopy(vae).to(dtype)
    kw = golden_kwargs(meta, t, models)
    per_step, progress = [], []
    kw["hooks"] = SamplerHooks(preview=lambda s, n, x0, lat: per_step.append(lat.clone()),
                               progress=lambda *a: progress.append(a))
    latents = sample_video(**kw, dtype=dtype)
    steps = len(t["timesteps"])
    assert len(per_step) == steps
    assert torch.equal(latents, per_step[-1])
    wins = meta["context_windows_per_step"]
    assert progress == [(s, steps, j, len(wins[s])) for s in range(steps) for j in range(len(wins[s]))]
    video = decode_latents(vae.decode, latents, chunk=3, scaling_factor=vae.config.scaling_factor, dtype=dtype)
    return t, per_step, video


def _check_free_running(t, per_step, video, case, tol):
    for s in range(len(per_step)):
        assert_close(per_step[s], t["latents_after_each_step"][s], f"{case} latents after step {s}", tol, floor=0.0)
    assert torch.isfinite(video).all()
    assert_close(video, t["video"], f"{case} video", tol, floor=0.0)


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_free_running_pipeline_and_video_fp64(golden, models, vae, case):
    """The sampling algorithm against the reference run (spec bound 5e-3·max|ref|), networks in fp64:
    what is left is any algorithmic difference plus the reference run's own rounding."""
    _check_free_running(*_free_running(golden, models, vae, case, torch.float64), case, FREE_TOL)


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_free_running_pipeline_and_video_fp32(golden, models, vae, case):
    """The fp32 path end to end, every case at the spec bound (the long-context golden uses 16x8
    latents, whose ControlNet maps are no longer fp32-chaotic)."""
    _check_free_running(*_free_running(golden, models, vae, case, torch.float32), case, FREE_TOL)


# ---------------------------------------------------------------------------------- contracts
def test_controlnet_computed_once_when_text_contexts_equal(golden, models):
    meta, t = golden("pipeline_3steps")
    sampler = XDynaSampler(models["unet"], models["pose"], models["face"])
    # the official example uses prompt == negative prompt == "": equal text contexts
    cond = sampler.prepare(t["ref_latent"], t["text_cond"], t["text_cond"].clone(), t["image_tokens_cond"],
                           t["image_tokens_uncond"], pose_cond=hwc_to_chw(t["pose_frames_u8"]),
                           face_cond=face_frames(t))
    assert cond.control_text.shape[0] == 1
    batches = []

    def counting(net):
        def call(sample, timestep, text, controlnet_cond):
            batches.append(sample.shape[0])
            return net(sample, timestep, text, controlnet_cond=controlnet_cond)
        return call

    cond.controls = [(counting(net), clip, s) for net, clip, s in cond.controls]
    n = meta["call"]["video_length"]
    lat, ts = t["latents_before_each_step"][0], int(t["timesteps"][0])
    shared = sampler.predict_noise(cond, lat, ts, [list(range(n))])
    assert batches == [n, n], "one ControlNet call per control, one half only"
    batches.clear()
    cond.control_text = torch.cat([cond.control_text, cond.control_text])   # force the two-half path
    both = sampler.predict_noise(cond, lat, ts, [list(range(n))])
    assert batches == [2 * n, 2 * n]
    assert max_err(shared, both) <= 1e-5 * max(1.0, both.abs().max().item())


def test_different_text_contexts_use_both_halves(golden, models):
    meta, t = golden("pipeline_3steps")
    sampler = XDynaSampler(models["unet"], models["pose"], models["face"])
    other = t["text_uncond"] + 0.5
    cond = sampler.prepare(t["ref_latent"], t["text_cond"], other, t["image_tokens_cond"],
                           t["image_tokens_uncond"], pose_cond=hwc_to_chw(t["pose_frames_u8"]), face_cond=face_frames(t))
    assert cond.control_text.shape[0] == 2 and torch.equal(cond.control_text[0], other[0])
    seen = []
    orig = models["pose"]

    def rec(sample, timestep, text, controlnet_cond):
        seen.append(text)
        return orig(sample, timestep, text, controlnet_cond=controlnet_cond)

    n = cond.num_frames
    lat, ts = t["latents_before_each_step"][0], int(t["timesteps"][0])
    via_embedding = sampler.predict_noise(cond, lat, ts, [list(range(n))])   # model: image embedded once
    cond.controls[0] = (rec,) + cond.controls[0][1:]                          # plain callable: image per half
    via_images = sampler.predict_noise(cond, lat, ts, [list(range(n))])
    assert max_err(via_embedding, via_images) <= 1e-5 * max(1.0, via_images.abs().max().item())
    text = seen[0]
    assert text.shape[0] == 2 * n
    assert torch.equal(text[:n], other.expand(n, -1, -1)) and torch.equal(text[n:], t["text_cond"].expand(n, -1, -1))


def test_no_cfg_when_guidance_at_most_one(golden, models):
    """guidance <= 1: batch of 1 with the cond context; eps = the cond half of a CFG call."""
    meta, t = golden("pipeline_3steps")
    batches = []

    def unet(sample, *a, **k):
        batches.append(sample.shape[0])
        return models["unet"](sample, *a, **k)

    sampler = XDynaSampler(unet, models["pose"], models["face"])
    cond = sampler.prepare(t["ref_latent"], t["text_cond"], t["text_uncond"], t["image_tokens_cond"],
                           t["image_tokens_uncond"], pose_cond=hwc_to_chw(t["pose_frames_u8"]), face_cond=face_frames(t),
                           guidance_scale=1.0)
    assert not cond.do_cfg and cond.unet_context.shape[0] == 1
    n = cond.num_frames
    eps = sampler.predict_noise(cond, t["latents_before_each_step"][0], int(t["timesteps"][0]), [list(range(n))])
    assert batches == [1]
    assert_close(eps, t["step0_unet_out"][1:2, :, 1:], "no-CFG eps vs cond half", TEACHER_TOL)
    kw = golden_kwargs(meta, t, models)
    kw.update(settings=dataclasses.replace(kw["settings"], cfg=0.5), unet=unet)
    out = sample_video(**kw)
    assert out.shape == t["latents_after_each_step"][-1].shape and torch.isfinite(out).all()


def test_optional_controlnets_and_strengths(golden, models):
    meta, t = golden("pipeline_3steps")
    seen = {}

    def unet(sample, timestep, context, down_block_additional_residuals=None, mid_block_additional_residual=None):
        seen["down"], seen["mid"] = down_block_additional_residuals, mid_block_additional_residual
        return models["unet"](sample, timestep, context, down_block_additional_residuals,
                              mid_block_additional_residual)

    lat, ts = t["latents_before_each_step"][0], int(t["timesteps"][0])
    n = lat.shape[2]
    args = (t["ref_latent"], t["text_cond"], t["text_uncond"], t["image_tokens_cond"], t["image_tokens_uncond"])
    pose, face = hwc_to_chw(t["pose_frames_u8"]), face_frames(t)

    def residuals(pose_net=None, face_net=None, **kw):
        sampler = XDynaSampler(unet, pose_net, face_net)
        cond = sampler.prepare(*args, pose_cond=pose if pose_net else None, face_cond=face if face_net else None,
                               num_frames=n, **kw)
        sampler.predict_noise(cond, lat, ts, [list(range(n))])
        return seen["down"], seen["mid"]

    both = residuals(models["pose"], models["face"])
    only_pose = residuals(models["pose"])
    only_face = residuals(face_net=models["face"])
    assert residuals() == (None, None)
    for a, p, f in zip(both[0] + [both[1]], only_pose[0] + [only_pose[1]], only_face[0] + [only_face[1]]):
        assert max_err(a, p + f) <= 1e-5 * max(1.0, a.abs().max().item())
    scaled = residuals(models["pose"], models["face"], pose_strength=0.5, face_strength=2.0)
    for a, p, f in zip(scaled[0] + [scaled[1]], only_pose[0] + [only_pose[1]], only_face[0] + [only_face[1]]):
        assert max_err(a, 0.5 * p + 2.0 * f) <= 1e-5 * max(1.0, a.abs().max().item())
    off = residuals(models["pose"], models["face"], face_strength=0.0)   # zero strength = no face net
    for a, p in zip(off[0] + [off[1]], only_pose[0] + [only_pose[1]]):
        assert torch.equal(a, p)


def test_window_batching_matches_one_window_at_a_time(golden, models):
    meta, t = golden("pipeline_long_context")
    sampler, cond = golden_sampler(meta, t, models)
    call = meta["call"]
    windows = context_windows(call["video_length"], call["context_frames"], call["context_overlap"],
                              int(t["window_offsets"][1]))
    assert len(windows) > 1
    lat, ts = t["latents_before_each_step"][1], int(t["timesteps"][1])
    one = sampler.predict_noise(cond, lat, ts, windows, window_batch_size=1)
    two = sampler.predict_noise(cond, lat, ts, windows, window_batch_size=2)
    assert max_err(one, two) <= 1e-4 * max(1.0, one.abs().max().item())


def test_input_validation(golden, models):
    meta, t = golden("pipeline_3steps")
    s = XDynaSampler(models["unet"], models["pose"], models["face"])
    args = (t["ref_latent"], t["text_cond"], t["text_uncond"], t["image_tokens_cond"], t["image_tokens_uncond"])
    pose, face = hwc_to_chw(t["pose_frames_u8"]), face_frames(t)
    with pytest.raises(ValueError, match="no face_cond"):
        s.prepare(*args, pose_cond=pose)
    with pytest.raises(ValueError, match="frames"):
        s.prepare(*args, pose_cond=pose, face_cond=face[:-1])
    with pytest.raises(ValueError, match="px"):
        s.prepare(*args, pose_cond=pose[..., :-8], face_cond=face[..., :-8])
    with pytest.raises(ValueError, match="ref_latent"):
        s.prepare(t["ref_latent"][:, :, 0], *args[1:], pose_cond=pose, face_cond=face)
    with pytest.raises(ValueError, match="num_frames"):
        XDynaSampler(models["unet"]).prepare(*args)
    with pytest.raises(ValueError, match="no pose ControlNet"):
        XDynaSampler(models["unet"]).prepare(*args, pose_cond=pose)
    cond = s.prepare(*args, pose_cond=pose, face_cond=face)
    with pytest.raises(ValueError, match="Generator"):
        s.sample(cond, SamplingSettings(steps=2))
    with pytest.raises(ValueError, match="window_offsets"):
        s.sample(cond, SamplingSettings(steps=2), torch.Generator().manual_seed(0),
                 injected=InjectedRandomness(window_offsets=[0]))
    with pytest.raises(ValueError, match="context_overlap"):
        s.sample(cond, SamplingSettings(steps=2, context_length=4, context_overlap=4), torch.Generator().manual_seed(0))


def test_decode_latents_chunking_and_layout(vae):
    latents = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    sf = vae.config.scaling_factor
    one = decode_latents(vae.decode, latents, chunk=1, scaling_factor=sf)
    three = decode_latents(vae.decode, latents, chunk=3, scaling_factor=sf, layout="nhwc")
    assert one.shape == (1, 3, 5, 64, 64) and three.shape == (5, 64, 64, 3)
    assert max_err(one[0].permute(1, 2, 3, 0), three) <= 1e-5
    assert one.min() >= 0 and one.max() <= 1
    with torch.no_grad():
        direct = (vae.decode(latents[0, :, 2:3].permute(1, 0, 2, 3) * (1 / sf)) / 2 + 0.5).clamp(0, 1)
    assert max_err(one[0, :, 2], direct[0]) <= 1e-6
