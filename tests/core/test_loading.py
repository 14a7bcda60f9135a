"""Checkpoint reading, recognition, key maps and the X-Dyna loaders (tiny models only; full-size
structure is checked on the meta device)."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import spec_dir
from xdyna_core.loading import checkpoints as C
from xdyna_core.loading import clip_keys, ip_adapter_keys, kinds, sd_checkpoint_keys, unet_keys, vae_keys
from xdyna_core.loading import keys as K
from xdyna_core.loading import tiny as T


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return T.write_tiny_set(root, seed=0, with_variants=True)


@pytest.fixture(scope="module")
def full_unet(tiny):
    model, report = C.load_xdyna_unet(tiny["unet"])
    assert report.ok
    return model


def _manifest(name):
    return json.loads((spec_dir() / "checkpoint_keys" / f"{name}.json").read_text())


def _meta_sd(manifest, prefix=""):
    return {prefix + e["key"]: torch.empty(e["shape"], device="meta") for e in manifest["keys"]}


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------------------
# Independent enumeration of an LDM (CompVis openaimodel) SD UNet: names and shapes
# ---------------------------------------------------------------------------------------------
def ldm_unet_shapes(model_ch=320, mult=(1, 2, 4, 4), layers=2, ctx=768, attn=(True, True, True, False), cin=4, cout=4):
    S = {}
    temb = 4 * model_ch

    def lin(p, o, i, bias=True):
        S[p + ".weight"] = (o, i)
        if bias:
            S[p + ".bias"] = (o,)

    def conv(p, o, i, k):
        S[p + ".weight"] = (o, i, k, k)
        S[p + ".bias"] = (o,)

    def norm(p, c):
        S[p + ".weight"] = (c,)
        S[p + ".bias"] = (c,)

    def res(p, ci, co):
        norm(p + ".in_layers.0", ci)
        conv(p + ".in_layers.2", co, ci, 3)
        lin(p + ".emb_layers.1", co, temb)
        norm(p + ".out_layers.0", co)
        conv(p + ".out_layers.3", co, co, 3)
        if ci != co:
            conv(p + ".skip_connection", co, ci, 1)

    def spatial_transformer(p, c):
        norm(p + ".norm", c)
        conv(p + ".proj_in", c, c, 1)
        tb = p + ".transformer_blocks.0"
        for a, kv in (("attn1", c), ("attn2", ctx)):
            lin(f"{tb}.{a}.to_q", c, c, bias=False)
            lin(f"{tb}.{a}.to_k", c, kv, bias=False)
            lin(f"{tb}.{a}.to_v", c, kv, bias=False)
            lin(f"{tb}.{a}.to_out.0", c, c)
        lin(tb + ".ff.net.0.proj", 8 * c, c)
        lin(tb + ".ff.net.2", c, 4 * c)
        for i in (1, 2, 3):
            norm(f"{tb}.norm{i}", c)
        conv(p + ".proj_out", c, c, 1)

    lin("time_embed.0", temb, model_ch)
    lin("time_embed.2", temb, temb)
    conv("input_blocks.0.0", model_ch, cin, 3)
    skips, ch, n = [model_ch], model_ch, 1
    for level, m in enumerate(mult):
        for _ in range(layers):
            res(f"input_blocks.{n}.0", ch, m * model_ch)
            ch = m * model_ch
            if attn[level]:
                spatial_transformer(f"input_blocks.{n}.1", ch)
            skips.append(ch)
            n += 1
        if level != len(mult) - 1:
            conv(f"input_blocks.{n}.0.op", ch, ch, 3)
            skips.append(ch)
            n += 1
    res("middle_block.0", ch, ch)
    spatial_transformer("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for level in reversed(range(len(mult))):
        for i in range(layers + 1):
            res(f"output_blocks.{n}.0", ch + skips.pop(), model_ch * mult[level])
            ch = model_ch * mult[level]
            slot = 1
            if attn[level]:
                spatial_transformer(f"output_blocks.{n}.1", ch)
                slot = 2
            if level and i == layers:
                conv(f"output_blocks.{n}.{slot}.conv", ch, ch, 3)
            n += 1
    norm("out.0", model_ch)
    conv("out.2", cout, model_ch, 3)
    return S


# ---------------------------------------------------------------------------------------------
# Key maps vs the manifests
# ---------------------------------------------------------------------------------------------
def test_manifest_keys_come_from_the_right_place():
    man = _manifest("xdyna_unet")
    shapes = {e["key"]: tuple(e["shape"]) for e in man["keys"]}
    # every key's group is recognised from its name alone
    assert all(unet_keys.unet_key_group(e["key"]) == e["group"] for e in man["keys"])
    # sd15_unet group == exactly what an LDM SD1.5 UNet maps to (names and shapes)
    ldm = ldm_unet_shapes()
    assert len(ldm) == man["group_counts"]["sd15_unet"]
    conv, unmapped = unet_keys.convert_ldm_unet_to_diffusers(ldm)
    assert unmapped == []
    base = {k: s for k, s in shapes.items() if unet_keys.unet_key_group(k) == "sd15_unet"}
    assert conv == base
    # and back again, through the single-file prefix
    back, extra = unet_keys.convert_diffusers_unet_to_ldm(shapes)
    assert back == ldm
    assert sorted(extra) == sorted(k for k in shapes if unet_keys.unet_key_group(k) != "sd15_unet")
    # the ip_adapter group is the image of the IP-Adapter file numbering
    index_map = {int(i): m for i, m in man["ip_adapter_bin_index_to_unet_module"].items()}
    assert unet_keys.UNetLayout.sd15().ip_adapter_index_map() == index_map
    assert unet_keys.UNetLayout.from_diffusers_keys(shapes) == unet_keys.UNetLayout.sd15()
    ip_file = {f"{i}.{p}.weight": None for i in index_map for p in ("to_k_ip", "to_v_ip")}
    assert set(ip_adapter_keys.ip_adapter_to_unet_keys(ip_file)) == {k for k in shapes if unet_keys.unet_key_group(k) == "ip_adapter"}


def test_ip_adapter_numbering_hits_the_right_modules(tiny, full_unet):
    man = _manifest("xdyna_unet")
    _, unet_ip = C.load_ip_adapter(tiny["ip_adapter"])
    raw = load_file(str(tiny["ip_adapter"]))
    model_sd = full_unet.state_dict()
    for idx, module in man["ip_adapter_bin_index_to_unet_module"].items():
        for proj in ("to_k_ip", "to_v_ip"):
            w = raw[f"ip_adapter.{idx}.{proj}.weight"]
            # the tiny IP-Adapter carries the same values as the tiny UNet, module by module
            assert torch.equal(unet_ip[f"{module}.{proj}.weight"], w)
            assert torch.equal(model_sd[f"{module}.{proj}.weight"], w.float())
    assert len(unet_ip) == 32
    with pytest.raises(ValueError, match="index 33"):
        ip_adapter_keys.ip_adapter_to_unet_keys({"33.to_k_ip.weight": None})
    with pytest.raises(ValueError, match="index 2 "):
        ip_adapter_keys.ip_adapter_to_unet_keys({"2.to_k_ip.weight": None})


def test_full_size_files_load_structurally_on_meta():
    """The released key sets (with 'module.' prefixes) load into full-size models, configs are
    inferred from shapes (real files carry none), all without allocating memory."""
    from xdyna_core.models.controlnet import ControlNetConfig
    from xdyna_core.models.resampler import ResamplerConfig
    from xdyna_core.models.unet3d import UNet3DConfig

    unet_man = _manifest("xdyna_unet")
    _, rep = C.load_xdyna_unet(_meta_sd(unet_man, "module."), device="meta")
    assert rep.ok and rep.num_loaded == unet_man["num_keys"]
    assert rep.config == UNet3DConfig().to_dict()
    # base-less file + LDM single-file SD1.5 (meta tensors) -> complete
    adapters = {k: v for k, v in _meta_sd(unet_man).items() if unet_keys.unet_key_group(k) != "sd15_unet"}
    ldm = {unet_keys.LDM_UNET_PREFIX + k: torch.empty(s, device="meta") for k, s in ldm_unet_shapes().items()}
    _, rep = C.load_xdyna_unet(adapters, sd15_unet=ldm, device="meta")
    assert rep.ok and sum(rep.filled.values()) == unet_man["group_counts"]["sd15_unet"]

    for name, ch in (("pose_controlnet", 3), ("face_controlnet", 6)):
        _, rep = C.load_controlnet(_meta_sd(_manifest(name)), kind=name.split("_")[0], device="meta")
        assert rep.ok and rep.config == ControlNetConfig(conditioning_channels=ch).to_dict()

    proj = _manifest("ip_adapter_image_proj")
    ip_file = {"image_proj." + k: v for k, v in _meta_sd(proj).items()}
    ip_file.update({"ip_adapter." + k: v for k, v in ip_adapter_keys.unet_to_ip_adapter_keys(_meta_sd(unet_man)).items()})
    _, rep = C.load_resampler(ip_file, device="meta")
    assert rep.ok and rep.config == ResamplerConfig().to_dict()  # heads 12 / dim_head 64 inferred


def test_vae_key_map_agrees_with_the_vae_module(tiny):
    from xdyna_core.loading.vae_keys import convert_ldm_vae_keys
    from xdyna_core.models.vae import AutoencoderKL, AutoencoderKLConfig

    parts = sd_checkpoint_keys.split_ldm_checkpoint(C.load_state_dict(tiny["sd15"]))
    cfg = AutoencoderKLConfig.from_dict(C.read_config_metadata(tiny["sd15"])["vae"])
    model = AutoencoderKL(cfg)
    assert set(parts["vae"]) == set(model.state_dict())
    raw = load_file(str(tiny["sd15"]))
    theirs = convert_ldm_vae_keys({k: v for k, v in raw.items() if k.startswith(vae_keys.LDM_VAE_PREFIX)})
    assert theirs.keys() == parts["vae"].keys()
    assert all(torch.equal(theirs[k], parts["vae"][k]) for k in theirs)
    ldm, unmapped = vae_keys.convert_diffusers_vae_to_ldm(parts["vae"])
    assert unmapped == [] and ldm.keys() == {k[len(vae_keys.LDM_VAE_PREFIX):] for k in raw if k.startswith(vae_keys.LDM_VAE_PREFIX)}
    assert ldm["encoder.mid.attn_1.q.weight"].dim() == 4  # LDM stores 1x1 convs


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------
def test_ckpt_with_state_dict_wrapper_and_module_prefix(tiny, tmp_path):
    sd = load_file(str(tiny["pose_controlnet"]))
    ckpt = tmp_path / "controlnet-checkpoint-epoch-5.ckpt"
    torch.save({"state_dict": {"module." + k: v.float() for k, v in sd.items()}, "epoch": 5, "global_step": 10}, ckpt)
    loaded = C.load_state_dict(ckpt)
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k].float()) for k in sd)
    a, rep = C.load_controlnet(ckpt, kind="pose")
    assert rep.ok and rep.config["conditioning_channels"] == 3
    b, _ = C.load_controlnet(tiny["pose_controlnet"], kind="pose")
    _assert_same_state(a, b)
    # legacy (non-zip) pickles cannot be memory-mapped but still load safely
    legacy = tmp_path / "legacy.pth"
    torch.save({"module.conv_in.weight": sd["conv_in.weight"]}, legacy, _use_new_zipfile_serialization=False)
    assert C.detect_format(legacy) == "torch_legacy"
    assert torch.equal(C.load_state_dict(legacy)["conv_in.weight"], sd["conv_in.weight"])


def test_safetensors_unet_loads_with_its_config_and_dtype(tiny, full_unet):
    from xdyna_core.models.unet3d import UNet3DConditionModel, UNet3DConfig

    cfg = UNet3DConfig.from_dict(C.read_config_metadata(tiny["unet"]))
    assert full_unet.config == cfg and cfg.num_attention_heads == 2  # from metadata, not inferable
    assert full_unet.state_dict().keys() == UNet3DConditionModel(cfg, device="meta").state_dict().keys()
    assert not any(t.is_meta for t in full_unet.state_dict().values())
    m16, _ = C.load_xdyna_unet(tiny["unet"], dtype=torch.bfloat16)
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}
    raw = load_file(str(tiny["unet"]))
    k = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_ff.weight"
    assert torch.equal(full_unet.state_dict()[k], raw[k].float())


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "unet-checkpoint-epoch-5.ckpt"
    torch.save({"state_dict": {"conv_in.weight": torch.zeros(1)}, "x": Payload()}, bad)
    with pytest.raises(C.CheckpointError, match="refused") as e:
        C.load_state_dict(bad)
    assert str(bad) in str(e.value) and "code" in str(e.value)
    assert not marker.exists()
    with pytest.raises(C.CheckpointError, match="refused"):
        C.load_xdyna_unet(bad)


@pytest.mark.parametrize("role", ["unet", "pose_controlnet"])
def test_truncated_files_name_the_file_and_problem(tiny, tmp_path, role):
    data = tiny[role].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointError, match="truncated") as e:
        C.load_state_dict(cut)
    assert str(cut) in str(e.value)
    ckpt = tmp_path / "model.ckpt"
    torch.save(load_file(str(tiny[role])), ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-4096])
    with pytest.raises(C.CheckpointError, match="truncated or corrupt") as e:
        C.load_state_dict(ckpt)
    assert str(ckpt) in str(e.value)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(C.CheckpointError, match="too short"):
        C.load_state_dict(empty)
    with pytest.raises(FileNotFoundError, match="nothere"):
        C.load_state_dict(tmp_path / "nothere.ckpt")


def test_identify_every_file_of_the_set(tiny):
    expected = {"unet": "xdyna_unet", "unet_adapters": "xdyna_unet_adapters", "pose_controlnet": "controlnet",
                "face_controlnet": "controlnet", "ip_adapter": "ip_adapter", "clip_vision": "clip_vision",
                "sd15": "sd_checkpoint"}
    for role, kind in expected.items():
        assert kinds.identify(C.load_state_dict(tiny[role])) == kind, role
    parts = sd_checkpoint_keys.split_ldm_checkpoint(C.load_state_dict(tiny["sd15"]))
    assert kinds.identify(parts["unet"]) == "sd_unet"
    assert kinds.identify(parts["vae"]) == "vae"
    assert kinds.identify(parts["clip_text"]) == "clip_text"
    assert kinds.identify(vae_keys.convert_diffusers_vae_to_ldm(parts["vae"])[0]) == "vae_ldm"
    assert kinds.identify(unet_keys.convert_diffusers_unet_to_ldm(parts["unet"])[0]) == "sd_unet_ldm"
    proj, _ = ip_adapter_keys.split_ip_adapter(C.load_state_dict(tiny["ip_adapter"]))
    assert kinds.identify(proj) == "resampler"
    mm = {"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight": None}
    assert kinds.identify(parts["unet"] | mm) == "animatediff_unet"
    assert kinds.identify(mm) == "motion_module"
    raw = load_file(str(tiny["sd15"]))
    assert clip_keys.convert_text_encoder_keys(raw).keys() == {k for k in parts["clip_text"] if not k.endswith("position_ids")}


@pytest.mark.parametrize("role,what", [
    ("sd15", "single-file Stable Diffusion checkpoint"),
    ("pose_controlnet", "ControlNet"),
    ("ip_adapter", "IP-Adapter-plus"),
    ("clip_vision", "CLIP vision"),
])
def test_wrong_file_for_the_unet_is_named(tiny, role, what):
    with pytest.raises(C.CheckpointError) as e:
        C.load_xdyna_unet(tiny[role])
    msg = str(e.value)
    assert str(tiny[role]) in msg and what in msg and "X-Dyna UNet" in msg and "was expected" in msg


def test_wrong_file_for_other_loaders(tiny, tmp_path):
    vae = sd_checkpoint_keys.split_ldm_checkpoint(C.load_state_dict(tiny["sd15"]))["vae"]
    vae_file = tmp_path / "vae.safetensors"
    save_file(vae, str(vae_file))
    with pytest.raises(C.CheckpointError, match="VAE.*X-Dyna UNet"):
        C.load_xdyna_unet(vae_file)
    with pytest.raises(C.CheckpointError, match="6-channel conditions.*S-Face|6-channel conditions \\(face\\)"):
        C.load_controlnet(tiny["face_controlnet"], kind="pose")
    with pytest.raises(C.CheckpointError, match="X-Dyna UNet.*but the X-Dyna S-Face ControlNet"):
        C.load_controlnet(tiny["unet"], kind="face")
    with pytest.raises(C.CheckpointError, match="IP-Adapter-plus"):
        C.load_ip_adapter(tiny["pose_controlnet"])
    with pytest.raises(C.CheckpointError, match="ControlNet.*SD1.5 UNet or SD1.5 checkpoint"):
        C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet=tiny["pose_controlnet"])


# ---------------------------------------------------------------------------------------------
# SD1.5 base fill, adapter checks
# ---------------------------------------------------------------------------------------------
def test_base_fill_from_ldm_single_file(tiny, full_unet):
    model, rep = C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet=tiny["sd15"])
    assert rep.ok and rep.filled == {str(tiny["sd15"]): 684}
    _assert_same_state(model, full_unet)
    # only the UNet part of the single file matters (full training files carry extras)
    sd15 = load_file(str(tiny["sd15"]))
    sd15.update({"first_stage_model.loss.logvar": torch.zeros(()), "model_ema.decay": torch.tensor(0.9999)})
    model, rep = C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet=sd15)
    _assert_same_state(model, full_unet)


def test_models_are_built_with_the_given_operations(tiny):
    import types

    class MarkedLinear(torch.nn.Linear):
        pass

    ops = types.SimpleNamespace(**{n: getattr(torch.nn, n) for n in dir(torch.nn) if not n.startswith("_")})
    ops.Linear = MarkedLinear
    model, rep = C.load_xdyna_unet(tiny["unet"], operations=ops, dtype=torch.float16)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, MarkedLinear) for m in linears)
    assert rep.ok and model.conv_in.weight.dtype == torch.float16


def test_base_fill_from_diffusers_folder_and_ldm_unet(tiny, tmp_path, full_unet):
    base = {k: v for k, v in load_file(str(tiny["unet"])).items() if unet_keys.unet_key_group(k) == "sd15_unet"}
    unet_dir = tmp_path / "stable-diffusion-v1-5" / "unet"
    unet_dir.mkdir(parents=True)
    save_file(base, str(unet_dir / "diffusion_pytorch_model.safetensors"))
    (unet_dir / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    for src in (unet_dir.parent, unet_dir):  # repo root or its unet/ folder
        model, rep = C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet=src)
        assert rep.ok and sum(rep.filled.values()) == len(base)
        _assert_same_state(model, full_unet)
    # an in-memory LDM UNet, bare or as ComfyUI's model holds it ("diffusion_model." prefix)
    ldm, _ = unet_keys.convert_diffusers_unet_to_ldm(base)
    for prefix in ("", "diffusion_model."):
        model, rep = C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet={prefix + k: v for k, v in ldm.items()})
        _assert_same_state(model, full_unet)
    # a base of the wrong width is caught with the file named
    narrow = {k: v[..., :1].contiguous() if v.dim() == 4 else v for k, v in base.items()}
    save_file(narrow, str(unet_dir / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(C.CheckpointError, match="wrong shape") as e:
        C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet=unet_dir)
    assert "unet_dir" not in str(e.value) and str(unet_dir) in str(e.value)


def test_missing_adapter_keys_are_an_error(tiny, tmp_path, full_unet):
    full = load_file(str(tiny["unet"]))
    meta = {K.CONFIG_METADATA_KEY: json.dumps(full_unet.config.to_dict())}

    def without(pred, name):
        p = tmp_path / name
        save_file({k: v for k, v in full.items() if not pred(k)}, str(p), metadata=meta)
        return p

    no_ff = without(lambda k: k.endswith("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q_ff.weight"), "a.safetensors")
    with pytest.raises(C.CheckpointError, match="1 Dynamics-Adapter") as e:
        C.load_xdyna_unet(no_ff, sd15_unet=tiny["sd15"])
    assert str(no_ff) in str(e.value)
    no_mm = without(lambda k: k.startswith("up_blocks.3.motion_modules.2."), "b.safetensors")
    with pytest.raises(C.CheckpointError, match="motion-module weights are missing"):
        C.load_xdyna_unet(no_mm)
    no_ip = without(lambda k: unet_keys.unet_key_group(k) == "ip_adapter", "c.safetensors")
    with pytest.raises(C.CheckpointError, match="32 IP-Adapter projections .*ip-adapter-plus"):
        C.load_xdyna_unet(no_ip)
    model, rep = C.load_xdyna_unet(no_ip, ip_adapter=tiny["ip_adapter"])
    assert rep.filled == {str(tiny["ip_adapter"]): 32}
    _assert_same_state(model, full_unet)
    extra = tmp_path / "d.safetensors"
    save_file({**full, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.lora.weight": torch.zeros(2)}, str(extra),
              metadata=meta)
    with pytest.raises(C.CheckpointError, match="1 unexpected"):
        C.load_xdyna_unet(extra)


def test_ipplus_file_fills_what_the_unet_file_lacks_like_the_official_load(tiny, tmp_path, full_unet):
    """SD1.5 base -> animatediff_v15_v1_ipplus.pth -> X-Dyna UNet, later wins (the official strict=False load)."""
    from xdyna_core.loading import recognise as R

    ipplus = tmp_path / R.IPPLUS_FILE
    no_mm, no_mm_ip = tmp_path / "no_mm.safetensors", tmp_path / "no_mm_ip.safetensors"
    T.write_ipplus_split(tiny["unet"], no_mm, ipplus)
    T.write_ipplus_split(tiny["unet"], no_mm_ip, ipplus, drop=("motion_module", "ip_adapter"))
    saved = torch.load(ipplus, weights_only=True)
    assert kinds.identify(saved) == "animatediff_ipplus" and R.file_role(ipplus) == R.IPPLUS
    n_mm = sum(unet_keys.unet_key_group(k) == "motion_module" for k in saved)
    for unet_file, filled in ((no_mm, n_mm), (no_mm_ip, len(saved))):
        model, rep = C.load_xdyna_unet(unet_file, ipplus=ipplus)
        assert rep.ok and rep.filled == {str(ipplus): filled}
        _assert_same_state(model, full_unet)
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cfg = full_unet.config
    ctx = torch.randn(1, cfg.num_text_tokens + cfg.num_image_tokens, cfg.cross_attention_dim,
                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([10]), ctx), full_unet(x, torch.tensor([10]), ctx))
    # the file needed and not given: named, with where it goes
    with pytest.raises(C.CheckpointError, match=f"motion-module weights are missing.*{R.IPPLUS_FILE}.*models/xdyna"):
        C.load_xdyna_unet(no_mm)
    # order: the X-Dyna file's own keys win over ipplus, ipplus over the SD1.5 base and the IP-Adapter file
    shifted = {k: v + 1 for k, v in load_file(str(tiny["unet"])).items() if unet_keys.unet_key_group(k) != "dynamics_adapter"}
    torch.save(shifted, ipplus)
    model, rep = C.load_xdyna_unet(no_mm_ip, ipplus=ipplus, ip_adapter=tiny["ip_adapter"], sd15_unet=tiny["sd15"])
    own = load_file(str(no_mm_ip))
    for k, v in model.state_dict().items():
        want = own[k] if k in own else shifted[k]
        assert torch.equal(v, want.to(v.dtype)), k
    model, rep = C.load_xdyna_unet(tiny["unet_adapters"], ipplus=ipplus, sd15_unet=tiny["sd15"])
    base = [k for k in model.state_dict() if unet_keys.unet_key_group(k) == "sd15_unet"]
    assert all(torch.equal(model.state_dict()[k], shifted[k].to(torch.float32)) for k in base)
    # a file that is not the ipplus UNet is named
    with pytest.raises(C.CheckpointError, match="AnimateDiff \\+ IP-plus"):
        C.load_xdyna_unet(no_mm, ipplus=tiny["ip_adapter"])


def test_ip_adapter_bin_and_safetensors_agree(tiny, tmp_path):
    raw = load_file(str(tiny["ip_adapter"]))
    nested = {"image_proj": {}, "ip_adapter": {}}
    for k, v in raw.items():
        section, _, rest = k.partition(".")
        nested[section][rest] = v
    bin_path = tmp_path / "ip-adapter-plus_sd15.bin"
    torch.save(nested, bin_path)
    a_proj, a_ip = C.load_ip_adapter(bin_path)
    b_proj, b_ip = C.load_ip_adapter(tiny["ip_adapter"])
    assert a_proj.keys() == b_proj.keys() and a_ip.keys() == b_ip.keys()
    assert all(torch.equal(a_ip[k], b_ip[k]) for k in a_ip)
    cfg = C.read_config_metadata(tiny["ip_adapter"])
    r1, _ = C.load_resampler(bin_path, config=cfg)
    r2, _ = C.load_resampler(tiny["ip_adapter"])  # config from the metadata
    _assert_same_state(r1, r2)
    with pytest.raises(C.CheckpointError, match="heads") as e:
        C.load_resampler(bin_path)  # tiny widths (48 = 4 x 12) are not IP-Adapter's heads x 64
    assert str(bin_path) in str(e.value)


def test_controlnet_diffusers_folder(tiny, tmp_path):
    folder = tmp_path / "xdyna_face_controlnet"
    folder.mkdir()
    sd = load_file(str(tiny["face_controlnet"]))
    torch.save(sd, folder / "diffusion_pytorch_model.bin")
    cfg = C.read_config_metadata(tiny["face_controlnet"])
    diffusers_cfg = {"_class_name": "ControlNetModel", "attention_head_dim": cfg["num_attention_heads"],
                     "block_out_channels": cfg["block_out_channels"], "conditioning_channels": 6,
                     "cross_attention_dim": cfg["cross_attention_dim"],
                     "conditioning_embedding_out_channels": cfg["conditioning_embedding_out_channels"]}
    (folder / "config.json").write_text(json.dumps(diffusers_cfg))
    a, rep = C.load_controlnet(folder, kind="face")
    assert rep.ok and rep.config["num_attention_heads"] == 2  # heads come from config.json
    b, _ = C.load_controlnet(tiny["face_controlnet"], kind="face")
    _assert_same_state(a, b)
    os.remove(folder / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        C.load_controlnet(folder)


# ---------------------------------------------------------------------------------------------
# Layers that hold no tensors until loaded (comfy.ops Linear under ComfyUI's DynamicVRAM)
# ---------------------------------------------------------------------------------------------
class _LazyLinear(torch.nn.Linear):
    """Like comfy.ops' Linear with DynamicVRAM on: built without tensors (weight and bias None, so
    the built model's state_dict() lacks them); its _load_from_state_dict takes the file's tensors
    as they come (no shape check) and reports what it lacks or does not know."""

    keep_bias = True

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = self.bias = None
        self.wants_bias = bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        assign = local_metadata.get("assign_to_params_buffers", False)
        for k, v in state_dict.items():
            name = k[len(prefix):] if k.startswith(prefix) else None
            if name == "weight" or (name == "bias" and self.wants_bias and self.keep_bias):
                setattr(self, name, torch.nn.Parameter(v if assign else v.clone(), requires_grad=False))
            elif name == "bias" and self.wants_bias:
                pass  # _BiaslessLazyLinear: a broken layer that drops its bias silently
            elif name is not None:
                unexpected_keys.append(k)
        if self.weight is None:
            missing_keys.append(prefix + "weight")
        if self.wants_bias and self.keep_bias and self.bias is None:
            missing_keys.append(prefix + "bias")


class _BiaslessLazyLinear(_LazyLinear):
    keep_bias = False


def _ops_with(linear):
    import types

    ops = types.SimpleNamespace(**{n: getattr(torch.nn, n) for n in dir(torch.nn) if not n.startswith("_")})
    ops.Linear = linear
    ops.__name__ = linear.__name__ + " ops"
    return ops


def test_lazy_layers_load_through_their_own_loader(tiny, full_unet):
    """Layers that are empty until loaded (as comfy.ops builds them under DynamicVRAM) load every
    model: expected keys come from a torch.nn twin, the tensors go in through the layers' own
    _load_from_state_dict, in the requested dtype."""
    from xdyna_core.models.unet3d import UNet3DConditionModel

    ops = _ops_with(_LazyLinear)
    built = UNet3DConditionModel(full_unet.config, operations=ops, device="meta").state_dict()
    assert len(built) < len(full_unet.state_dict())  # its own state_dict cannot say what a file holds
    model, rep = C.load_xdyna_unet(tiny["unet"], operations=ops)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert rep.ok and rep.num_loaded == len(full_unet.state_dict())
    assert linears and all(type(m) is _LazyLinear and m.weight is not None for m in linears)
    _assert_same_state(model, full_unet)
    half, _ = C.load_xdyna_unet(tiny["unet"], operations=ops, dtype=torch.float16)
    assert all(m.weight.dtype == torch.float16 for m in half.modules() if isinstance(m, _LazyLinear))
    for kind in ("pose", "face"):
        lazy, rep = C.load_controlnet(tiny[f"{kind}_controlnet"], kind=kind, operations=ops)
        _assert_same_state(lazy, C.load_controlnet(tiny[f"{kind}_controlnet"], kind=kind)[0])
        assert rep.ok and any(isinstance(m, _LazyLinear) for m in lazy.modules())
    lazy, rep = C.load_resampler(tiny["ip_adapter"], operations=ops)
    _assert_same_state(lazy, C.load_resampler(tiny["ip_adapter"])[0])
    assert rep.ok and isinstance(lazy.proj_in, _LazyLinear)


def test_lazy_layers_still_get_every_key_check(tiny, tmp_path):
    """With lazy layers a missing, unexpected or wrongly shaped Linear tensor is still named (the
    lazy loader itself would take any shape), and an op set whose layers do not load like torch.nn
    is an error, not a half-loaded model."""
    ops = _ops_with(_LazyLinear)
    full = load_file(str(tiny["pose_controlnet"]))
    meta = {K.CONFIG_METADATA_KEY: json.dumps(C.read_config_metadata(tiny["pose_controlnet"]))}
    linear_w = next(k for k in full if k.endswith("attn1.to_q.weight"))

    def variant(name, sd):
        p = tmp_path / name
        save_file(sd, str(p), metadata=meta)
        return p

    cases = {
        "missing": ({k: v for k, v in full.items() if k != linear_w}, f"1 missing \\(e.g. {linear_w}\\)"),
        "unexpected": ({**full, "mid_block.attentions.0.lora.weight": torch.zeros(2)},
                       "1 unexpected \\(e.g. mid_block.attentions.0.lora.weight\\)"),
        "shape": ({**full, linear_w: full[linear_w][:, :-1].contiguous()}, f"1 with the wrong shape \\(e.g. {linear_w}"),
    }
    for name, (sd, message) in cases.items():
        with pytest.raises(C.CheckpointError, match=message):
            C.load_controlnet(variant(name + ".safetensors", sd), kind="pose", operations=ops)
    with pytest.raises(RuntimeError, match="_BiaslessLazyLinear ops does not load like its torch.nn twin"):
        C.load_controlnet(tiny["pose_controlnet"], kind="pose", operations=_ops_with(_BiaslessLazyLinear))
