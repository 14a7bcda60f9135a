"""Everything is checked before any heavy work (issue 12): bad options and paths fail in seconds with
one line naming the option, an --out that is an input (also through a link) is refused and the input
left intact, model files are recognised from their headers, NaN weights are named at load and a
non-finite latent stops the sampler at its step and window."""
import dataclasses
import hashlib
import os
import resource
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.conftest import REPO, assets_dir
from xdyna_core.loading.bundle import check_model_files, find_model_files
from xdyna_core.loading.checkpoints import CheckpointError, load_state_dict
from xdyna_core.loading.recognise import IPPLUS_FILE, recognise
from xdyna_core.loading.tiny import write_ipplus_split, write_tiny_set
from xdyna_core.preprocess.video import write_video
from xdyna_core.sampling.settings import SamplingSettings

FAST_LIMIT_S = 5.0   # CPU seconds of the whole command (python start, imports, checks)
NAN_KEY = "conv_in.weight"


def cli(*args, timeout=300):
    """(completed process, CPU seconds the command used): the work done before it answered, which a
    busy machine does not inflate the way it inflates wall time."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-m", "xdyna_core", *map(str, args)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_line(r):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _poison(path, key, value=float("nan")):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    sd = load_file(str(path))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[3] = value
    save_file(sd, str(path), metadata=meta)


@pytest.fixture(scope="module")
def nan_models(tmp_path_factory):
    """The tiny set with one NaN in the UNet: a run that loads weights fails on it, so an error about
    anything else proves nothing was loaded."""
    root = tmp_path_factory.mktemp("nan_models")
    write_tiny_set(root, seed=5)
    _poison(root / "xdyna" / "xdyna_unet.safetensors", NAN_KEY)
    return root


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Copies of the inputs (so links can be made to them) and a small pose video."""
    d = tmp_path_factory.mktemp("inputs")
    ref = d / "ref.jpg"
    drv = d / "drive.mp4"
    shutil.copy(assets_dir() / "reference_image" / "example_2.jpg", ref)
    shutil.copy(assets_dir() / "driving_video" / "example_2_driving_2.mp4", drv)
    pose = d / "pose.mp4"
    write_video(pose, torch.zeros(3, 64, 64, 3, dtype=torch.uint8).numpy(), fps=8)
    return {"reference": ref, "driving": drv, "pose": pose}


def animate_args(job, models, out, *extra):
    return ["animate", "--reference", job["reference"], "--driving", job["driving"], "--models", models,
            "--out", out, "--steps", 2, "--size", "192x320", *extra]


def assert_nothing_loaded(r):
    assert "UNet:" not in r.stderr and "non-finite" not in r.stderr, r.stderr


@pytest.mark.parametrize("option,value", [
    ("--steps", "0"), ("--cfg", "nan"), ("--cfg", "inf"), ("--context-overlap", "16"), ("--fps", "-5"),
    ("--device", "tpu"), ("--size", "500x896"), ("--frame-count", "0"), ("--stride", "0"), ("--start", "-1"),
    ("--seed", "x"), ("--context-length", "0")])
def test_invalid_option_fails_fast_naming_it(job, nan_models, tmp_path, option, value):
    r, seconds = cli(*animate_args(job, nan_models, tmp_path / "o.mp4", option, value))
    line = one_line(r)
    assert option in line and value in line, line
    assert seconds < FAST_LIMIT_S, f"{option} {value}: {seconds:.1f} s"
    assert_nothing_loaded(r)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("which", ["reference", "driving", "pose"])
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_out_that_is_an_input_is_refused_and_input_kept(job, nan_models, tmp_path, which, how):
    target = job[which]
    before = sha(target)
    if how == "same path":
        out = target
    else:
        out = tmp_path / "result.mp4"
        (os.symlink if how == "symlink" else os.link)(target, out)
    r, seconds = cli(*animate_args(job, nan_models, out, "--pose", job["pose"]))
    line = one_line(r)
    assert "is the input" in line and str(target) in line, line
    assert seconds < FAST_LIMIT_S, f"{seconds:.1f} s"
    assert_nothing_loaded(r)
    assert sha(target) == before


