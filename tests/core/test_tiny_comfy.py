"""The model set for real ComfyUI's native loaders (tests/real_comfyui/tiny_comfy.py), checked without ComfyUI.

The real proof is tests/real_comfyui/ (CheckpointLoaderSimple and CLIPVisionLoader load these files in
ComfyUI 0.8.0 and 0.3.64). Here: the keys and shapes ComfyUI's config detection reads (on meta
tensors, nothing allocated), the X-Dyna parts through our own loaders, and the write-once cache.
"""
import json
import re

import pytest
import torch

from xdyna_core.loading import checkpoints as C
from tests.real_comfyui import tiny_comfy as TC


@pytest.fixture(scope="module")
def shapes():
    """{role: {key: shape}} of the two files ComfyUI builds native models from."""
    sds = TC.build_comfy_state_dicts(0, roles=["sd15", "clip_vision"], meta=True)
    return {role: {k: tuple(v.shape) for k, v in sd.items()} for role, (sd, _) in sds.items()}


def test_configs_share_the_native_widths():
    cfg = TC.comfy_test_configs()
    text = cfg["clip_text"].hidden_size
    assert cfg["unet"].cross_attention_dim == cfg["pose_controlnet"].cross_attention_dim == text
    assert cfg["face_controlnet"].cross_attention_dim == cfg["resampler"].output_dim == text
    assert cfg["resampler"].embedding_dim == cfg["clip_vision"].hidden_size
    assert max(cfg["unet"].block_out_channels) <= 64  # the X-Dyna networks stay tiny


def test_clip_vision_is_what_comfy_detects_as_vit_l(shapes):
    sd = shapes["clip_vision"]
    # comfy.clip_vision.load_clipvision_from_sd: layers.22 present, layers.30 absent, width != 1152,
    # 257 positions (224 / 14 = 16, plus the class token) -> clip_vision_config_vitl.json
    assert "vision_model.encoder.layers.22.layer_norm1.weight" in sd
    assert "vision_model.encoder.layers.30.layer_norm1.weight" not in sd
    assert sd["vision_model.encoder.layers.0.layer_norm1.weight"] == (1024,)
    assert sd["vision_model.embeddings.position_embedding.weight"] == (257, 1024)
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))}
    assert layers == set(range(24))
    assert sd["visual_projection.weight"] == (768, 1024)
    assert "vision_model.pre_layrnorm.weight" in sd  # HF's spelling, which ComfyUI's model uses too


def test_checkpoint_unet_is_classified_as_sd15(shapes):
    sd = shapes["sd15"]
    u = "model.diffusion_model."
    # comfy/model_detection.py reads: model_channels from input_blocks.0.0, channel_mult from each
    # res block's out width // model_channels, context_dim from attn2.to_k, linear vs conv proj_in
    assert sd[u + "input_blocks.0.0.weight"] == (320, 4, 3, 3)
    outs = [s[0] for k, s in sd.items() if k.startswith(u) and k.endswith("0.out_layers.3.weight")]
    assert outs and all(c % 320 == 0 and c >= 320 for c in outs)
    to_k = [s for k, s in sd.items() if k.startswith(u) and k.endswith("attn2.to_k.weight")]
    assert to_k and all(s[1] == 768 for s in to_k)
    proj_in = [s for k, s in sd.items() if k.startswith(u) and k.endswith(".proj_in.weight")]
    assert proj_in and all(len(s) == 4 for s in proj_in)  # conv proj_in: use_linear_in_transformer False
    assert not any(k.startswith(u + "label_emb") for k in sd)  # no ADM input
    assert not any("motion_modules" in k or "temporal" in k for k in sd)


def test_checkpoint_text_encoder_and_vae_are_full_size(shapes):
    sd = shapes["sd15"]
    t = "cond_stage_model.transformer.text_model."
    assert sd[t + "embeddings.token_embedding.weight"] == (49408, 768)
    assert {int(m.group(1)) for k in sd if (m := re.match(re.escape(t) + r"encoder\.layers\.(\d+)\.", k))} == set(range(12))
    v = "first_stage_model."
    assert sd[v + "encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert sd[v + "decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert sd[v + "encoder.down.3.block.1.conv2.weight"] == (512, 512, 3, 3)  # ch_mult 1-2-4-4, 2 blocks
    assert sd[v + "decoder.up.0.block.2.conv2.weight"] == (128, 128, 3, 3)
    assert sd[v + "encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)  # LDM conv attention layout
    assert sd[v + "quant_conv.weight"] == (8, 8, 1, 1)


@torch.no_grad()
def test_xdyna_parts_load_through_our_loaders(tmp_path):
    sds = TC.build_comfy_state_dicts(3, roles=["unet", "pose_controlnet", "face_controlnet", "ip_adapter"])
    paths = TC.comfy_test_paths(tmp_path)
    for role, (sd, cfg) in sds.items():
        TC._save(paths[role], sd, torch.float16, TC._KINDS[role], cfg)
    unet, _ = C.load_xdyna_unet(paths["unet"])
    assert unet.config.cross_attention_dim == 768
    pose, _ = C.load_controlnet(paths["pose_controlnet"], kind="pose")
    face, _ = C.load_controlnet(paths["face_controlnet"], kind="face")
    assert pose.config.conditioning_channels == 3 and face.config.conditioning_channels == 6
    resampler, _ = C.load_resampler(paths["ip_adapter"])
    tokens = resampler(torch.randn(1, 257, 1024, generator=torch.Generator().manual_seed(0)))
    assert tokens.shape == (1, 16, 768) and torch.isfinite(tokens).all()
    # the IP-Adapter file's to_k_ip/to_v_ip are the UNet's own, so the two files agree
    unet2, _ = C.load_xdyna_unet(paths["unet"], ip_adapter=paths["ip_adapter"])
    for (k, a), (_, b) in zip(unet.state_dict().items(), unet2.state_dict().items()):
        if "_ip" in k:
            assert torch.equal(a, b), k


def test_cache_is_reused_only_when_complete_and_current(tmp_path):
    assert not TC.comfy_test_set_ready(tmp_path, seed=0)
    files = {}
    for role, path in TC.comfy_test_paths(tmp_path).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
        files[role] = {"path": TC.COMFY_LAYOUT[role].relpath, "bytes": 10}
    manifest = {"seed": 0, "version": TC.COMFY_SET_VERSION, "files": files,
                "digest": TC._configs_digest(TC.comfy_test_configs())}
    (tmp_path / TC.MANIFEST_NAME).write_text(json.dumps(manifest))
    assert TC.comfy_test_set_ready(tmp_path, seed=0)
    assert not TC.comfy_test_set_ready(tmp_path, seed=1)  # another seed
    TC.comfy_test_paths(tmp_path)["clip_vision"].write_bytes(b"x" * 5)  # truncated file
    assert not TC.comfy_test_set_ready(tmp_path, seed=0)
    TC.comfy_test_paths(tmp_path)["clip_vision"].write_bytes(b"x" * 10)
    (tmp_path / TC.MANIFEST_NAME).write_text(json.dumps({**manifest, "digest": "stale"}))  # configs changed
    assert not TC.comfy_test_set_ready(tmp_path, seed=0)
