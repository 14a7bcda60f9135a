"""Find and load every network of a standalone X-Dyna run from a ComfyUI-style `models/` folder.

    models/xdyna/        X-Dyna UNet (adapters [+ motion modules] [+ SD1.5 base]), pose and S-Face ControlNets
    models/xdyna/ or models/animatediff_models/
                         animatediff_v15_v1_ipplus.pth: the motion modules (and IP attention) of a UNet
                         file without them, as the official loader takes them
    models/ipadapter/    ip-adapter-plus_sd15.(safetensors|bin)
    models/clip_vision/  the IP-Adapter image encoder (CLIP ViT-H/14)
    models/checkpoints/  SD1.5: a single file (UNet base, VAE, text encoder) or a diffusers folder
    models/vae/          optional: a separate SD1.5 VAE

Everything is offline: configs come from the files' own metadata (tiny sets), from their shapes, or
from the released models' defaults; nothing is fetched from a hub.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

from . import clip_keys, kinds, sd_checkpoint_keys, vae_keys
from . import recognise as R
from .checkpoints import LoadReport, build_and_load, load_controlnet, load_resampler, load_xdyna_unet
from .configs import _count, infer_vae_config
from .files import (CheckpointError, load_state_dict, read_config_metadata, resolve_weights_file,
                    wrong_file_error)
from ..models.clip import (PenultimateCLIPVision, new_text_encoder, new_vision_encoder, text_config, text_tower,
                           vision_config, vision_tower)
from ..models.tokenizer import find_tokenizer_dir
from ..models.vae import AutoencoderKL

WEIGHT_EXTS = R.WEIGHT_EXTS


@dataclass
class ModelFiles:
    unet: Path
    pose_controlnet: Path
    face_controlnet: Optional[Path]
    ip_adapter: Path
    clip_vision: Path
    sd15: Path                      # single file or diffusers folder
    vae: Optional[Path] = None      # overrides the SD1.5 VAE when given
    tokenizer_dir: Optional[Path] = None
    ipplus: Optional[Path] = None   # AnimateDiff + IP-plus UNet (recognise.IPPLUS_FILE), when found


_weights_in = R.weights_in


def _pick(candidates: List[Path], role: str, prefer, what: str, searched: List[Path]) -> Path:
    """The file serving ``role`` by the one recognition rule (:func:`.recognise.pick`)."""
    found = R.pick(candidates, role, prefer)
    if found is None:
        seen = "; ".join(f"{p.name} is {R.describe_file(p)}" for p in candidates[:3])
        raise FileNotFoundError(f"no {what} found in {', '.join(str(s) for s in searched)} (recognised by "
                                f"content where it can be read, else by name)" + (f": {seen}" if seen else ""))
    return found


def _is_diffusers_sd(folder: Path) -> bool:
    return (folder / "model_index.json").exists() or (folder / "vae" / "config.json").exists()


def find_model_files(models_dir, face: bool = True) -> ModelFiles:
    """Locate the files of one run; a miss names the folders searched and the file expected."""
    root = Path(models_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"models folder not found: {root} (expected ComfyUI's models/ layout: "
                                f"xdyna/, ipadapter/, clip_vision/, checkpoints/)")
    xd = root / "xdyna"
    xfiles = [p for p in _weights_in(xd) if "detectors" not in p.parts]
    unet = _pick(xfiles, R.UNET, [r"xdyna_unet\.", r"unet-checkpoint", r"unet"],
                 "X-Dyna UNet (e.g. unet-checkpoint-epoch-5.ckpt)", [xd])
    others = [p for p in xfiles if p != unet]
    # the released ControlNets are controlnet-checkpoint-epoch-5.ckpt (pose, 3-channel condition) and
    # controlnet-face-checkpoint-epoch-2.ckpt (S-Face, 6-channel)
    pose = _pick(others, R.POSE_CONTROLNET, [r"pose"], "pose ControlNet (3-channel condition, e.g. "
                 "controlnet-checkpoint-epoch-5.ckpt)", [xd])
    face_cn = _pick([p for p in others if p != pose], R.FACE_CONTROLNET, [r"face"], "S-Face ControlNet "
                    "(6-channel condition, e.g. controlnet-face-checkpoint-epoch-2.ckpt)", [xd]) if face else None
    ipd = root / "ipadapter"
    ip = _pick(_weights_in(ipd), R.IP_ADAPTER, [r"ip-adapter-plus_sd15", r"plus.*sd15", r"ip.?adapter"],
               "IP-Adapter-plus file (ip-adapter-plus_sd15.safetensors or .bin)", [ipd])
    cvd = root / "clip_vision"
    cv = _pick(_weights_in(cvd), R.CLIP_VISION, [r"vit-h", r"clip"], "CLIP ViT-H/14 image encoder", [cvd])
    ckd = root / "checkpoints"
    sd_dirs = [d for d in sorted(ckd.iterdir()) if d.is_dir() and _is_diffusers_sd(d)] if ckd.is_dir() else []
    sd15 = sd_dirs[0] if sd_dirs else _pick(_weights_in(ckd), R.SD15, [r"v1-5|sd15|sd-v1|v1_5"],
                                            "SD1.5 checkpoint (VAE and text encoder)", [ckd])
    vae = R.pick(_weights_in(root / "vae"), R.VAE, [r"sd|ft-mse|vae"])
    tok = None  # SD1.5's vocab.json + merges.txt: only a non-empty prompt needs them
    for cand in ([sd15 / "tokenizer"] if sd15.is_dir() else []) + [root / "xdyna" / "tokenizer"]:
        tok = tok or find_tokenizer_dir(cand)
    ipplus_dirs = [root / f for f in R.IPPLUS_FOLDERS]
    ipplus = R.find_ipplus(ipplus_dirs)
    R.require_ipplus(unet, ipplus, ipplus_dirs)
    return ModelFiles(unet, pose, face_cn, ip, cv, sd15, vae, tok, ipplus)


def check_model_files(files: ModelFiles) -> None:
    """Read every file's header and check it is what its role needs, before any weights load:
    a wrong, swapped, truncated or unreadable file fails here in a second with a CheckpointError
    naming it. Legacy (pre-zip) pickles can only be recognised when loaded."""
    roles = [("unet", files.unet), ("pose_controlnet", files.pose_controlnet),
             ("face_controlnet", files.face_controlnet), ("ip_adapter", files.ip_adapter),
             ("clip_vision", files.clip_vision), ("vae", files.vae), (R.IPPLUS, files.ipplus)]
    if Path(files.sd15).is_dir():  # diffusers folder: its VAE and text encoder weights must be there
        for sub in ("vae", "text_encoder"):
            try:
                resolve_weights_file(Path(files.sd15) / sub)
            except FileNotFoundError as e:
                raise CheckpointError(f"SD1.5 folder {files.sd15}: {e}") from None
    else:
        roles.append(("sd15", files.sd15))
    for role, path in roles:
        if path is None:
            continue
        header = R.recognise(path)
        wanted, expected = R.ROLE_KINDS[role]
        if header.kind is None:
            continue
        if header.kind not in wanted:
            raise wrong_file_error(str(path), header.kind, expected)
        if role in (R.POSE_CONTROLNET, R.FACE_CONTROLNET):
            R.check_condition_channels(path, header.condition_channels, role.split("_")[0], expected)


# --------------------------------------------------------------------------------------------- configs

def _text_config(sd, meta):
    """transformers' CLIPTextConfig from our metadata or ``config.json``, else from the shapes of the
    tower weights (``embeddings.*``, ``encoder.layers.*``)."""
    if meta:
        return text_config(**meta)
    token = sd["embeddings.token_embedding.weight"]
    return text_config(
        vocab_size=token.shape[0], hidden_size=token.shape[1],
        intermediate_size=sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(sd, r"encoder\.layers\.(\d+)\."),
        num_attention_heads=max(1, token.shape[1] // 64),
        max_position_embeddings=sd["embeddings.position_embedding.weight"].shape[0])


def _vision_config(sd, meta, projection_dim: int):
    """transformers' CLIPVisionConfig from our metadata, else from the tower weights' shapes."""
    if meta:
        return vision_config(**meta)
    hidden = sd["embeddings.class_embedding"].shape[0]
    patch = sd["embeddings.patch_embedding.weight"].shape[-1]
    positions = sd["embeddings.position_embedding.weight"].shape[0]
    return vision_config(
        hidden_size=hidden, intermediate_size=sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(sd, r"encoder\.layers\.(\d+)\."),
        # OpenCLIP ViT-L/H/bigG all use 16 heads; smaller towers 64-wide heads
        num_attention_heads=16 if hidden in (1024, 1280, 1664) else max(1, hidden // 64),
        patch_size=patch, image_size=int(round((positions - 1) ** 0.5)) * patch, projection_dim=projection_dim)


def _load_module(model, sd, name, device, dtype, into=None):
    """Load ``sd`` strictly into ``into`` (default: ``model``; e.g. the tower of a transformers model)."""
    missing, unexpected = (into or model).load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return model.to(device=device, dtype=dtype).eval()


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_sd15_parts(sd15: Path, vae_file: Optional[Path] = None, device="cpu", dtype=torch.float32):
    """(vae, text_encoder) from an SD1.5 single file or diffusers folder (+ an optional separate VAE).
    The text encoder is ``transformers.CLIPTextModel``."""
    sd15 = Path(sd15)
    meta = None if sd15.is_dir() else read_config_metadata(sd15)
    if sd15.is_dir():
        vae_sd = load_state_dict(sd15 / "vae")
        text_sd = clip_keys.convert_text_encoder_keys(load_state_dict(sd15 / "text_encoder"))
        text_meta = _read_json(sd15 / "text_encoder" / "config.json")
    else:
        parts = sd_checkpoint_keys.split_ldm_checkpoint(load_state_dict(sd15), parts=("vae", "clip_text"))
        vae_sd, text_sd = parts["vae"], clip_keys.convert_text_encoder_keys(parts["clip_text"]) if parts["clip_text"] else {}
        text_meta = (meta or {}).get("clip_text")
        if not vae_sd or not text_sd:
            raise CheckpointError(f"{sd15}: not a full SD1.5 checkpoint (it has no "
                                  f"{'VAE' if not vae_sd else 'text encoder'} weights)")
    vae_meta = (meta or {}).get("vae")
    if vae_file is not None:
        vae_sd = vae_keys.convert_ldm_vae_keys(load_state_dict(vae_file))
        vae_meta = read_config_metadata(vae_file)
    name = f"VAE of {vae_file or sd15}"
    vae = build_and_load(AutoencoderKL, infer_vae_config(vae_sd, vae_meta), vae_sd, device=device, dtype=dtype,
                         report=LoadReport(name, "vae"))
    tower_sd = clip_keys.clip_tower_keys(text_sd, clip_keys.CLIP_TEXT_TOWER)
    text = new_text_encoder(_text_config(tower_sd, text_meta))
    text = _load_module(text, tower_sd, f"text encoder of {sd15}", device, dtype, into=text_tower(text))
    return vae, text


def load_clip_vision(path: Path, device="cpu", dtype=torch.float32):
    """The IP-Adapter image encoder as :class:`~xdyna_core.models.clip.PenultimateCLIPVision`
    (transformers' CLIP vision tower; its projection is unused and not loaded)."""
    raw = load_state_dict(path)
    try:
        sd = clip_keys.convert_vision_encoder_keys(raw)
    except ValueError:
        sd = {}
    tower_sd = clip_keys.clip_tower_keys(sd, clip_keys.CLIP_VISION_TOWER)
    if "embeddings.class_embedding" not in tower_sd:
        raise CheckpointError(f"{path}: not a CLIP vision encoder (it is {kinds.describe(kinds.identify(raw))}); "
                              f"expected e.g. CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors in models/clip_vision")
    proj = sd.get(clip_keys.CLIP_VISION_PROJECTION)
    cfg = _vision_config(tower_sd, read_config_metadata(path), proj.shape[0] if proj is not None else 1024)
    model = new_vision_encoder(cfg)
    model = _load_module(model, tower_sd, str(path), "cpu", torch.float32, into=vision_tower(model))
    # drop the last layer before moving: it never reaches the device
    return PenultimateCLIPVision(model).to(device=device, dtype=dtype).eval()


@dataclass
class XDynaBundle:
    unet: torch.nn.Module
    pose_controlnet: torch.nn.Module
    face_controlnet: Optional[torch.nn.Module]
    resampler: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    clip_vision: torch.nn.Module
    tokenizer_dir: Optional[Path]
    files: ModelFiles


def load_bundle(files: ModelFiles, device="cpu", dtype=torch.float32, log=None) -> XDynaBundle:
    say = log or (lambda s: None)
    say(f"UNet: {files.unet}")
    unet, report = load_xdyna_unet(files.unet, sd15_unet=files.sd15, ip_adapter=files.ip_adapter,
                                   ipplus=files.ipplus, device=device, dtype=dtype)
    unet.eval()
    say(f"pose ControlNet: {files.pose_controlnet}")
    pose, _ = load_controlnet(files.pose_controlnet, kind="pose", device=device, dtype=dtype)
    face = None
    if files.face_controlnet is not None:
        say(f"S-Face ControlNet: {files.face_controlnet}")
        face, _ = load_controlnet(files.face_controlnet, kind="face", device=device, dtype=dtype)
        face.eval()
    resampler, _ = load_resampler(files.ip_adapter, device=device, dtype=dtype)
    say(f"SD1.5 VAE + text encoder: {files.vae or files.sd15}")
    vae, text = load_sd15_parts(files.sd15, files.vae, device, dtype)
    say(f"CLIP vision: {files.clip_vision}")
    clip_vision = load_clip_vision(files.clip_vision, device, dtype)
    return XDynaBundle(unet, pose.eval(), face, resampler.eval(), vae, text, clip_vision, files.tokenizer_dir, files)