def _unwritable_dir(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a folder no one can create files in
        return "/proc"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


@pytest.mark.parametrize("case", ["folder", "unwritable", "gif"])
def test_bad_out_fails_fast(job, nan_models, tmp_path, case):
    out = {"folder": tmp_path, "unwritable": f"{_unwritable_dir(tmp_path)}/o.mp4", "gif": tmp_path / "o.gif"}[case]
    r, seconds = cli(*animate_args(job, nan_models, out))
    line = one_line(r)
    assert {"folder": "is a folder", "unwritable": "cannot write into", "gif": "must end in .mp4"}[case] in line
    assert seconds < FAST_LIMIT_S, f"{case}: {seconds:.1f} s"
    assert_nothing_loaded(r)
    assert not (tmp_path / "o.gif").exists()


def test_truncated_reference_says_so(job, nan_models, tmp_path):
    data = job["reference"].read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    args = animate_args(job, nan_models, tmp_path / "o.mp4")
    args[args.index("--reference") + 1] = bad
    line = one_line(cli(*args)[0])
    assert "truncated" in line and "cut.jpg" in line and "person" not in line


def test_rgba_reference_composited_on_neutral_grey(tmp_path):
    import numpy as np
    from PIL import Image

    from xdyna_core.animate import read_reference
    from xdyna_core.preprocess.video import BACKGROUND_GREY

    rgba = np.zeros((32, 24, 4), np.uint8)
    rgba[..., :3] = (255, 0, 255)            # the colour hidden under the transparent pixels
    rgba[8:24, 6:18] = (10, 200, 30, 255)    # the opaque subject
    rgba[0:4, 0:4, 3] = 128                  # half-transparent corner
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut_out.png")
    img = read_reference(tmp_path / "cut_out.png")
    assert img.shape == (32, 24, 3)
    assert tuple(img[30, 20]) == BACKGROUND_GREY == (128, 128, 128)
    assert tuple(img[12, 10]) == (10, 200, 30)
    assert abs(int(img[1, 1, 0]) - (255 + 128) // 2) <= 1 and abs(int(img[1, 1, 1]) - 64) <= 1


def test_nan_weights_named_at_load(job, nan_models, tmp_path):
    """Valid job, NaN in the UNet file: the load stops with the file and tensor, before preprocessing."""
    r, _ = cli(*animate_args(job, nan_models, tmp_path / "o.mp4", "--frame-count", 2))
    err = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1 and "xdyna_unet.safetensors" in err[0] and NAN_KEY in err[0] and "NaN" in err[0], r.stderr
    assert "extract" not in r.stderr  # stopped before preprocessing
    assert not (tmp_path / "o.mp4").exists()


def test_nan_and_inf_in_any_format_name_file_and_tensor(tmp_path):
    sd = {"a.weight": torch.ones(4, 4), "b.weight": torch.ones(8), "steps": torch.tensor([3])}
    sd["b.weight"][5] = float("-inf")
    save_file(sd, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: tensor 'b\.weight' \(8,\).*0 NaN, 1 inf"):
        load_state_dict(tmp_path / "m.safetensors")
    sd["b.weight"][5] = 0
    sd["a.weight"] = sd["a.weight"].half()
    sd["a.weight"][1, 1] = float("nan")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=r"m\.ckpt: tensor 'a\.weight' \(4, 4\).*1 NaN, 0 inf"):
        load_state_dict(tmp_path / "m.ckpt")


# ------------------------------------------------------------------ model files by header

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_set(root, seed=2)
    return root


def _released_ckpt(src, dst):
    """A released-style pickle: state_dict wrapper, 'module.' prefixes, torch zip format."""
    torch.save({"state_dict": {"module." + k: v for k, v in load_file(str(src)).items()}, "epoch": 5}, dst)


def test_controlnets_found_by_header_under_released_names(tiny, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny, models)
    xd = models / "xdyna"
    (xd / "controlnet").mkdir()
    (xd / "controlnet_face").mkdir()
    # released names: no "pose" in the pose file; the face one kept under a neutral name too
    _released_ckpt(xd / "xdyna_pose_controlnet.safetensors", xd / "controlnet" / "controlnet-checkpoint-epoch-5.ckpt")
    (xd / "xdyna_face_controlnet.safetensors").rename(xd / "controlnet_face" / "controlnet-checkpoint-epoch-2.safetensors")
    (xd / "xdyna_pose_controlnet.safetensors").unlink()
    files = find_model_files(models)
    assert files.pose_controlnet.name == "controlnet-checkpoint-epoch-5.ckpt"
    assert files.face_controlnet.name == "controlnet-checkpoint-epoch-2.safetensors"
    assert recognise(files.pose_controlnet).condition_channels == 3  # read from the pickle index, not loaded
    check_model_files(files)


def test_unet_without_motion_modules_takes_them_from_the_ipplus_file(tiny, job, tmp_path):
    """The released layout the official loader fills from animatediff_v15_v1_ipplus.pth: found in
    models/animatediff_models or models/xdyna; named with the folders searched (one line, nothing
    loaded) when absent."""
    from xdyna_core.loading.bundle import load_bundle
    from xdyna_core.loading.checkpoints import load_xdyna_unet

    models = tmp_path / "models"
    shutil.copytree(tiny, models)
    unet = models / "xdyna" / "xdyna_unet.safetensors"
    split = tmp_path / "split.safetensors"
    write_ipplus_split(unet, split, tmp_path / IPPLUS_FILE)
    shutil.move(split, unet)
    with pytest.raises(CheckpointError) as e:
        find_model_files(models)
    for needle in (IPPLUS_FILE, str(models / "xdyna"), str(models / "animatediff_models"), str(unet)):
        assert needle in str(e.value)
    r, _ = cli(*animate_args(job, models, tmp_path / "o.mp4"))
    assert IPPLUS_FILE in one_line(r)
    assert_nothing_loaded(r)
    complete, _ = load_xdyna_unet(tiny / "xdyna" / "xdyna_unet.safetensors")
    for folder in ("animatediff_models", "xdyna"):
        (models / folder).mkdir(exist_ok=True)
        shutil.move(tmp_path / IPPLUS_FILE, models / folder / IPPLUS_FILE)
        files = find_model_files(models)
        assert files.ipplus == models / folder / IPPLUS_FILE and files.unet == unet
        check_model_files(files)
        got = load_bundle(files).unet.state_dict()
        assert got.keys() == complete.state_dict().keys()
        assert all(torch.equal(v, got[k]) for k, v in complete.state_dict().items())
        shutil.move(models / folder / IPPLUS_FILE, tmp_path / IPPLUS_FILE)


def test_swapped_or_wrong_model_file_fails_before_loading(tiny, job, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny, models)
    xd = models / "xdyna"
    pose, face = xd / "xdyna_pose_controlnet.safetensors", xd / "xdyna_face_controlnet.safetensors"
    tmp = xd / "swap.tmp"
    pose.rename(tmp)
    face.rename(pose)
    tmp.rename(face)
    files = find_model_files(models)  # the content decides, not the names (one rule with the dropdowns)
    assert (files.pose_controlnet, files.face_controlnet) == (face, pose)
    check_model_files(files)
    with pytest.raises(CheckpointError, match="6-channel conditions"):  # a file given for the wrong role
        check_model_files(dataclasses.replace(files, pose_controlnet=pose))
    shutil.copy(pose, face)  # two S-Face ControlNets: no pose ControlNet to be found
    with pytest.raises(FileNotFoundError, match="pose ControlNet"):
        find_model_files(models)
    # a UNet file that is really the SD1.5 checkpoint, through the command line: one line, no load
    shutil.copy(models / "checkpoints" / "xdyna_tiny_sd15.safetensors", xd / "xdyna_unet.safetensors")
    r, _ = cli(*animate_args(job, models, tmp_path / "o.mp4"))
    line = one_line(r)
    assert "xdyna_unet.safetensors" in line and "X-Dyna UNet" in line, line
    assert "UNet:" not in r.stderr


def test_demo_with_incomplete_models_is_an_error(tmp_path):
    (tmp_path / "models" / "xdyna").mkdir(parents=True)
    r, seconds = cli("demo", "--models", tmp_path / "models", "--work", tmp_path / "w", "--out", tmp_path / "d.mp4")
    line = one_line(r)
    assert "X-Dyna UNet" in line and "PIPELINE CHECK" not in r.stderr
    assert not (tmp_path / "w").exists()  # no fallback to the random set


# ------------------------------------------------------------------ working size bounds

@pytest.mark.parametrize("size, expected", [
    ("8x8", r"at least 64 px .* UNet halves"),
    ("56x896", r"at least 64 px"),
    ("4096x4096", r"at most 2048 px .* 8\.6 GB per frame"),
    ("512x2056", r"at most 2048 px")])
def test_working_size_bounds_say_why_before_anything_loads(job, nan_models, tmp_path, size, expected):
    """Issue 22: `--size 8x8` was reported as "no person found", 4096x4096 was taken silently: both are
    refused at parse time with the bound and its reason (the upper with a memory figure)."""
    import re

    r, seconds = cli("animate", "--reference", job["reference"], "--driving", job["driving"], "--models",
                     nan_models, "--out", tmp_path / "o.mp4", "--size", size)
    line = one_line(r)
    assert "--size" in line and f"working size {size}" in line and re.search(expected, line), line
    assert "no person" not in line and seconds < FAST_LIMIT_S
    assert_nothing_loaded(r)


def test_working_size_rule_is_the_one_the_nodes_and_cli_use():
    from xdyna_core import arg_types
    from xdyna_core.preprocess import driving
    from xdyna_core.working_size import MAX_SIDE, MIN_SIDE, check_output_size, decoder_bytes_per_frame

    assert driving.check_output_size is check_output_size and arg_types.check_output_size is check_output_size
    assert check_output_size(MIN_SIDE, MAX_SIDE) == (64, 2048)
    for w, h in ((MIN_SIDE - 8, 512), (512, MAX_SIDE + 8)):
        with pytest.raises(ValueError, match=f"working size {w}x{h}"):
            check_output_size(w, h)
    assert check_output_size(8, 8, multiple=1) == (8, 8)  # pose videos that never reach the sampler
    assert decoder_bytes_per_frame(512, 896) == 128 * 512 * 896 * 4


@pytest.mark.parametrize("value", ["-1", str(2 ** 64)])
def test_seed_outside_the_range_is_refused_on_both_fronts(value, job, nan_models, tmp_path):
    """Issue 22: `--seed -1` was taken silently. Seeds are used as given, 0..2^64-1 (the node's widget
    range): the CLI refuses others at parse time, and check_sampling (the node's check too) refuses
    them in a settings value."""
    from xdyna_core.job_checks import JobCheckError, check_sampling

    r, _ = cli("animate", "--reference", job["reference"], "--driving", job["driving"], "--models", nan_models,
               "--out", tmp_path / "o.mp4", "--seed", value)
    line = one_line(r)
    assert "--seed" in line and "0 to 2^64-1" in line and "-1 does not mean random" in line, line
    with pytest.raises(JobCheckError, match=rf"^seed {value}: a whole number from 0 to 2\^64-1"):
        check_sampling(SamplingSettings(seed=int(value)), flag=lambda name: name)
    check_sampling(SamplingSettings(seed=2 ** 64 - 1))


@pytest.mark.parametrize("missing, role, kind", [("reference", "reference image", "image"),
                                                  ("driving", "driving video", "video"),
                                                  ("pose", "pose video", "video")])
def test_a_missing_input_is_named_by_its_role_and_kind(job, nan_models, tmp_path, missing, role, kind):
    """Issue 22: a missing reference image was "video file not found"."""
    paths = {"reference": job["reference"], "driving": job["driving"], "pose": job["pose"]}
    paths[missing] = tmp_path / ("gone.png" if missing == "reference" else "gone.mp4")
    r, _ = cli("animate", "--reference", paths["reference"], "--driving", paths["driving"], "--pose", paths["pose"],
               "--models", nan_models, "--out", tmp_path / "o.mp4")
    line = one_line(r)
    assert f"--{missing} (the {role}): {kind} file not found" in line and "gone." in line, line
    assert ("video" not in line) if kind == "image" else True, line


# ------------------------------------------------------------------ free disk space

@pytest.mark.parametrize("frame_count, panels, fits", [(5, False, True), (5, True, False), (200, False, False)])
def test_free_disk_space_is_checked_against_the_result_before_the_run(job, tmp_path, monkeypatch, frame_count,
                                                                      panels, fits):
    """Issue 22: a full disk was found after the whole run. 8.3 MB free: 5 frames of 192x320 fit (the
    estimate is 8 MB + 5 * 192 * 320 * 3 / 10 bytes = 8.09 MB), 5 side-by-side panels (5 x the width:
    8.46 MB) and 200 frames (11.7 MB) do not; the message says what is free, where, and the basis."""
    import collections

    from xdyna_core.animate import AnimateOptions
    from xdyna_core.job_checks import JobCheckError, check_job

    usage = collections.namedtuple("usage", "total used free")
    seen = []

    def disk_usage(path):
        seen.append(path)
        return usage(10 ** 12, 10 ** 12 - 8_300_000, 8_300_000)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    opts = AnimateOptions(width=192, height=320, frame_count=frame_count, device="cpu")
    out = tmp_path / "sub" / "o.mp4"
    if fits:
        assert check_job(opts, job["reference"], job["driving"], out, panels=panels).out == out
    else:
        with pytest.raises(JobCheckError, match=r"^--out .*o\.mp4: 8 MB free in .* needs up to about \d+ MB "
                                                rf"\({frame_count} frames of {192 * (5 if panels else 1)}x320\)"):
            check_job(opts, job["reference"], job["driving"], out, panels=panels)
    assert seen and os.path.samefile(seen[-1], tmp_path)  # the folder the result goes into (its existing part)


# ------------------------------------------------------------------ non-finite latents

def test_non_finite_latent_stops_at_its_step_and_window():
    from xdyna_core.sampling.pipeline import NonFiniteLatents, sample_video

    calls = []

    def unet(sample, t, context, **kw):  # 20 frames, context 16 / overlap 4: two windows per step
        calls.append(t)
        eps = torch.zeros_like(sample)
        if len(calls) == 4:              # step 2, window 2
            eps[0, 0, 3] = float("nan")
        return eps

    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, 8, generator=g)
    tokens = torch.randn(1, 4, 8, generator=g)
    with pytest.raises(NonFiniteLatents, match=r"step 2/3, window 2/2"):
        sample_video(unet, torch.randn(1, 4, 1, 8, 8, generator=g), text, text, tokens, tokens, SamplingSettings(steps=3, cfg=7.5),
                     torch.Generator().manual_seed(0), num_frames=20)
    assert len(calls) == 4  # stopped at the end of that step: no further UNet call


def test_latents_made_non_finite_by_the_guidance_name_that_step_and_the_cfg():
    """Finite network outputs whose guided difference overflows float32: the step that produced the
    non-finite latents is named, and the advice is about the cfg, not the (already fp32) precision."""
    from xdyna_core.sampling.pipeline import NonFiniteLatents, sample_video

    def unet(sample, t, context, **kw):  # uncond half 0, cond half 1e10: cfg 1e30 -> 1e40 = inf in fp32
        eps = torch.zeros_like(sample)
        eps[1:] = 1e10
        return eps

    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, 8, generator=g)
    tokens = torch.randn(1, 4, 8, generator=g)
    with pytest.raises(NonFiniteLatents, match=r"latents became non-finite .* at step 1/3") as e:
        sample_video(unet, torch.randn(1, 4, 1, 8, 8, generator=g), text, text, tokens, tokens,
                     SamplingSettings(steps=3, cfg=1e30), torch.Generator().manual_seed(0), num_frames=4)
    assert "--cfg" in str(e.value) and "fp32" not in str(e.value)


