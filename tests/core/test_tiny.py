"""The tiny model set: layout, formats, loading through the real loaders, sane outputs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from xdyna_core.loading import checkpoints as C
from xdyna_core.loading import clip_keys, kinds, unet_keys, vae_keys
from xdyna_core.loading import keys as K
from xdyna_core.loading import tiny as T

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return T.write_tiny_set(root, seed=0, with_variants=True)


def _sane(t: torch.Tensor, what: str):
    assert torch.isfinite(t).all(), what
    s = t.float().std().item()
    assert 1e-3 < s < 1e3, f"{what}: std {s}"


def test_layout_formats_and_metadata(tiny):
    root = tiny["unet"].parents[1]
    assert set(tiny) == set(T.TINY_LAYOUT)
    for role, f in T.TINY_LAYOUT.items():
        p = root / f.relpath
        assert p == tiny[role] and p.is_file() and p.parent.name == f.folder
        assert C.detect_format(p) == "safetensors"
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata()
        assert json.loads(meta[K.CONFIG_METADATA_KEY])
        assert kinds.identify(C.load_state_dict(p)) == meta[K.KIND_METADATA_KEY]
    manifest = json.loads((root / T.MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == set(T.TINY_LAYOUT)
    default = sum(p.stat().st_size for r, p in tiny.items() if not T.TINY_LAYOUT[r].optional)
    assert default < 22e6, default
    # the real key layouts: LDM single file, HF CLIP vision, flat IP-Adapter
    sd15 = load_file(str(tiny["sd15"]))
    for prefix in (unet_keys.LDM_UNET_PREFIX, vae_keys.LDM_VAE_PREFIX, clip_keys.LDM_CLIP_PREFIX + "text_model."):
        assert any(k.startswith(prefix) for k in sd15), prefix
    assert "model.diffusion_model.input_blocks.4.0.skip_connection.weight" not in sd15  # 32 -> 32 at level 1
    assert "model.diffusion_model.input_blocks.7.0.skip_connection.weight" in sd15  # 32 -> 64 at level 2
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in sd15
    vision = load_file(str(tiny["clip_vision"]))
    assert "vision_model.embeddings.class_embedding" in vision and "visual_projection.weight" in vision
    ip = load_file(str(tiny["ip_adapter"]))
    assert "image_proj.latents" in ip and "ip_adapter.1.to_k_ip.weight" in ip and "ip_adapter.31.to_v_ip.weight" in ip


def test_dimensions_are_consistent(tiny):
    cfg = {r: C.read_config_metadata(p) for r, p in tiny.items()}
    text_dim = cfg["sd15"]["clip_text"]["hidden_size"]
    assert cfg["unet"]["cross_attention_dim"] == text_dim == cfg["ip_adapter"]["output_dim"]
    assert cfg["pose_controlnet"]["cross_attention_dim"] == text_dim
    assert cfg["ip_adapter"]["embedding_dim"] == cfg["clip_vision"]["hidden_size"]
    assert cfg["pose_controlnet"]["conditioning_channels"] == 3 and cfg["face_controlnet"]["conditioning_channels"] == 6
    assert cfg["sd15"]["unet"] == cfg["unet"]


@torch.no_grad()
def test_everything_loads_and_runs(tiny):
    from xdyna_core.loading.bundle import load_clip_vision, load_sd15_parts
    from xdyna_core.loading.vae_keys import convert_ldm_vae_keys
    from xdyna_core.models.vae import AutoencoderKL, AutoencoderKLConfig

    g = torch.Generator().manual_seed(0)
    # CLIP vision (transformers' model, loaded by the standalone loader) -> Resampler -> image tokens
    vision = load_clip_vision(tiny["clip_vision"])
    pixels = torch.randn(1, 3, vision.config.image_size, vision.config.image_size, generator=g)
    feats = vision(pixels)
    _sane(feats, "clip vision")
    resampler, rep = C.load_resampler(tiny["ip_adapter"])
    assert rep.ok
    img_tokens = resampler(feats)
    _sane(img_tokens, "resampler")

    # text encoder from the LDM single file; the VAE through the model module's converter
    raw = load_file(str(tiny["sd15"]))
    meta = C.read_config_metadata(tiny["sd15"])
    _, text = load_sd15_parts(tiny["sd15"])
    ids = torch.full((1, 77), 49407)
    ids[0, 0] = 49406
    txt = text(input_ids=ids).last_hidden_state
    _sane(txt, "clip text")
    vae = AutoencoderKL(AutoencoderKLConfig.from_dict(meta["vae"]))
    vae.load_state_dict(convert_ldm_vae_keys(raw), strict=True)

    # UNet + ControlNets
    unet, rep = C.load_xdyna_unet(tiny["unet"])
    assert rep.ok and rep.num_loaded == len(unet.state_dict())
    pose, _ = C.load_controlnet(tiny["pose_controlnet"], kind="pose")
    face, _ = C.load_controlnet(tiny["face_controlnet"], kind="face")
    ctx = torch.cat([txt, img_tokens], dim=1).expand(2, -1, -1)
    frames, h, w = 3, 8, 8
    latents = torch.randn(2, 4, frames, h, w, generator=g)
    flat = latents[:, :, 1:].permute(0, 2, 1, 3, 4).reshape(-1, 4, h, w)
    cond_p = torch.rand(flat.shape[0], 3, 8 * h, 8 * w, generator=g)
    cond_f = torch.rand(flat.shape[0], 6, 8 * h, 8 * w, generator=g)
    dp, mp = pose(flat, 500, txt.expand(flat.shape[0], -1, -1), cond_p)
    df, mf = face(flat, 500, txt.expand(flat.shape[0], -1, -1), cond_f)
    assert len(dp) == len(df) == 12
    for i, (a, b) in enumerate(zip(dp + [mp], df + [mf])):
        _sane(a, f"pose residual {i}")
        _sane(b, f"face residual {i}")

    def to_video(r):  # ((b f), C, h, w) -> (b, C, f, h, w) with a zero residual at the reference frame
        r = r.reshape(2, frames - 1, *r.shape[1:]).permute(0, 2, 1, 3, 4)
        return torch.cat([torch.zeros_like(r[:, :, :1]), r], dim=2)

    down = [to_video(a + b) for a, b in zip(dp, df)]
    out = unet(latents, 500, ctx, down, to_video(mp + mf))
    _sane(out, "unet")
    assert out.shape == latents.shape
    out_plain = unet(latents, 500, ctx)
    assert (out - out_plain).abs().max() > 1e-4  # the ControlNets matter
    image = vae.decode(out[:, :, 1] / vae.scaling_factor)
    _sane(image, "vae decode")
    assert image.shape == (2, 3, 8 * h, 8 * w)


def test_variant_and_sd15_rebuild_the_full_unet(tiny):
    full, _ = C.load_xdyna_unet(tiny["unet"])
    filled, rep = C.load_xdyna_unet(tiny["unet_adapters"], sd15_unet=tiny["sd15"])
    assert rep.ok and len(rep.filled) == 1
    a, b = full.state_dict(), filled.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_are_scaled_and_seeded(tiny, tmp_path):
    sd = load_file(str(tiny["unet"]))
    w = sd["down_blocks.2.resnets.0.conv1.weight"].float()  # (64, 32, 3, 3): fan_in 288
    assert abs(w.std().item() * 288 ** 0.5 - 1) < 0.1
    gain = sd["down_blocks.2.resnets.0.norm1.weight"].float()
    assert abs(gain.mean().item() - 1) < 0.05 and 0.05 < gain.std().item() < 0.2
    assert sd["down_blocks.0.motion_modules.0.temporal_transformer.proj_out.weight"].abs().max() > 0  # not zero-init
    pe = sd["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"]
    assert pe.dtype == torch.float32 and pe[0, 0, 1] == 1.0  # cos(0)
    # same seed -> same tensors and metadata (via the CLI; safetensors' header order may vary),
    # other seed -> other weights
    proc = subprocess.run([sys.executable, "-m", "xdyna_core.tiny", "--out", str(tmp_path / "a"), "--seed", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "tiny model set: 6 files" in proc.stdout
    again = T.tiny_paths(tmp_path / "a", with_variants=False)
    for role, p in again.items():
        a, b = load_file(str(p)), load_file(str(tiny[role]))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), role
        assert C.read_metadata(p) == C.read_metadata(tiny[role])
    other = T.write_tiny_set(tmp_path / "b", seed=1)
    assert not torch.equal(load_file(str(other["unet"]))["conv_in.weight"], sd["conv_in.weight"])
