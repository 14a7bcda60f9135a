"""Official checkpoint key names, key converters and file recognition.

This is the one place that knows how the files people download name their tensors:

* the X-Dyna UNet (diffusers SD1.5 UNet names + AnimateDiff-v1 motion modules + Dynamics-Adapter
  ``attn1.to_q_ff/to_out_ff`` + IP-Adapter ``attn2.to_k_ip/to_v_ip``), see
  ``spec/checkpoint_keys/xdyna_unet.json``;
* the original LDM ("CompVis") single-file SD1.5 layout (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.*``) <-> diffusers / HF names;
* CLIP text / vision encoders (LDM, HF and OpenCLIP names -> transformers' names);
* IP-Adapter-plus files (``image_proj`` + ``ip_adapter`` sections whose numbered keys
  ``"<i>.to_k_ip.weight"`` follow diffusers' attention-processor order);
* what kind of model a state dict holds (``identify``), so a wrong file gets a useful error.

Everything here is pure key/shape logic: no model classes, no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Prefixes of the LDM single-file SD1.5 checkpoint
# ---------------------------------------------------------------------------------------------
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_CLIP_PREFIX = "cond_stage_model.transformer."

# Sections of an IP-Adapter file (nested dict in .bin, flat "section.key" in .safetensors).
IP_IMAGE_PROJ = "image_proj"
IP_ADAPTER = "ip_adapter"

# safetensors metadata key carrying a model config as JSON (tiny files, converted files).
CONFIG_METADATA_KEY = "xdyna_config"
KIND_METADATA_KEY = "xdyna_kind"


# ---------------------------------------------------------------------------------------------
# Generic key hygiene
# ---------------------------------------------------------------------------------------------
def strip_module_prefix(key: str) -> str:
    """Drop every ``module`` path component (DataParallel/DDP wrappers: ``module.conv_in.weight``).

    The reference does ``key.replace("module.", "")``; removing whole components is the same for
    every real key and cannot damage a name that merely ends in ``module`` (e.g. ``xmodule.w``).
    """
    if "module." not in key:
        return key
    return ".".join(p for p in key.split(".") if p != "module")


def normalize_keys(sd: Mapping[str, object]) -> dict:
    out = {}
    for k, v in sd.items():
        nk = strip_module_prefix(k)
        if nk in out:
            raise ValueError(f"two tensors map to the same key {nk!r} after removing 'module.' prefixes")
        out[nk] = v
    return out


# ---------------------------------------------------------------------------------------------
# X-Dyna UNet key groups (as in the manifest)
# ---------------------------------------------------------------------------------------------
UNET_GROUPS = ("sd15_unet", "motion_module", "dynamics_adapter", "ip_adapter")


def unet_key_group(key: str) -> str:
    """Which part of the X-Dyna UNet a key belongs to (manifest ``group``)."""
    if ".motion_modules." in key:
        return "motion_module"
    if ".attn1.to_q_ff." in key or ".attn1.to_out_ff." in key:
        return "dynamics_adapter"
    if ".attn2.to_k_ip." in key or ".attn2.to_v_ip." in key:
        return "ip_adapter"
    return "sd15_unet"


def split_unet_groups(keys: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {g: [] for g in UNET_GROUPS}
    for k in keys:
        groups[unet_key_group(k)].append(k)
    return groups


# ---------------------------------------------------------------------------------------------
# UNet structure (shared by the LDM converter and the IP-Adapter numbering)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetLayout:
    """The block structure of an SD-style UNet, enough to translate key names.

    ``down_attn[i]`` / ``up_attn[i]``: whether level i has spatial transformers (diffusers order:
    up_blocks.0 is the deepest level). SD1.5: 4 levels, 2 layers, attention in down 0-2 / up 1-3.
    """

    num_levels: int = 4
    layers_per_block: int = 2
    down_attn: tuple = (True, True, True, False)
    up_attn: tuple = (False, True, True, True)
    mid_attn: bool = True

    @classmethod
    def sd15(cls) -> UNetLayout:
        return cls()

    @classmethod
    def from_diffusers_keys(cls, keys: Iterable[str]) -> UNetLayout:
        keys = list(keys)
        levels = _max_index(keys, r"^down_blocks\.(\d+)\.") + 1
        if levels <= 0:
            raise ValueError("no 'down_blocks.*' keys: not a diffusers UNet state dict")
        layers = _max_index(keys, r"^down_blocks\.0\.resnets\.(\d+)\.") + 1
        down = tuple(any(k.startswith(f"down_blocks.{i}.attentions.") for k in keys) for i in range(levels))
        up = tuple(any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys) for i in range(levels))
        mid = any(k.startswith("mid_block.attentions.") for k in keys)
        if not any(down) and not any(up) and not mid:
            # Adapter-only files have motion modules but may lack the attention blocks; use the
            # shape-free SD1.5 structure then (the caller checks against a real model anyway).
            down, up, mid = cls.down_attn, cls.up_attn, True
        return cls(levels, layers, down, up, mid)

    @classmethod
    def from_ldm_keys(cls, keys: Iterable[str]) -> UNetLayout:
        """Structure of an LDM UNet (keys without ``model.diffusion_model.``)."""
        keys = list(keys)
        n_in = _max_index(keys, r"^input_blocks\.(\d+)\.") + 1
        if n_in <= 1:
            raise ValueError("no 'input_blocks.*' keys: not an LDM UNet state dict")
        ds = sorted({int(m.group(1)) for k in keys if (m := re.match(r"^input_blocks\.(\d+)\.0\.op\.", k))})
        # input blocks: [conv_in] + per level L units (+1 downsampler except the last level),
        # i.e. n_in = levels * (L + 1); the first downsampler sits at index L + 1.
        layers = ds[0] - 1 if ds else n_in - 1
        levels = n_in // (layers + 1)
        if levels * (layers + 1) != n_in:
            raise ValueError(f"LDM UNet with {n_in} input blocks does not fit a regular level structure")
        down = tuple(
            any(k.startswith(f"input_blocks.{1 + i * (layers + 1) + j}.1.") for j in range(layers) for k in keys)
            for i in range(levels)
        )
        up = tuple(
            any(
                k.startswith(f"output_blocks.{i * (layers + 1) + j}.1.")
                and not re.match(rf"^output_blocks\.{i * (layers + 1) + j}\.1\.conv\.", k)
                for j in range(layers + 1)
                for k in keys
            )
            for i in range(levels)
        )
        mid = any(k.startswith("middle_block.1.") for k in keys)
        return cls(levels, layers, down, up, mid)

    # -- module pairs ------------------------------------------------------------------------
    def module_pairs(self) -> list[tuple[str, str, str]]:
        """``(ldm_prefix, diffusers_prefix, kind)`` for every module, kind in resnet/attn/plain."""
        L = self.layers_per_block
        pairs = [
            ("time_embed.0", "time_embedding.linear_1", "plain"),
            ("time_embed.2", "time_embedding.linear_2", "plain"),
            ("input_blocks.0.0", "conv_in", "plain"),
            ("out.0", "conv_norm_out", "plain"),
            ("out.2", "conv_out", "plain"),
        ]
        for i in range(self.num_levels):
            for j in range(L):
                n = 1 + i * (L + 1) + j
                pairs.append((f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}", "resnet"))
                if self.down_attn[i]:
                    pairs.append((f"input_blocks.{n}.1", f"down_blocks.{i}.attentions.{j}", "plain"))
            if i < self.num_levels - 1:
                n = (i + 1) * (L + 1)
                pairs.append((f"input_blocks.{n}.0.op", f"down_blocks.{i}.downsamplers.0.conv", "plain"))
        pairs.append(("middle_block.0", "mid_block.resnets.0", "resnet"))
        if self.mid_attn:
            pairs.append(("middle_block.1", "mid_block.attentions.0", "plain"))
            pairs.append(("middle_block.2", "mid_block.resnets.1", "resnet"))
        else:
            pairs.append(("middle_block.1", "mid_block.resnets.1", "resnet"))
        for i in range(self.num_levels):
            for j in range(L + 1):
                n = i * (L + 1) + j
                pairs.append((f"output_blocks.{n}.0", f"up_blocks.{i}.resnets.{j}", "resnet"))
                if self.up_attn[i]:
                    pairs.append((f"output_blocks.{n}.1", f"up_blocks.{i}.attentions.{j}", "plain"))
            if i < self.num_levels - 1:
                n = i * (L + 1) + L
                slot = 2 if self.up_attn[i] else 1
                pairs.append((f"output_blocks.{n}.{slot}.conv", f"up_blocks.{i}.upsamplers.0.conv", "plain"))
        return pairs

    # -- IP-Adapter numbering -----------------------------------------------------------------
    def cross_attention_modules(self) -> list[str]:
        """UNet attn2 modules in diffusers' attention-processor order: down, up, then mid."""
        mods = []
        for i in range(self.num_levels):
            if self.down_attn[i]:
                mods += [f"down_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2" for j in range(self.layers_per_block)]
        for i in range(self.num_levels):
            if self.up_attn[i]:
                mods += [f"up_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2" for j in range(self.layers_per_block + 1)]
        if self.mid_attn:
            mods.append("mid_block.attentions.0.transformer_blocks.0.attn2")
        return mods

    def ip_adapter_index_map(self) -> dict[int, str]:
        """IP-Adapter file index -> UNet attn2 module. Processors alternate attn1 (even, plain
        processor without weights) and attn2 (odd, carries ``to_k_ip``/``to_v_ip``)."""
        return {2 * n + 1: m for n, m in enumerate(self.cross_attention_modules())}


