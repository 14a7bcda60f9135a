"""CLIP text and vision transformers in the Hugging Face ``transformers`` key layout.

* :class:`CLIPTextModel` — SD1.5's text encoder (CLIP ViT-L/14 text tower). ``forward`` returns
  the last hidden state after ``final_layer_norm`` (what SD1.5 conditions on).
* :class:`CLIPVisionModelWithProjection` — the IP-Adapter image encoder (OpenCLIP ViT-H/14 in HF
  layout). ``forward`` returns every hidden state, so callers take ``hidden_states[-2]``.

Used by the standalone pipeline and tests; inside ComfyUI the native CLIP / CLIP-vision models are
used. Layers come from an injectable ``operations`` namespace (default ``torch.nn``); attention
runs through ``scaled_dot_product_attention``.

Other file layouts are mapped to the HF names by :func:`convert_text_encoder_keys`
(LDM ``cond_stage_model.transformer.*``) and :func:`convert_vision_encoder_keys`
(OpenCLIP ``visual.*`` / ``transformer.resblocks``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPVisionConfig",
    "CLIPVisionModelWithProjection",
    "CLIPVisionOutput",
    "convert_text_encoder_keys",
    "convert_vision_encoder_keys",
]


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _gelu(x):
    return F.gelu(x)


_ACTIVATIONS = {"quick_gelu": _quick_gelu, "gelu": _gelu}


def _activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"CLIP: unsupported hidden_act {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None


class _ConfigMixin:
    @classmethod
    def from_dict(cls, d: dict):
        """Build from our own ``to_dict`` output or an HF ``config.json`` (unknown keys ignored).

        A full ``CLIPModel`` config nests the tower under ``text_config`` / ``vision_config``.
        """
        nested = "text_config" if cls is CLIPTextConfig else "vision_config"
        if isinstance(d.get(nested), dict):
            merged = dict(d[nested])
            if "projection_dim" in d and "projection_dim" not in merged:
                merged["projection_dim"] = d["projection_dim"]
            d = merged
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    from_hf_config = from_dict

    def to_dict(self) -> dict:
        return asdict(self)

    def _check(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{type(self).__name__}: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        _activation(self.hidden_act)


@dataclass
class CLIPTextConfig(_ConfigMixin):
    """HF ``CLIPTextConfig`` fields; defaults = SD1.5's CLIP ViT-L/14 text encoder."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        self._check()


@dataclass
class CLIPVisionConfig(_ConfigMixin):
    """HF ``CLIPVisionConfig`` fields; defaults = OpenCLIP ViT-H/14 (IP-Adapter image encoder)."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 1024

    def __post_init__(self):
        self._check()
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPVisionConfig: image_size {self.image_size} not divisible by patch_size {self.patch_size}")

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


# --------------------------------------------------------------------------------------------
# shared transformer


class CLIPAttention(nn.Module):
    def __init__(self, dim, heads, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = heads
        self.q_proj = operations.Linear(dim, dim, bias=True, **kw)
        self.k_proj = operations.Linear(dim, dim, bias=True, **kw)
        self.v_proj = operations.Linear(dim, dim, bias=True, **kw)
        self.out_proj = operations.Linear(dim, dim, bias=True, **kw)

    def forward(self, x, causal: bool = False):
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), is_causal=causal)
        return self.out_proj(a.transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, dim, inner, act, operations=nn, device=None, dtype=None):
        super().__init__()
        self.act = _activation(act)
        self.fc1 = operations.Linear(dim, inner, device=device, dtype=dtype)
        self.fc2 = operations.Linear(inner, dim, device=device, dtype=dtype)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(ln1(x)); x + mlp(ln2(x))."""

    def __init__(self, cfg, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        d = cfg.hidden_size
        self.self_attn = CLIPAttention(d, cfg.num_attention_heads, operations, **kw)
        self.layer_norm1 = operations.LayerNorm(d, eps=cfg.layer_norm_eps, **kw)
        self.mlp = CLIPMLP(d, cfg.intermediate_size, cfg.hidden_act, operations, **kw)
        self.layer_norm2 = operations.LayerNorm(d, eps=cfg.layer_norm_eps, **kw)

    def forward(self, x, causal: bool = False):
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg, operations=nn, device=None, dtype=None):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg, operations, device, dtype) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x, causal: bool = False, num_layers: Optional[int] = None) -> List[torch.Tensor]:
        """Returns [input, output of layer 0, ..., output of layer num_layers-1] (HF hidden_states)."""
        states = [x]
        for layer in self.layers[: num_layers if num_layers is not None else len(self.layers)]:
            x = layer(x, causal=causal)
            states.append(x)
        return states