def test_non_finite_advice_fits_the_precision_and_cfg():
    from xdyna_core.sampling.pipeline import non_finite_advice

    assert "--precision" in non_finite_advice(torch.float16, 7.5) and "--cfg" not in non_finite_advice(torch.float16, 7.5)
    fp32 = non_finite_advice(torch.float32, 7.5)
    assert "fp32" not in fp32 and "--precision" not in fp32 and "float32" in fp32 and "damaged" in fp32
    both = non_finite_advice(torch.float16, 1e30)
    assert "--cfg" in both and "--precision" in both


@pytest.mark.parametrize("steps, where", [(2, r"at step 2/2, window 1/1"), (1, r"decoded frames .* from frame 1/4")])
def test_cfg_1e30_stops_where_values_first_go_non_finite(tiny, tmp_path, steps, where):
    """Acceptance (issue 22): `--cfg 1e30` on the tiny set in fp32 stops at the first step with NaN/inf
    (2 steps), or, with 1 step, says the decoded frames went non-finite and why; the advice names
    --cfg and never tells an fp32 run to run in fp32."""
    import re

    poses = assets_dir() / "poses" / "example_2_pose_2.mp4"
    r, _ = cli("animate", "--reference", assets_dir() / "reference_image" / "example_2.jpg",
               "--driving", assets_dir() / "driving_video" / "example_2_driving_2.mp4", "--pose", poses,
               "--face", "off", "--models", tiny, "--out", tmp_path / "o.mp4", "--steps", steps,
               "--size", "128x192", "--frame-count", 4, "--cfg", "1e30", "--precision", "fp32", "--quiet")
    line = one_line(r)
    assert re.search(where, line), line
    assert "--cfg" in line and "1e+30" in line and "fp32" not in line and "--precision" not in line, line
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("length, fails", [(32, True), (24, False)])
def test_context_length_against_the_motion_module_limit(job, nan_models, tmp_path, length, fails):
    """Issue 21: the window length is checked against the UNet's motion module limit, read from the
    file's header (24 in the tiny set, as in the released UNet), before any weight loads."""
    assert recognise(nan_models / "xdyna" / "xdyna_unet.safetensors").motion_max_len == 24
    r, seconds = cli(*animate_args(job, nan_models, tmp_path / "out.mp4", "--pose", job["pose"],
                                   "--context-length", length, "--context-overlap", 4))
    if fails:
        line = one_line(r)
        assert "--context-length 32" in line and "at most 24" in line and "motion module" in line, line
        assert seconds < FAST_LIMIT_S, f"{seconds:.1f} s"
        assert_nothing_loaded(r)
    else:  # within the limit the run goes on to load the weights: the planted NaN is what stops it
        assert r.returncode == 2 and NAN_KEY in r.stderr and "context" not in r.stderr, r.stderr


