"""CLIP text and vision encoders of the standalone path: ``transformers``' models, built offline.

* SD1.5's text encoder (CLIP ViT-L/14 text tower) is ``transformers.CLIPTextModel``; SD1.5
  conditions on its ``last_hidden_state`` (after ``final_layer_norm``).
* The IP-Adapter image encoder (OpenCLIP ViT-H/14) is ``transformers.CLIPVisionModel`` wrapped in
  :class:`PenultimateCLIPVision`, which gives ``hidden_states[-2]`` — the Resampler's input —
  without running the last layer.

Nothing is fetched: configs are built here from a few fields (the checkpoint's shapes or its
metadata, see ``loading/bundle.py``) and weights come from the user's files. Attention runs through
``scaled_dot_product_attention`` ("sdpa"). Inside ComfyUI its native CLIP models are used instead.

transformers 4.x nests each tower (``CLIPTextModel.text_model``, ``CLIPVisionModel.vision_model``);
5.x makes the model the tower. :func:`text_tower` / :func:`vision_tower` hide that, and the towers'
own parameter names are the same in both (``loading/keys.py`` maps files onto them).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = [
    "SD15_TEXT",
    "VIT_H_14",
    "PenultimateCLIPVision",
    "config_dict",
    "new_text_encoder",
    "new_vision_encoder",
    "text_config",
    "text_tower",
    "vision_config",
    "vision_tower",
]

# The fields that describe a tower (HF names); everything else keeps transformers' defaults.
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
VIT_H_14 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                num_channels=3, image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5,
                projection_dim=1024)
_ACTIVATIONS = ("quick_gelu", "gelu")


def _config(cls_name: str, defaults: dict, fields: dict):
    import transformers

    values = {**defaults, **{k: v for k, v in fields.items() if k in defaults}}
    if values["hidden_act"] not in _ACTIVATIONS:
        raise ValueError(f"CLIP {cls_name}: unsupported hidden_act {values['hidden_act']!r}; expected one of {_ACTIVATIONS}")
    if values["hidden_size"] % values["num_attention_heads"]:
        raise ValueError(f"CLIP {cls_name}: hidden_size {values['hidden_size']} is not divisible by "
                         f"num_attention_heads {values['num_attention_heads']}")
    return getattr(transformers, cls_name)(attn_implementation="sdpa", **values)


def text_config(**fields):
    """``transformers.CLIPTextConfig`` from tower fields (defaults: SD1.5's); other keys of
    ``fields`` (a full ``config.json``, our metadata) are ignored."""
    return _config("CLIPTextConfig", SD15_TEXT, fields)


def vision_config(**fields):
    """``transformers.CLIPVisionConfig`` from tower fields (defaults: OpenCLIP ViT-H/14)."""
    cfg = _config("CLIPVisionConfig", VIT_H_14, fields)
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"CLIP vision: image_size {cfg.image_size} not divisible by patch_size {cfg.patch_size}")
    return cfg


def config_dict(cfg) -> dict:
    """The tower fields of a CLIP config (what the tiny files store as metadata)."""
    names = SD15_TEXT if hasattr(cfg, "vocab_size") else VIT_H_14
    return {k: getattr(cfg, k) for k in names}


def _uninitialised(cls, cfg) -> nn.Module:
    """``cls(cfg)`` with its parameters allocated but not initialised: callers load every weight
    next (``loading/bundle.py`` does, strictly). transformers' random init of ViT-H/14 alone costs
    30-60 s of CPU, more than loading the file."""
    with torch.device("meta"):
        model = cls(cfg)
    buffers = {name.rsplit(".", 1)[-1] for name, _ in model.named_buffers()}
    if buffers - {"position_ids"}:  # a transformers version with other buffers: build it the slow way
        return cls(cfg).eval()
    model.to_empty(device="cpu")
    for module in model.modules():
        if "position_ids" in module._buffers:  # the embeddings' positions 0..n-1 (not stored in files)
            n = module._buffers["position_ids"].shape[-1]
            module._buffers["position_ids"] = torch.arange(n).expand(1, -1)
    return model.eval()


def new_text_encoder(cfg) -> nn.Module:
    """``transformers.CLIPTextModel``, parameters uninitialised (load the weights next)."""
    import transformers

    return _uninitialised(transformers.CLIPTextModel, cfg)


def new_vision_encoder(cfg, projection: bool = False) -> nn.Module:
    """``transformers.CLIPVisionModel`` (or ``...WithProjection``), parameters uninitialised."""
    import transformers

    cls = transformers.CLIPVisionModelWithProjection if projection else transformers.CLIPVisionModel
    return _uninitialised(cls, cfg)


def text_tower(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings``/``encoder``/``final_layer_norm`` of a ``CLIPTextModel``."""
    return getattr(model, "text_model", model)


def vision_tower(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings``/``pre_layrnorm``/``encoder``/``post_layernorm``."""
    return getattr(model, "vision_model", model)


class PenultimateCLIPVision(nn.Module):
    """A loaded ``transformers.CLIPVisionModel`` without its last encoder layer.

    ``forward(pixel_values)`` returns the full model's ``hidden_states[-2]`` (B, 1+P, D): the output
    of layer n-1 is the truncated model's ``last_hidden_state`` (no post-LayerNorm), so the last
    layer is neither run nor kept in memory. ``config`` stays the full model's.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.config = copy.deepcopy(model.config)
        layers = vision_tower(model).encoder.layers
        if len(layers) < 2:
            raise ValueError(f"PenultimateCLIPVision needs at least 2 encoder layers, got {len(layers)}")
        del layers[-1]
        model.config.num_hidden_layers = len(layers)
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state