class _IgnoresPositionIds(nn.Module):
    """transformers < 4.31 saved ``position_ids`` as a persistent buffer; it is recomputed here."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "position_ids", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# text


class CLIPTextEmbeddings(_IgnoresPositionIds):
    def __init__(self, cfg: CLIPTextConfig, operations=nn, device=None, dtype=None):
        super().__init__()
        self.token_embedding = operations.Embedding(cfg.vocab_size, cfg.hidden_size, device=device, dtype=dtype)
        self.position_embedding = operations.Embedding(cfg.max_position_embeddings, cfg.hidden_size, device=device, dtype=dtype)

    def forward(self, input_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(pos)[None]


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig, operations=nn, device=None, dtype=None):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(cfg, operations, device, dtype)
        self.encoder = CLIPEncoder(cfg, operations, device, dtype)
        self.final_layer_norm = operations.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, device=device, dtype=dtype)


class CLIPTextModel(nn.Module):
    """CLIP text tower with HF keys ``text_model.*``; causal self-attention, no padding mask
    (SD1.5 pads with the end token and attends to the padding, like the reference pipeline)."""

    def __init__(self, config: Optional[CLIPTextConfig] = None, operations=nn, device=None, dtype=None):
        super().__init__()
        self.config = config if config is not None else CLIPTextConfig()
        self.text_model = CLIPTextTransformer(self.config, operations, device, dtype)

    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False):
        """input_ids (B, L<=max_position_embeddings) -> last_hidden_state (B, L, D) after the final LN.

        With ``output_hidden_states=True`` returns ``(last_hidden_state, hidden_states)`` where
        ``hidden_states`` is the HF tuple (embeddings, layer 1 output, ...), before the final LN.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"CLIPTextModel expects input_ids of shape (B, L), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"CLIPTextModel: sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        tm = self.text_model
        states = tm.encoder(tm.embeddings(input_ids.long()), causal=True)
        last = tm.final_layer_norm(states[-1])
        return (last, tuple(states)) if output_hidden_states else last


# --------------------------------------------------------------------------------------------
# vision


class CLIPVisionEmbeddings(_IgnoresPositionIds):
    def __init__(self, cfg: CLIPVisionConfig, operations=nn, device=None, dtype=None):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(cfg.hidden_size, device=device, dtype=dtype))
        self.patch_embedding = operations.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=False, device=device, dtype=dtype
        )
        self.position_embedding = operations.Embedding(cfg.num_positions, cfg.hidden_size, device=device, dtype=dtype)

    def forward(self, pixel_values):
        w = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(w.dtype)).flatten(2).transpose(1, 2)  # (B, P, D)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1)
        pos = self.position_embedding.weight.to(x.dtype)
        return x + pos[None]


class CLIPVisionTransformer(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.embeddings = CLIPVisionEmbeddings(cfg, operations, **kw)
        self.pre_layrnorm = operations.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)  # (sic) HF name
        self.encoder = CLIPEncoder(cfg, operations, **kw)
        self.post_layernorm = operations.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)


@dataclass
class CLIPVisionOutput:
    image_embeds: Optional[torch.Tensor]  # (B, projection_dim), None when the run stopped early
    last_hidden_state: torch.Tensor  # (B, 1+P, D), last computed layer output (no post LN), as HF
    hidden_states: Tuple[torch.Tensor, ...]  # (after pre_layrnorm, layer 1 out, ...)


class CLIPVisionModelWithProjection(nn.Module):
    """CLIP vision tower with HF keys ``vision_model.*`` + ``visual_projection``."""

    def __init__(self, config: Optional[CLIPVisionConfig] = None, operations=nn, device=None, dtype=None):
        super().__init__()
        self.config = config if config is not None else CLIPVisionConfig()
        cfg = self.config
        self.vision_model = CLIPVisionTransformer(cfg, operations, device, dtype)
        self.visual_projection = operations.Linear(cfg.hidden_size, cfg.projection_dim, bias=False, device=device, dtype=dtype)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = True,
                num_layers: Optional[int] = None) -> CLIPVisionOutput:
        """pixel_values (B, C, image_size, image_size), CLIP-normalised.

        ``num_layers`` stops after that many encoder layers (e.g. ``num_hidden_layers - 1`` when
        only ``hidden_states[-2]`` of the full model is needed); ``image_embeds`` is then None.
        ``output_hidden_states`` is accepted for HF call compatibility; the states are always kept.
        """
        cfg = self.config
        expected = (cfg.num_channels, cfg.image_size, cfg.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"CLIPVisionModelWithProjection expects pixel_values (B, {cfg.num_channels}, {cfg.image_size}, "
                f"{cfg.image_size}), got {tuple(pixel_values.shape)}"
            )
        vm = self.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixel_values))
        states = vm.encoder(x, causal=False, num_layers=num_layers)
        embeds = None
        if num_layers is None or num_layers >= cfg.num_hidden_layers:
            embeds = self.visual_projection(vm.post_layernorm(states[-1][:, 0]))
        return CLIPVisionOutput(image_embeds=embeds, last_hidden_state=states[-1], hidden_states=tuple(states))


