"""A random model set that real ComfyUI's *native* loaders accept (the real-ComfyUI test tier).

The tiny set (``tiny.py``) is too small for ComfyUI's own loaders, which build fixed-size networks:

* ``CLIPVisionLoader`` picks its config by counting encoder layers (``layers.22`` present and
  ``layers.30`` absent means ViT-L/14), so the CLIP vision file is a real-size ViT-L/14
  (24 layers, width 1024, HF ``vision_model.*`` keys, ~600 MB in fp16);
* ``CheckpointLoaderSimple`` builds the SD1.5 text encoder (CLIP-L, 12 x 768) and the SD VAE
  (ch 128, ch_mult 1-2-4-4, 2 res blocks) from fixed configs, so those parts are full size. Only the
  UNet config is read from the weights (``comfy/model_detection.py``); SD15 is matched on
  ``model_channels`` 320, ``context_dim`` 768, conv ``proj_in`` and no ADM input, and
  ``channel_mult`` is each level's width // 320. Our UNet3D always has four levels, so the smallest
  UNet classified as SD15 has four levels of 320 channels and one res block each (74 M parameters).

The X-Dyna networks keep tiny widths; only the widths they share with native objects follow the
native models: cross-attention 768 (CLIP-L text), Resampler input 1024 (ViT-L) and output 768.
The MODEL output of the checkpoint is not used by X-Dyna graphs, so its UNet is unrelated to the
X-Dyna UNet (whose file carries all keys).

Weights are random and seeded (``tiny.random_state_dict``); ``ensure_comfy_test_set`` writes the set
once and reuses it while the manifest matches (seed, version and configs), so repeated test runs
cost nothing. ``python -m tests.real_comfyui.tiny_comfy --out DIR`` writes it from the shell.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from xdyna_core.loading import clip_keys, ip_adapter_keys, sd_checkpoint_keys, unet_keys
from xdyna_core.loading.tiny import TinyFile, _random_model_sd, _save

#: Bump when the writer changes in a way the configs do not show.
COMFY_SET_VERSION = 1
MANIFEST_NAME = "xdyna/COMFY_TEST_SET.json"

COMFY_LAYOUT: dict[str, TinyFile] = {
    "unet": TinyFile("xdyna/xdyna_unet.safetensors", "xdyna",
                     "X-Dyna UNet, all keys, tiny widths, cross-attention 768"),
    "pose_controlnet": TinyFile("xdyna/xdyna_pose_controlnet.safetensors", "xdyna", "pose ControlNet (3-channel)"),
    "face_controlnet": TinyFile("xdyna/xdyna_face_controlnet.safetensors", "xdyna", "S-Face ControlNet (6-channel)"),
    "ip_adapter": TinyFile("ipadapter/ip-adapter-plus_sd15.safetensors", "ipadapter",
                           "IP-Adapter-plus: Resampler 1024 -> 768 + to_k_ip/to_v_ip of the X-Dyna UNet"),
    "clip_vision": TinyFile("clip_vision/xdyna_test_clip_vit_l14.safetensors", "clip_vision",
                            "CLIP ViT-L/14 vision encoder, real size, HF keys (random weights)"),
    "sd15": TinyFile("checkpoints/xdyna_test_sd15.safetensors", "checkpoints",
                     "SD1.5 single file: full CLIP-L text encoder and VAE, small UNet ComfyUI classifies as SD15"),
}

#: Widget values the native loaders need to pick these files (the X-Dyna loaders' files carry the
#: names the shipped workflows use).
NATIVE_WIDGETS = {
    "CheckpointLoaderSimple": {"ckpt_name": Path(COMFY_LAYOUT["sd15"].relpath).name},
    "CLIPVisionLoader": {"clip_name": Path(COMFY_LAYOUT["clip_vision"].relpath).name},
}


def comfy_test_configs() -> dict:
    from xdyna_core.models.clip import text_config, vision_config
    from xdyna_core.models.controlnet import ControlNetConfig
    from xdyna_core.models.resampler import ResamplerConfig
    from xdyna_core.models.unet3d import UNet3DConfig
    from xdyna_core.models.vae import AutoencoderKLConfig

    text_dim, image_dim, width = 768, 1024, (32, 32, 64, 64)
    cn = {"block_out_channels": width, "layers_per_block": 2, "num_attention_heads": 2,
          "cross_attention_dim": text_dim, "conditioning_embedding_out_channels": (8, 16, 16, 32)}
    return {
        "unet": UNet3DConfig(block_out_channels=width, layers_per_block=2, num_attention_heads=2,
                             cross_attention_dim=text_dim, motion_num_heads=8, motion_max_len=24),
        "pose_controlnet": ControlNetConfig(conditioning_channels=3, **cn),
        "face_controlnet": ControlNetConfig(conditioning_channels=6, **cn),
        "resampler": ResamplerConfig(dim=32, depth=2, dim_head=12, heads=4, num_queries=16,
                                     embedding_dim=image_dim, output_dim=text_dim, ff_mult=4),
        # ComfyUI's clip_vision_config_vitl.json
        "clip_vision": vision_config(hidden_size=image_dim, intermediate_size=4096, num_hidden_layers=24,
                                     num_attention_heads=16, image_size=224, patch_size=14,
                                     hidden_act="quick_gelu", projection_dim=768),
        "clip_text": text_config(),  # SD1.5's CLIP-L (ComfyUI's sd1_clip_config.json)
        "vae": AutoencoderKLConfig(),  # SD VAE: ch 128, ch_mult 1-2-4-4, 2 res blocks
        "sd15_unet": UNet3DConfig(block_out_channels=(320, 320, 320, 320), layers_per_block=1,
                                  num_attention_heads=8, cross_attention_dim=text_dim),
    }


def _configs_digest(cfgs: dict) -> str:
    from xdyna_core.models.clip import config_dict

    blob = json.dumps({k: config_dict(v) if k.startswith("clip_") else v.to_dict() for k, v in cfgs.items()},
                      sort_keys=True)
    return hashlib.sha256(f"{COMFY_SET_VERSION}:{blob}".encode()).hexdigest()[:16]


def _model_sd(cls, cfg, role: str, seed: int, meta: bool) -> dict:
    if meta:  # shapes and key names only, nothing allocated
        with torch.device("meta"):
            return dict(cls(cfg).state_dict())
    return _random_model_sd(cls, cfg, role, seed)


def build_comfy_state_dicts(seed: int = 0, roles=None, meta: bool = False) -> dict:
    """{role: (state_dict, config dict)} for the requested roles (default: all of COMFY_LAYOUT).
    ``meta=True`` gives the same keys and shapes as meta tensors (for fast layout checks)."""
    from xdyna_core.models.clip import config_dict, new_text_encoder, new_vision_encoder, text_tower
    from xdyna_core.models.controlnet import ControlNetModel
    from xdyna_core.models.resampler import Resampler
    from xdyna_core.models.unet3d import UNet3DConditionModel
    from xdyna_core.models.vae import AutoencoderKL

    roles = set(COMFY_LAYOUT if roles is None else roles)
    unknown = roles - set(COMFY_LAYOUT)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; expected some of {sorted(COMFY_LAYOUT)}")
    cfgs = comfy_test_configs()
    out = {}
    unet = None
    if roles & {"unet", "ip_adapter"}:
        unet = _model_sd(UNet3DConditionModel, cfgs["unet"], "comfy_unet", seed, meta)
    if "unet" in roles:
        out["unet"] = (unet, cfgs["unet"].to_dict())
    for role in ("pose_controlnet", "face_controlnet"):
        if role in roles:
            out[role] = (_model_sd(ControlNetModel, cfgs[role], "comfy_" + role, seed, meta), cfgs[role].to_dict())
    if "ip_adapter" in roles:
        resampler = _model_sd(Resampler, cfgs["resampler"], "comfy_resampler", seed, meta)
        ip_unet = {k: unet[k] for k in unet_keys.split_unet_groups(unet)["ip_adapter"]}
        ip_file = {f"{ip_adapter_keys.IP_IMAGE_PROJ}.{k}": v for k, v in resampler.items()}
        ip_file.update({f"{ip_adapter_keys.IP_ADAPTER}.{k}": v for k, v in ip_adapter_keys.unet_to_ip_adapter_keys(ip_unet).items()})
        out["ip_adapter"] = (ip_file, cfgs["resampler"].to_dict())
    if "clip_vision" in roles:
        out["clip_vision"] = (_model_sd(lambda c: new_vision_encoder(c, projection=True), cfgs["clip_vision"],
                                        "comfy_clip_vision", seed, meta), config_dict(cfgs["clip_vision"]))
    if "sd15" in roles:
        base = _model_sd(UNet3DConditionModel, cfgs["sd15_unet"], "comfy_sd15_unet", seed, meta)
        base = {k: base[k] for k in unet_keys.split_unet_groups(base)["sd15_unet"]}  # no motion modules / adapters
        text = _model_sd(lambda c: text_tower(new_text_encoder(c)), cfgs["clip_text"], "comfy_clip_text", seed, meta)
        text = {clip_keys.CLIP_TEXT_TOWER + k: v for k, v in text.items()}  # the file layout
        text["text_model.embeddings.position_ids"] = torch.arange(cfgs["clip_text"].max_position_embeddings)[None]
        vae = _model_sd(AutoencoderKL, cfgs["vae"], "comfy_vae", seed, meta)
        sd = sd_checkpoint_keys.join_ldm_checkpoint(unet=base, vae=vae, clip_text=text)
        out["sd15"] = (sd, {"unet": cfgs["sd15_unet"].to_dict(), "vae": cfgs["vae"].to_dict(),
                            "clip_text": config_dict(cfgs["clip_text"])})
    return out


_KINDS = {"unet": "xdyna_unet", "pose_controlnet": "controlnet", "face_controlnet": "controlnet",
          "ip_adapter": "ip_adapter", "clip_vision": "clip_vision", "sd15": "sd_checkpoint"}


def comfy_test_paths(models_dir) -> dict[str, Path]:
    root = Path(models_dir)
    return {role: root / f.relpath for role, f in COMFY_LAYOUT.items()}


def write_comfy_test_set(models_dir, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, Path]:
    """Write every file of the set under ``models_dir`` (a ComfyUI models/ folder); {role: path}.
    The manifest is written last, so an interrupted write is never mistaken for a complete set."""
    root = Path(models_dir)
    paths = comfy_test_paths(root)
    manifest_path = root / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)
    cfgs = comfy_test_configs()
    manifest = {"seed": seed, "version": COMFY_SET_VERSION, "digest": _configs_digest(cfgs),
                "dtype": str(dtype).replace("torch.", ""), "files": {}}
    for role, layout in COMFY_LAYOUT.items():  # one role at a time keeps peak memory at one model
        sd, cfg = build_comfy_state_dicts(seed, roles=[role])[role]
        _save(paths[role], sd, dtype, _KINDS[role], cfg)
        manifest["files"][role] = {"path": layout.relpath, "bytes": paths[role].stat().st_size,
                                   "num_tensors": len(sd), "description": layout.description}
        del sd
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return paths


def comfy_test_set_ready(models_dir, seed: int = 0) -> bool:
    """True when ``models_dir`` holds a complete set written with this seed, version and configs."""
    root = Path(models_dir)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("seed") != seed or manifest.get("digest") != _configs_digest(comfy_test_configs()):
        return False
    files = manifest.get("files", {})
    return set(files) == set(COMFY_LAYOUT) and all(
        (root / rec["path"]).is_file() and (root / rec["path"]).stat().st_size == rec["bytes"] for rec in files.values())


def ensure_comfy_test_set(models_dir, seed: int = 0) -> dict[str, Path]:
    """The cached set under ``models_dir``, written first if missing or stale."""
    if not comfy_test_set_ready(models_dir, seed):
        write_comfy_test_set(models_dir, seed)
    return comfy_test_paths(models_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.real_comfyui.tiny_comfy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the models/ folder to write into (created if needed)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    reused = comfy_test_set_ready(args.out, args.seed)
    paths = ensure_comfy_test_set(args.out, args.seed)
    total = sum(p.stat().st_size for p in paths.values())
    for role, p in paths.items():
        print(f"{role:16s} {p.stat().st_size / 1e6:8.1f} MB  {p}")
    print(f"ComfyUI test set: {len(paths)} files, {total / 1e6:.0f} MB, seed {args.seed}, "
          f"{'reused' if reused else 'written'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
