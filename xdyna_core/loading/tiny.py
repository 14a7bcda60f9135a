"""A complete, tiny, random X-Dyna model set in the real file formats and folder layout.

``xdyna tiny --out DIR`` writes, under DIR (a ComfyUI ``models/`` folder), every
file the extension consumes, with the same key names as the released files (X-Dyna UNet and
ControlNets, IP-Adapter-plus, CLIP vision in HF layout, an SD1.5 single-file checkpoint in LDM
layout) but widths of 32-64 channels, so tests, demos and CI run the real loading and sampling
code in seconds. Weights are random (seeded) and scaled to keep activations O(1):
N(0, 1/fan_in) for matrices and convs, 1 + 0.1·N for norm gains, 0.1·N for biases. Each file
carries its config as JSON in the safetensors metadata (``xdyna_config``).

Dimensions are consistent across files: UNet cross-attention width = CLIP text width = Resampler
output (32); Resampler input = CLIP vision width (48); the IP-Adapter's ``to_k_ip/to_v_ip`` and the
SD1.5 checkpoint's UNet equal the corresponding parts of the tiny X-Dyna UNet, so loading the
adapters-only UNet with the SD1.5 base (and/or the IP-Adapter) rebuilds exactly the full UNet.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..arg_types import DTYPE_NAMES
from . import clip_keys, ip_adapter_keys, sd_checkpoint_keys, unet_keys
from . import keys as K
from ..models.clip import config_dict, new_text_encoder, new_vision_encoder, text_config, text_tower, vision_config
from ..models.controlnet import ControlNetConfig, ControlNetModel
from ..models.resampler import Resampler, ResamplerConfig
from ..models.unet3d import UNet3DConditionModel, UNet3DConfig
from ..models.vae import AutoencoderKL, AutoencoderKLConfig

DTYPES = {name: getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class TinyFile:
    relpath: str  # relative to the models/ folder
    folder: str  # ComfyUI folder_paths name
    description: str
    optional: bool = False  # written only with --with-variants (keeps the default set < ~20 MB)


TINY_LAYOUT: dict[str, TinyFile] = {
    "unet": TinyFile("xdyna/xdyna_unet.safetensors", "xdyna",
                     "X-Dyna UNet, all keys (SD1.5 base + motion modules + Dynamics-Adapter + IP attention)"),
    "unet_adapters": TinyFile("xdyna/xdyna_unet_adapters.safetensors", "xdyna",
                              "X-Dyna UNet without the SD1.5 base keys (fill them from the SD1.5 checkpoint)",
                              optional=True),
    "pose_controlnet": TinyFile("xdyna/xdyna_pose_controlnet.safetensors", "xdyna", "pose ControlNet (3-channel)"),
    "face_controlnet": TinyFile("xdyna/xdyna_face_controlnet.safetensors", "xdyna", "S-Face ControlNet (6-channel)"),
    "ip_adapter": TinyFile("ipadapter/ip-adapter-plus_sd15.safetensors", "ipadapter",
                           "IP-Adapter-plus: image_proj (Resampler) + ip_adapter.<i>.to_k_ip/to_v_ip"),
    "clip_vision": TinyFile("clip_vision/xdyna_tiny_clip_vision.safetensors", "clip_vision",
                            "CLIP vision encoder with projection (HF key layout)"),
    "sd15": TinyFile("checkpoints/xdyna_tiny_sd15.safetensors", "checkpoints",
                     "SD1.5 single-file checkpoint (LDM layout: UNet, VAE, CLIP text)"),
}
MANIFEST_NAME = "xdyna/TINY_SET.json"


def tiny_paths(root, with_variants: bool = True) -> dict[str, Path]:
    """{role: path} under ``root``; ``with_variants=False`` leaves out the optional files."""
    root = Path(root)
    return {role: root / f.relpath for role, f in TINY_LAYOUT.items() if with_variants or not f.optional}


# ---------------------------------------------------------------------------------------------
# Configs (sizes as the golden tiny models)
# ---------------------------------------------------------------------------------------------
def tiny_configs() -> dict:
    width, text_dim, image_dim = (32, 32, 64, 64), 32, 48
    cn = dict(block_out_channels=width, layers_per_block=2, num_attention_heads=2, cross_attention_dim=text_dim,
              conditioning_embedding_out_channels=(8, 16, 16, 32))
    return {
        "unet": UNet3DConfig(block_out_channels=width, layers_per_block=2, num_attention_heads=2,
                             cross_attention_dim=text_dim, motion_num_heads=8, motion_max_len=24),
        "pose_controlnet": ControlNetConfig(conditioning_channels=3, **cn),
        "face_controlnet": ControlNetConfig(conditioning_channels=6, **cn),
        "resampler": ResamplerConfig(dim=32, depth=2, dim_head=12, heads=4, num_queries=16,
                                     embedding_dim=image_dim, output_dim=text_dim, ff_mult=4),
        "clip_vision": vision_config(hidden_size=image_dim, intermediate_size=4 * image_dim, num_hidden_layers=2,
                                     num_attention_heads=4, image_size=224, patch_size=14, projection_dim=32),
        # the real tokenizer emits ids up to 49407, so the vocabulary keeps its full size
        "clip_text": text_config(vocab_size=49408, hidden_size=text_dim, intermediate_size=4 * text_dim,
                                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77),
        "vae": AutoencoderKLConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4,
                                   norm_num_groups=4),
    }


# ---------------------------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------------------------
def random_state_dict(model: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every parameter random (fp32), buffers as the model computed them. Keys in sorted order so
    the values depend only on the seed and the key set."""
    params = dict(model.named_parameters())
    out = {}
    for name, t in sorted(model.state_dict().items()):
        if name not in params:
            out[name] = t.detach().clone()  # buffers (motion-module pe)
            continue
        shape = tuple(t.shape)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if name.endswith(".bias"):
            v = 0.1 * noise
        elif len(shape) == 1 and name.endswith(".weight"):
            v = 1.0 + 0.1 * noise  # GroupNorm / LayerNorm gains
        elif len(shape) >= 2 and name.endswith(".weight"):
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            v = noise / fan_in ** 0.5
        else:
            v = noise / shape[-1] ** 0.5  # latents, class_embedding
        out[name] = v
    return out