def _max_index(keys: Iterable[str], pattern: str) -> int:
    rx = re.compile(pattern)
    best = -1
    for k in keys:
        m = rx.match(k)
        if m:
            best = max(best, int(m.group(1)))
    return best


# Resnet internals: LDM ResBlock -> diffusers ResnetBlock2D
_UNET_RESNET_RENAMES = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
)


def _rename_inner(rest: str, renames, reverse: bool) -> str | None:
    for a, b in renames:
        src, dst = (b, a) if reverse else (a, b)
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src):]
    return None


def _convert_by_pairs(sd: Mapping, pairs, inner: dict, reverse: bool, reshape=None):
    """Rename keys by longest matching module prefix; ``inner[kind]`` renames inside a module.
    Returns (converted, unmapped_keys)."""
    col_from, col_to = (1, 0) if reverse else (0, 1)
    table = sorted(((p[col_from], p[col_to], p[2]) for p in pairs), key=lambda t: -len(t[0]))
    out, unmapped = {}, []
    for key, value in sd.items():
        for src, dst, kind in table:
            if key.startswith(src + "."):
                rest = key[len(src) + 1:]
                if kind != "plain":
                    new_rest = _rename_inner(rest, inner[kind], reverse)
                    if new_rest is None:
                        continue
                    rest = new_rest
                new_key = f"{dst}.{rest}"
                if reshape is not None:
                    value = reshape(kind, rest, value, reverse)
                out[new_key] = value
                break
        else:
            unmapped.append(key)
    return out, unmapped