def test_sampling_checks_name_settings_as_each_front_spells_them():
    """One check of the settings value for both fronts: the CLI names options, a node its inputs."""
    from xdyna_core.job_checks import JobCheckError, check_sampling

    bad = SamplingSettings(context_length=8, context_overlap=8)
    with pytest.raises(JobCheckError, match=r"^--context-overlap 8 must be smaller than --context-length 8"):
        check_sampling(bad)
    with pytest.raises(JobCheckError, match=r"^context_overlap 8 must be smaller than context_length 8"):
        check_sampling(bad, flag=str)
    with pytest.raises(JobCheckError, match=r"context_length 20: at most 16"):
        check_sampling(SamplingSettings(context_length=20), motion_max_len=16, flag=str)
    with pytest.raises(JobCheckError, match=r"--steps 1001: 1 to 1000"):
        check_sampling(SamplingSettings(steps=1001))
    with pytest.raises(JobCheckError, match=r"--latent must be one of sample, mean"):
        check_sampling(SamplingSettings(latent="median"))
    check_sampling(SamplingSettings(context_length=16), motion_max_len=16)   # at the limit: fine


@pytest.mark.parametrize("case", ["no person", "off canvas", "absurd", "nan", "canvas"])
def test_bad_keypoints_stop_animate_before_any_weight_loads(job, nan_models, tmp_path, case):
    """Issue 22: keypoints that would render black pose frames (and so sample an unguided video) are
    refused by the one sanity check, naming the frames, before the NaN planted in the UNet is met."""
    import json

    from tests.core.test_keypoints import BAD_CASES, bad_keypoints

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_keypoints(case)))
    r, seconds = cli(*animate_args(job, nan_models, tmp_path / "o.mp4", "--keypoints", bad, "--frame-count", 4))
    line = one_line(r)
    assert line.startswith("error: --keypoints: "), line
    import re

    assert re.search(BAD_CASES[case][1].replace(r"bad\.json", re.escape(str(bad))), line), line
    assert seconds < FAST_LIMIT_S, f"{case}: {seconds:.1f} s"
    assert_nothing_loaded(r)
    assert not (tmp_path / "o.mp4").exists()