# --------------------------------------------------------------------------------------------
# key conversion

_TEXT_PREFIXES = (
    "cond_stage_model.transformer.",  # LDM / ComfyUI SD1.x single-file checkpoints
    "conditioner.embedders.0.transformer.",  # SDXL-style single files (CLIP-L part)
    "text_encoder.",
    "transformer.",
)
_TEXT_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.")


def convert_text_encoder_keys(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Return the ``text_model.*`` part of a text-encoder or full SD checkpoint in HF names.

    Handles HF files (``text_model.*``), LDM single files (``cond_stage_model.transformer.*``,
    including very old ones without the ``text_model.`` level) and drops ``position_ids`` and
    unused heads (``text_projection``, ``logit_scale``).
    """
    for p in _TEXT_PREFIXES:
        if any(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
            break
    out = {}
    for k, v in sd.items():
        if k.startswith(_TEXT_ROOTS):
            k = "text_model." + k
        if not k.startswith("text_model.") or k.endswith("position_ids"):
            continue
        out[k] = v
    if not out:
        raise ValueError(
            "convert_text_encoder_keys: no CLIP text-encoder weights found (expected keys starting with "
            "'text_model.' or 'cond_stage_model.transformer.')"
        )
    return out


def _split_in_proj(out, prefix, w, b):
    biases = b.chunk(3, 0) if b is not None else (None,) * 3
    for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, 0), biases, strict=True):
        out[f"{prefix}.{name}.weight"] = wi
        if bi is not None:
            out[f"{prefix}.{name}.bias"] = bi


def convert_vision_encoder_keys(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Return a CLIP vision state dict in the HF ``CLIPVisionModelWithProjection`` layout.

    Accepts HF files (``vision_model.*``, ``visual_projection.weight``; e.g. IP-Adapter's
    ``image_encoder/model.safetensors`` or ComfyUI ``models/clip_vision`` files), full HF CLIPModel
    files (text tower dropped) and OpenCLIP files (``visual.conv1``, ``visual.transformer.resblocks.i``
    with fused ``attn.in_proj_*``, ``visual.proj`` (D, P) stored transposed).
    """
    hf = {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}
    if hf:
        return {k: v for k, v in hf.items() if not k.endswith("position_ids")}

    p = "visual." if any(k.startswith("visual.") for k in sd) else ""
    if p + "conv1.weight" not in sd:
        raise ValueError(
            "convert_vision_encoder_keys: no CLIP vision weights found (expected HF 'vision_model.*' keys "
            "or OpenCLIP 'visual.conv1.weight' / 'visual.transformer.resblocks.*')"
        )
    vm = "vision_model."
    out = {
        vm + "embeddings.class_embedding": sd[p + "class_embedding"],
        vm + "embeddings.patch_embedding.weight": sd[p + "conv1.weight"],
        vm + "embeddings.position_embedding.weight": sd[p + "positional_embedding"],
    }
    for src, dst in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"{vm}{dst}.weight"] = sd[f"{p}{src}.weight"]
        out[f"{vm}{dst}.bias"] = sd[f"{p}{src}.bias"]
    if p + "proj" in sd:
        out["visual_projection.weight"] = sd[p + "proj"].t().contiguous()
    rb = p + "transformer.resblocks."
    layers = sorted({int(k[len(rb):].split(".")[0]) for k in sd if k.startswith(rb)})
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
    for i in layers:
        src, dst = f"{rb}{i}.", f"{vm}encoder.layers.{i}."
        if any(k.startswith(src + "ls_") for k in sd):
            raise ValueError("convert_vision_encoder_keys: OpenCLIP models with LayerScale (ls_1/ls_2) are not supported")
        _split_in_proj(out, dst + "self_attn", sd[src + "attn.in_proj_weight"], sd.get(src + "attn.in_proj_bias"))
        for a, b in names.items():
            for t in ("weight", "bias"):
                if f"{src}{a}.{t}" in sd:
                    out[f"{dst}{b}.{t}"] = sd[f"{src}{a}.{t}"]
    return out