def convert_ldm_unet_to_diffusers(sd: Mapping, layout: UNetLayout | None = None):
    """LDM UNet state dict (``input_blocks...``; without ``model.diffusion_model.``) -> diffusers
    names. Returns ``(state_dict, unmapped_keys)``; tensors are not copied."""
    layout = layout or UNetLayout.from_ldm_keys(sd.keys())
    return _convert_by_pairs(sd, layout.module_pairs(), {"resnet": _UNET_RESNET_RENAMES}, reverse=False)


def convert_diffusers_unet_to_ldm(sd: Mapping, layout: UNetLayout | None = None):
    """Inverse of :func:`convert_ldm_unet_to_diffusers` (SD-base keys only; X-Dyna extras such as
    motion modules have no LDM name and come back as unmapped)."""
    base = {k: v for k, v in sd.items() if unet_key_group(k) == "sd15_unet"}
    extra = [k for k in sd if unet_key_group(k) != "sd15_unet"]
    layout = layout or UNetLayout.from_diffusers_keys(base.keys())
    out, unmapped = _convert_by_pairs(base, layout.module_pairs(), {"resnet": _UNET_RESNET_RENAMES}, reverse=True)
    return out, unmapped + extra


# ---------------------------------------------------------------------------------------------
# VAE: LDM (first_stage_model.*) <-> diffusers AutoencoderKL
# ---------------------------------------------------------------------------------------------
_VAE_RESNET_RENAMES = (
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("nin_shortcut", "conv_shortcut"),
)
_VAE_ATTN_RENAMES = (
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
)
# diffusers < 0.14 named the VAE attention query/key/value/proj_attn
_OLD_DIFFUSERS_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_module_pairs(num_levels: int = 4, layers_per_block: int = 2) -> list[tuple[str, str, str]]:
    L = layers_per_block
    pairs = [
        ("quant_conv", "quant_conv", "plain"),
        ("post_quant_conv", "post_quant_conv", "plain"),
    ]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in", f"{part}.conv_in", "plain"),
            (f"{part}.conv_out", f"{part}.conv_out", "plain"),
            (f"{part}.norm_out", f"{part}.conv_norm_out", "plain"),
            (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", "resnet"),
            (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", "resnet"),
            (f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", "attn"),
        ]
    for i in range(num_levels):
        for j in range(L):
            pairs.append((f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", "resnet"))
        if i < num_levels - 1:
            pairs.append((f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv", "plain"))
    # the decoder's LDM "up" list is stored deepest-last; diffusers' up_blocks deepest-first
    for i in range(num_levels):
        ldm = num_levels - 1 - i
        for j in range(L + 1):
            pairs.append((f"decoder.up.{ldm}.block.{j}", f"decoder.up_blocks.{i}.resnets.{j}", "resnet"))
        if i < num_levels - 1:
            pairs.append((f"decoder.up.{ldm}.upsample.conv", f"decoder.up_blocks.{i}.upsamplers.0.conv", "plain"))
    return pairs


def _vae_attn_reshape(kind, rest, value, reverse):
    # LDM uses 1x1 convs for q/k/v/proj_out, diffusers Linear layers
    if kind != "attn" or not rest.endswith("weight") or not hasattr(value, "dim"):
        return value
    if not reverse and value.dim() == 4:
        return value.reshape(value.shape[0], value.shape[1])
    if reverse and value.dim() == 2:
        return value.reshape(value.shape[0], value.shape[1], 1, 1)
    return value


def vae_layout_from_keys(keys: Iterable[str], ldm: bool) -> tuple[int, int]:
    keys = list(keys)
    if ldm:
        levels = _max_index(keys, r"^encoder\.down\.(\d+)\.") + 1
        layers = _max_index(keys, r"^encoder\.down\.0\.block\.(\d+)\.") + 1
    else:
        levels = _max_index(keys, r"^encoder\.down_blocks\.(\d+)\.") + 1
        layers = _max_index(keys, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.") + 1
    if levels <= 0 or layers <= 0:
        raise ValueError("not a VAE state dict (no encoder down blocks)")
    return levels, layers


def convert_ldm_vae_to_diffusers(sd: Mapping):
    levels, layers = vae_layout_from_keys(sd.keys(), ldm=True)
    inner = {"resnet": _VAE_RESNET_RENAMES, "attn": _VAE_ATTN_RENAMES}
    return _convert_by_pairs(sd, vae_module_pairs(levels, layers), inner, reverse=False, reshape=_vae_attn_reshape)


def convert_diffusers_vae_to_ldm(sd: Mapping):
    sd = {_modernize_vae_key(k): v for k, v in sd.items()}
    levels, layers = vae_layout_from_keys(sd.keys(), ldm=False)
    inner = {"resnet": _VAE_RESNET_RENAMES, "attn": _VAE_ATTN_RENAMES}
    return _convert_by_pairs(sd, vae_module_pairs(levels, layers), inner, reverse=True, reshape=_vae_attn_reshape)


def _modernize_vae_key(k: str) -> str:
    m = re.match(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)(\..*)$", k)
    return f"{m.group(1)}{_OLD_DIFFUSERS_VAE_ATTN[m.group(2)]}{m.group(3)}" if m else k


# ---------------------------------------------------------------------------------------------
# CLIP text and vision encoders. Files use the transformers 4.x names ("file layout"):
# ``text_model.*``; ``vision_model.*`` + ``visual_projection.weight``. The towers themselves
# (the modules under those prefixes) have the same names in every transformers version.
# ---------------------------------------------------------------------------------------------
CLIP_TEXT_TOWER = "text_model."
CLIP_VISION_TOWER = "vision_model."
CLIP_VISION_PROJECTION = "visual_projection.weight"
_CLIP_TEXT_PREFIXES = (
    LDM_CLIP_PREFIX,  # LDM / ComfyUI SD1.x single files
    "conditioner.embedders.0.transformer.",  # SDXL-style single files (CLIP-L part)
    "text_encoder.",
    "transformer.",
)
_CLIP_TEXT_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.")


def convert_ldm_clip_to_hf(sd: Mapping):
    """Keys after ``cond_stage_model.transformer.`` -> HF ``CLIPTextModel`` keys (``text_model.*``).
    Old transformers versions saved them without the ``text_model.`` level."""
    out = {}
    for k, v in sd.items():
        out[k if k.startswith(CLIP_TEXT_TOWER) else CLIP_TEXT_TOWER + k] = v
    return out, []


def convert_text_encoder_keys(sd: Mapping) -> dict:
    """The ``text_model.*`` part of a text-encoder or full SD checkpoint, in the file layout.

    Handles HF files (``text_model.*``), LDM single files (``cond_stage_model.transformer.*``,
    including very old ones without the ``text_model.`` level) and drops ``position_ids`` (a
    buffer transformers recomputes) and unused heads (``text_projection``, ``logit_scale``).
    """
    for p in _CLIP_TEXT_PREFIXES:
        if any(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
            break
    sd = {k: v for k, v in sd.items() if k.startswith((CLIP_TEXT_TOWER,) + _CLIP_TEXT_ROOTS)}
    out = {k: v for k, v in convert_ldm_clip_to_hf(sd)[0].items() if not k.endswith("position_ids")}
    if not out:
        raise ValueError("no CLIP text-encoder weights found (expected keys starting with "
                         "'text_model.' or 'cond_stage_model.transformer.')")
    return out


def _split_in_proj(out, prefix, w, b):
    biases = b.chunk(3, 0) if b is not None else (None,) * 3
    for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, 0), biases, strict=True):
        out[f"{prefix}.{name}.weight"] = wi
        if bi is not None:
            out[f"{prefix}.{name}.bias"] = bi


_OPENCLIP_LAYER_RENAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                           "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}


def convert_vision_encoder_keys(sd: Mapping) -> dict:
    """A CLIP vision state dict in the file layout (``vision_model.*`` + ``visual_projection.weight``).

    Accepts HF files (IP-Adapter's ``image_encoder/model.safetensors``, ComfyUI ``models/clip_vision``
    files such as ``CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors``), full HF CLIPModel files (text
    tower dropped) and OpenCLIP files (``visual.conv1``, ``visual.transformer.resblocks.i`` with
    fused ``attn.in_proj_*``, ``visual.proj`` (D, P) stored transposed).
    """
    hf = {k: v for k, v in sd.items() if k.startswith((CLIP_VISION_TOWER, CLIP_VISION_PROJECTION))}
    if hf:
        return {k: v for k, v in hf.items() if not k.endswith("position_ids")}

    p = "visual." if any(k.startswith("visual.") for k in sd) else ""
    if p + "conv1.weight" not in sd:
        raise ValueError("no CLIP vision weights found (expected HF 'vision_model.*' keys or OpenCLIP "
                         "'visual.conv1.weight' / 'visual.transformer.resblocks.*')")
    vm = CLIP_VISION_TOWER
    out = {
        vm + "embeddings.class_embedding": sd[p + "class_embedding"],
        vm + "embeddings.patch_embedding.weight": sd[p + "conv1.weight"],
        vm + "embeddings.position_embedding.weight": sd[p + "positional_embedding"],
    }
    for src, dst in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"{vm}{dst}.weight"] = sd[f"{p}{src}.weight"]
        out[f"{vm}{dst}.bias"] = sd[f"{p}{src}.bias"]
    if p + "proj" in sd:
        out[CLIP_VISION_PROJECTION] = sd[p + "proj"].t().contiguous()
    rb = p + "transformer.resblocks."
    layers = sorted({int(k[len(rb):].split(".")[0]) for k in sd if k.startswith(rb)})
    for i in layers:
        src, dst = f"{rb}{i}.", f"{vm}encoder.layers.{i}."
        if any(k.startswith(src + "ls_") for k in sd):
            raise ValueError("OpenCLIP vision towers with LayerScale (ls_1/ls_2) are not supported")
        _split_in_proj(out, dst + "self_attn", sd[src + "attn.in_proj_weight"], sd.get(src + "attn.in_proj_bias"))
        for a, b in _OPENCLIP_LAYER_RENAMES.items():
            for t in ("weight", "bias"):
                if f"{src}{a}.{t}" in sd:
                    out[f"{dst}{b}.{t}"] = sd[f"{src}{a}.{t}"]
    return out


def clip_tower_keys(sd: Mapping, tower: str) -> dict:
    """File layout -> the names inside one tower (``CLIP_TEXT_TOWER`` or ``CLIP_VISION_TOWER``);
    everything outside it (the vision projection) is left out."""
    return {k[len(tower):]: v for k, v in sd.items() if k.startswith(tower)}


def split_ldm_checkpoint(sd: Mapping, parts: Iterable[str] = ("unet", "vae", "clip_text")) -> dict[str, dict]:
    """Single-file SD checkpoint -> {"unet", "vae", "clip_text"} in diffusers/HF names (only the
    requested ``parts`` are converted), plus "other" (schedule buffers, EMA copies...) untouched.
    Raises ValueError if a requested part has keys without a known mapping."""
    prefixes = {"unet": LDM_UNET_PREFIX, "vae": LDM_VAE_PREFIX, "clip_text": LDM_CLIP_PREFIX}
    converters = {
        "unet": convert_ldm_unet_to_diffusers,
        "vae": convert_ldm_vae_to_diffusers,
        "clip_text": convert_ldm_clip_to_hf,
    }
    parts = tuple(parts)
    out: dict[str, dict] = {name: {} for name in parts}
    out["other"] = {}
    for k, v in sd.items():
        for name in parts:
            if k.startswith(prefixes[name]):
                out[name][k[len(prefixes[name]):]] = v
                break
        else:
            out["other"][k] = v
    for name in parts:
        if out[name]:
            out[name], unmapped = converters[name](out[name])
            if unmapped:
                raise ValueError(f"{len(unmapped)} {name} keys of the LDM checkpoint have no known mapping, e.g. {unmapped[:3]}")
    return out


def join_ldm_checkpoint(unet: Mapping | None = None, vae: Mapping | None = None, clip_text: Mapping | None = None) -> dict:
    """diffusers/HF parts -> one LDM single-file state dict (used to write tiny SD1.5 files)."""
    out = {}
    if unet is not None:
        u, unmapped = convert_diffusers_unet_to_ldm(unet)
        if unmapped:
            raise ValueError(f"UNet keys without an LDM name: {unmapped[:3]}")
        out.update({LDM_UNET_PREFIX + k: v for k, v in u.items()})
    if vae is not None:
        v_, unmapped = convert_diffusers_vae_to_ldm(vae)
        if unmapped:
            raise ValueError(f"VAE keys without an LDM name: {unmapped[:3]}")
        out.update({LDM_VAE_PREFIX + k: v for k, v in v_.items()})
    if clip_text is not None:
        out.update({LDM_CLIP_PREFIX + k: v for k, v in clip_text.items()})
    return out


# ---------------------------------------------------------------------------------------------
# IP-Adapter files
# ---------------------------------------------------------------------------------------------
_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")


def split_ip_adapter(sd: Mapping) -> tuple[dict, dict]:
    """Flat IP-Adapter dict (``image_proj.*``, ``ip_adapter.*``) -> (image_proj, ip_adapter) dicts."""
    proj, ip = {}, {}
    for k, v in sd.items():
        section, _, rest = k.partition(".")
        if section == IP_IMAGE_PROJ:
            proj[rest] = v
        elif section == IP_ADAPTER:
            ip[rest] = v
        else:
            raise ValueError(f"unexpected key {k!r} in an IP-Adapter file (expected 'image_proj.*' or 'ip_adapter.*')")
    return proj, ip


def ip_adapter_to_unet_keys(ip_sd: Mapping, layout: UNetLayout | None = None) -> dict:
    """``{"1.to_k_ip.weight": W, ...}`` -> ``{"down_blocks.0...attn2.to_k_ip.weight": W, ...}``."""
    index_map = (layout or UNetLayout.sd15()).ip_adapter_index_map()
    out = {}
    for k, v in ip_sd.items():
        m = _IP_KEY.match(k)
        if not m:
            raise ValueError(f"unexpected IP-Adapter key {k!r} (expected '<i>.to_k_ip.weight' / '<i>.to_v_ip.weight')")
        idx = int(m.group(1))
        if idx not in index_map:
            raise ValueError(
                f"IP-Adapter index {idx} has no cross-attention in this UNet (valid: odd 1..{max(index_map)}); "
                "is this an SDXL IP-Adapter?"
            )
        out[f"{index_map[idx]}.{m.group(2)}.weight"] = v
    return out


def unet_to_ip_adapter_keys(unet_sd: Mapping, layout: UNetLayout | None = None) -> dict:
    """Inverse of :func:`ip_adapter_to_unet_keys` on the UNet's ``to_k_ip/to_v_ip`` weights."""
    index_map = (layout or UNetLayout.sd15()).ip_adapter_index_map()
    by_module = {m: i for i, m in index_map.items()}
    out = {}
    for k, v in unet_sd.items():
        if unet_key_group(k) != "ip_adapter":
            continue
        module, _, rest = k.rpartition(".attn2.")
        idx = by_module[module + ".attn2"]
        out[f"{idx}.{rest}"] = v
    return out


# ---------------------------------------------------------------------------------------------
# Recognition
# ---------------------------------------------------------------------------------------------
KIND_DESCRIPTIONS = {
    "xdyna_unet": "an X-Dyna UNet (SD1.5 base + motion modules + Dynamics-Adapter + IP attention)",
    "xdyna_unet_adapters": "an X-Dyna UNet without the SD1.5 base weights (motion modules + Dynamics-Adapter only)",
    "motion_module": "an AnimateDiff motion-module file (no Dynamics-Adapter)",
    "animatediff_unet": "an AnimateDiff video UNet (SD UNet + motion modules, no X-Dyna Dynamics-Adapter)",
    "sd_unet": "a diffusers SD UNet (UNet2DConditionModel, no X-Dyna parts)",
    "sd_checkpoint": "a single-file Stable Diffusion checkpoint (LDM layout: model.diffusion_model.*)",
    "sd_unet_ldm": "a bare Stable Diffusion UNet in LDM layout (input_blocks.*)",
    "controlnet": "a diffusers ControlNet",
    "controlnet_ldm": "a ControlNet in LDM layout (control_model / input_hint_block)",
    "ip_adapter": "an IP-Adapter-plus file (image_proj Resampler + ip_adapter projections)",
    "ip_adapter_plain": "a plain IP-Adapter file (linear image_proj, not the plus/Resampler variant)",
    "resampler": "an IP-Adapter-plus Resampler (image_proj only)",
    "vae": "a VAE (diffusers AutoencoderKL layout)",
    "vae_ldm": "a VAE (LDM layout)",
    "clip_text": "a CLIP text encoder (HF layout)",
    "clip_vision": "a CLIP vision encoder (HF layout)",
    "clip_vision_openclip": "a CLIP vision encoder (open_clip layout)",
    "empty": "an empty file (no tensors)",
    "unknown": "an unrecognised model",
}


def describe(kind: str) -> str:
    return KIND_DESCRIPTIONS.get(kind, kind)


def _has(keys, *needles) -> bool:
    return all(any(n in k for k in keys) for n in needles)


def identify(sd: Mapping) -> str:
    """Kind of model a (prefix-stripped, flat) state dict holds; see ``KIND_DESCRIPTIONS``."""
    keys = list(sd.keys())
    if not keys:
        return "empty"
    ks = set(keys)
    starts = lambda p: any(k.startswith(p) for k in keys)
    if starts(IP_IMAGE_PROJ + ".") and starts(IP_ADAPTER + "."):
        return "ip_adapter" if f"{IP_IMAGE_PROJ}.latents" in ks else "ip_adapter_plain"
    if starts(LDM_UNET_PREFIX):
        return "sd_checkpoint"
    if starts("control_model.") or starts("input_hint_block."):
        return "controlnet_ldm"
    if "controlnet_cond_embedding.conv_in.weight" in ks or starts("controlnet_down_blocks."):
        return "controlnet"
    has_mm = _has(keys, ".motion_modules.")
    has_ff = _has(keys, ".attn1.to_q_ff.")
    if has_mm or has_ff:
        if "conv_in.weight" in ks and starts("down_blocks.0.resnets.") and has_mm and has_ff:
            return "xdyna_unet"
        if has_ff:
            return "xdyna_unet_adapters"
        return "animatediff_unet" if "conv_in.weight" in ks else "motion_module"
    if "conv_in.weight" in ks and starts("down_blocks.") and starts("mid_block."):
        return "sd_unet"
    if starts("input_blocks.") and starts("time_embed."):
        return "sd_unet_ldm"
    if "latents" in ks and starts("layers.0.0.to_q") and "proj_in.weight" in ks:
        return "resampler"
    if starts("encoder.down_blocks.") and starts("decoder."):
        return "vae"
    if starts("encoder.down.") and starts("decoder.up."):
        return "vae_ldm"
    if starts("text_model.encoder.layers.") or starts("transformer.text_model."):
        return "clip_text"
    if starts("vision_model.encoder.layers."):
        return "clip_vision"
    if starts("visual.transformer.resblocks."):
        return "clip_vision_openclip"
    return "unknown"


# Advice on where a recognised-but-wrong file belongs (used in error messages).
KIND_HINTS = {
    "sd_checkpoint": "it serves as the SD1.5 base model and belongs in models/checkpoints",
    "sd_unet": "it can serve as the SD1.5 base model",
    "sd_unet_ldm": "it can serve as the SD1.5 base model",
    "controlnet": "it belongs to the pose/face ControlNet input",
    "ip_adapter": "it belongs in models/ipadapter (IP-Adapter input)",
    "resampler": "it belongs to the IP-Adapter input",
    "vae": "VAEs come from the SD1.5 checkpoint or models/vae",
    "vae_ldm": "VAEs come from the SD1.5 checkpoint or models/vae",
    "clip_vision": "it belongs in models/clip_vision",
    "clip_vision_openclip": "it belongs in models/clip_vision",
    "clip_text": "the text encoder comes from the SD1.5 checkpoint",
    "motion_module": "X-Dyna needs its own UNet checkpoint, not a bare AnimateDiff module",
    "animatediff_unet": "X-Dyna needs its own UNet checkpoint, whose attention layers carry to_q_ff/to_out_ff",
}


# --------------------------------------------------------------------------------------------
# LDM -> diffusers key conversion

_LDM_PREFIXES = ("first_stage_model.", "vae.")


def _strip_vae_prefix(sd: Mapping) -> Mapping:
    for p in _LDM_PREFIXES:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return dict(sd)


def is_ldm_vae_layout(sd: Mapping) -> bool:
    """True when the (prefix-stripped) keys use the original LDM names (``encoder.down.0.block.0``)."""
    keys = _strip_vae_prefix({k: None for k in sd}).keys()
    return any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for k in keys)


def convert_ldm_vae_keys(sd: Mapping) -> Mapping:
    """Map an LDM-layout VAE state dict to the diffusers layout used by :class:`AutoencoderKL`.

    Accepts a full single-file SD checkpoint (only ``first_stage_model.*`` keys are taken), a bare
    LDM VAE file, or a file already in the diffusers layout (returned with the prefix removed).
    Keys that belong to training only (``loss.*``, discriminator, EMA counters) are dropped. The
    attention projections stored as 1x1 convs (C, C, 1, 1) become linear weights (C, C).
    """
    sd = _strip_vae_prefix(sd)
    if not is_ldm_vae_layout(sd):
        return {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}

    training_only = ("loss.", "model_ema.", "discriminator.")
    out, unmapped = convert_ldm_vae_to_diffusers({k: v for k, v in sd.items() if not k.startswith(training_only)})
    if unmapped:
        raise ValueError(f"convert_ldm_vae_keys: {len(unmapped)} VAE keys have no known mapping, e.g. {unmapped[:3]}")
    return out