def _generator(seed: int, role: str) -> torch.Generator:
    # one stream per file, so adding a file never changes the others
    offset = int.from_bytes(hashlib.sha256(role.encode()).digest()[:4], "little")
    return torch.Generator().manual_seed((seed * 1_000_003 + offset) % (2 ** 63))


def _random_model_sd(cls, cfg, role: str, seed: int) -> dict:
    torch.manual_seed(0)  # default init of the throwaway model is irrelevant but keep it quiet
    return random_state_dict(cls(cfg), _generator(seed, role))


def _save(path: Path, sd: Mapping[str, torch.Tensor], dtype: torch.dtype, kind: str, config: dict | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in sd.items():
        # sinusoid tables stay fp32 like the golden files; they are not learned weights
        if v.is_floating_point() and not k.endswith(".pe"):
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    meta = {"format": "pt", K.KIND_METADATA_KEY: kind, "xdyna_tiny": "1"}
    if config is not None:
        meta[K.CONFIG_METADATA_KEY] = json.dumps(config, sort_keys=True)
    save_file(tensors, str(path), metadata=meta)


def build_tiny_state_dicts(seed: int = 0) -> dict:
    """All tiny weights in memory: {role: (state_dict, config dict)}."""
    cfgs = tiny_configs()
    unet = _random_model_sd(UNet3DConditionModel, cfgs["unet"], "unet", seed)
    groups = unet_keys.split_unet_groups(unet)
    out = {"unet": (unet, cfgs["unet"].to_dict())}
    out["unet_adapters"] = ({k: v for k, v in unet.items() if unet_keys.unet_key_group(k) != "sd15_unet"},
                            cfgs["unet"].to_dict())
    for role in ("pose_controlnet", "face_controlnet"):
        out[role] = (_random_model_sd(ControlNetModel, cfgs[role], role, seed), cfgs[role].to_dict())

    resampler = _random_model_sd(Resampler, cfgs["resampler"], "resampler", seed)
    ip = ip_adapter_keys.unet_to_ip_adapter_keys({k: unet[k] for k in groups["ip_adapter"]})
    ip_file = {f"{ip_adapter_keys.IP_IMAGE_PROJ}.{k}": v for k, v in resampler.items()}
    ip_file.update({f"{ip_adapter_keys.IP_ADAPTER}.{k}": v for k, v in ip.items()})
    out["ip_adapter"] = (ip_file, cfgs["resampler"].to_dict())

    # transformers' file layout (vision_model.*, visual_projection.weight; text_model.*)
    vision = _random_model_sd(lambda c: new_vision_encoder(c, projection=True), cfgs["clip_vision"], "clip_vision", seed)
    out["clip_vision"] = (vision, config_dict(cfgs["clip_vision"]))

    vae = _random_model_sd(AutoencoderKL, cfgs["vae"], "vae", seed)
    text = _random_model_sd(lambda c: text_tower(new_text_encoder(c)), cfgs["clip_text"], "clip_text", seed)
    text = {clip_keys.CLIP_TEXT_TOWER + k: v for k, v in text.items()}
    # real SD1.5 files (transformers < 4.31) carry the position_ids buffer; keep it for realism
    text["text_model.embeddings.position_ids"] = torch.arange(cfgs["clip_text"].max_position_embeddings)[None]
    sd15 = sd_checkpoint_keys.join_ldm_checkpoint(unet={k: unet[k] for k in groups["sd15_unet"]}, vae=vae, clip_text=text)
    sd15_cfg = {"unet": cfgs["unet"].to_dict(), "vae": cfgs["vae"].to_dict(), "clip_text": config_dict(cfgs["clip_text"])}
    out["sd15"] = (sd15, sd15_cfg)
    return out


def write_tiny_set(out_dir, seed: int = 0, dtype: str | torch.dtype = "fp16",
                   with_variants: bool = False) -> dict[str, Path]:
    """Write the tiny set under ``out_dir`` (a models/ folder); returns {role: path}."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    root = Path(out_dir)
    paths = tiny_paths(root, with_variants)
    kinds = {"unet": "xdyna_unet", "unet_adapters": "xdyna_unet_adapters", "pose_controlnet": "controlnet",
             "face_controlnet": "controlnet", "ip_adapter": "ip_adapter", "clip_vision": "clip_vision",
             "sd15": "sd_checkpoint"}
    manifest = {"seed": seed, "dtype": str(dt).replace("torch.", ""), "files": {}}
    for role, (sd, cfg) in build_tiny_state_dicts(seed).items():
        if role not in paths:
            continue
        _save(paths[role], sd, dt, kinds[role], cfg)
        manifest["files"][role] = {
            "path": TINY_LAYOUT[role].relpath,
            "folder": TINY_LAYOUT[role].folder,
            "description": TINY_LAYOUT[role].description,
            "num_tensors": len(sd),
            "bytes": paths[role].stat().st_size,
            "config": cfg,
        }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return paths



def write_ipplus_split(unet, unet_out, ipplus_out, drop=("motion_module",)) -> None:
    """From a complete UNet .safetensors: the same file without the key groups ``drop`` (its config
    metadata kept) and, as I2V-Adapter's animatediff_v15_v1_ipplus.pth is, a ``torch.save``'d state dict
    in diffusers names holding the motion-module and IP attention weights (the split the official
    loader's SD1.5 + ipplus + X-Dyna ``strict=False`` load puts back together)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    full = load_file(str(unet))
    with safe_open(str(unet), framework="pt") as f:
        meta = {K.CONFIG_METADATA_KEY: (f.metadata() or {})[K.CONFIG_METADATA_KEY]}
    group = unet_keys.unet_key_group
    save_file({k: v for k, v in full.items() if group(k) not in drop}, str(unet_out), metadata=meta)
    Path(ipplus_out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in full.items() if group(k) in ("motion_module", "ip_adapter")}, str(ipplus_out))
