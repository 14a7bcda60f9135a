"""SD1.5 KL autoencoder (the "VAE") in the diffusers ``AutoencoderKL`` key layout.

Used by the standalone pipeline (CLI, tests); inside ComfyUI the native VAE is used instead.
Layers come from an injectable ``operations`` namespace (``torch.nn`` by default, or one of
ComfyUI's ``comfy.ops`` classes) so weight init / casting policy stays with the caller.

Layout (diffusers names, which are also what ``state_dict()`` returns)::

    encoder.conv_in, encoder.down_blocks.i.{resnets.j, downsamplers.0.conv},
    encoder.mid_block.{resnets.0, attentions.0, resnets.1}, encoder.conv_norm_out, encoder.conv_out,
    quant_conv, post_quant_conv,
    decoder.conv_in, decoder.mid_block.*, decoder.up_blocks.i.{resnets.j, upsamplers.0.conv},
    decoder.conv_norm_out, decoder.conv_out

Files in the original LDM layout (``first_stage_model.encoder.down.0.block.0...``, as found in
single-file SD1.5 checkpoints and ``vae-ft-mse-840000-ema-pruned``) go through
:func:`convert_ldm_vae_keys` first. Old diffusers attention names (``query/key/value/proj_attn``)
and 1x1-conv shaped attention weights are accepted directly by ``load_state_dict``.
"""
from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..sd15 import LATENT_CHANNELS, VAE_SCALING_FACTOR

__all__ = [
    "AutoencoderKLConfig",
    "AutoencoderKL",
]

_DIFFUSERS_DOWN_BLOCK = "DownEncoderBlock2D"
_DIFFUSERS_UP_BLOCK = "UpDecoderBlock2D"


@dataclass
class AutoencoderKLConfig:
    """Configuration with the diffusers ``AutoencoderKL`` field names (SD1.5 defaults)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: Tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = LATENT_CHANNELS
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    scaling_factor: float = VAE_SCALING_FACTOR

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if not self.block_out_channels:
            raise ValueError("AutoencoderKLConfig.block_out_channels must not be empty")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"AutoencoderKLConfig: every block_out_channels entry must be divisible by "
                    f"norm_num_groups={self.norm_num_groups}, got {self.block_out_channels}"
                )

    @classmethod
    def from_diffusers_config(cls, cfg: dict) -> "AutoencoderKLConfig":
        """Build from a diffusers ``vae/config.json`` dict; rejects variants this module does not
        implement (other block types, activations, no mid attention) instead of loading them wrongly."""
        for key, allowed in (("down_block_types", _DIFFUSERS_DOWN_BLOCK), ("up_block_types", _DIFFUSERS_UP_BLOCK)):
            types = cfg.get(key)
            if types is not None and any(t != allowed for t in types):
                raise ValueError(f"AutoencoderKL: only {allowed} blocks are supported, config has {key}={types}")
        if cfg.get("act_fn", "silu") != "silu":
            raise ValueError(f"AutoencoderKL: only act_fn='silu' is supported, got {cfg.get('act_fn')!r}")
        if not cfg.get("mid_block_add_attention", True):
            raise ValueError("AutoencoderKL: mid_block_add_attention=False is not supported")
        if cfg.get("use_quant_conv", True) is False or cfg.get("use_post_quant_conv", True) is False:
            raise ValueError("AutoencoderKL: configs without quant_conv/post_quant_conv are not supported")
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in cfg.items() if k in names}
        if kwargs.get("scaling_factor") is None:
            kwargs.pop("scaling_factor", None)
        return cls(**kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderKLConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------------
# building blocks


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv x2 with a 1x1 shortcut when the width changes (no time embedding)."""

    def __init__(self, in_channels, out_channels, groups, eps, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.norm1 = operations.GroupNorm(groups, in_channels, eps=eps, affine=True, **kw)
        self.conv1 = operations.Conv2d(in_channels, out_channels, 3, padding=1, **kw)
        self.norm2 = operations.GroupNorm(groups, out_channels, eps=eps, affine=True, **kw)
        self.conv2 = operations.Conv2d(out_channels, out_channels, 3, padding=1, **kw)
        self.conv_shortcut = (
            operations.Conv2d(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None
        )

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv after padding only right/bottom (the LDM VAE's asymmetric padding)."""

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, stride=2, padding=0, device=device, dtype=dtype)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


def _phase_weights(w: torch.Tensor) -> torch.Tensor:
    """3x3 kernel (O, I, 3, 3) -> the four 2x2 kernels (4, O, I, 2, 2) that give the same output
    as "nearest x2, then the 3x3 conv (padding 1)", one per output parity (row a, column b).

    Output row 2i+a reads upsampled rows 2i+a-1..2i+a+1, i.e. input rows i-1, i, i (a = 0) or
    i, i, i+1 (a = 1): the taps that land on the same input row are summed (in fp32)."""
    w = w.float()

    def fold(k, dim):  # along a kernel axis: a=0 -> [k0, k1+k2], a=1 -> [k0+k1, k2]
        k0, k1, k2 = k.unbind(dim)
        return torch.stack([torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)])

    rows = fold(w, 2)                                        # (2, O, I, 2, 3)
    return torch.stack([fold(rows[a], 3) for a in (0, 1)]).flatten(0, 1)   # (4, O, I, 2, 2), index 2a+b


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv.

    Computed as four 2x2 convs on the input, one per output parity (``_phase_weights``), written
    interleaved: the same sums with 4 taps instead of 9 per output value, and no upsampled copy of
    the input. ``subpixel = False`` (class or instance) runs the literal upsample-then-conv, for the
    benchmark's before/after (bench/bench_decode.py)."""

    subpixel = True

    def __init__(self, channels, operations=nn, device=None, dtype=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)

    def _plain_weights(self):
        """(weight, bias) when the conv is torch's own (it computes with its stored tensors as they
        are); None for layers with their own forward (ComfyUI's casting ops, patches), which run as is."""
        conv = self.conv
        if type(conv).forward is not nn.Conv2d.forward or conv.weight.is_meta:
            return None
        return conv.weight, conv.bias

    def _kernels(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The folded kernels, kept while the weight is the same tensor, unmodified (folding a
        512-channel kernel costs more than the convs at a 16x16 latent)."""
        if w.requires_grad and torch.is_grad_enabled():
            return _phase_weights(w).to(dtype)      # training: through autograd, never cached
        # the same tensor object, storage (``.data =`` and ``Module.to`` swap it in place), version
        # (in-place writes), dtype, device; and inference mode (its tensors cannot enter autograd)
        key = (w._version, w.data_ptr(), w.device, dtype, torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_folded")
        if cached is not None and cached[0]() is w and cached[1] == key:
            return cached[2]
        with torch.no_grad():
            kernels = _phase_weights(w).to(dtype)
        self.__dict__["_folded"] = (weakref.ref(w), key, kernels)
        return kernels

    def forward(self, x):
        plain = self._plain_weights() if self.subpixel else None
        if plain is None:
            dtype = x.dtype
            # nearest upsampling has no bf16 kernel on some torch builds; it is exact in fp32
            if dtype == torch.bfloat16:
                x = x.float()
            x = F.interpolate(x, scale_factor=2.0, mode="nearest").to(dtype)
            return self.conv(x)
        w, bias = plain
        b, _, h, wd = x.shape
        o = w.shape[0]
        kernels = self._kernels(w, x.dtype)
        bias = bias.to(x.dtype) if bias is not None else None
        xp = F.pad(x, (1, 1, 1, 1))
        out = x.new_empty(b, o, h, 2, wd, 2)
        for a in (0, 1):
            for c in (0, 1):
                out[:, :, :, a, :, c] = F.conv2d(xp[:, :, a:a + h + 1, c:c + wd + 1], kernels[2 * a + c], bias)
        return out.view(b, o, 2 * h, 2 * wd)


# Old diffusers (< 0.14) and LDM names of the mid-block attention projections.
_ATTN_RENAMES = {
    "query.": "to_q.",
    "key.": "to_k.",
    "value.": "to_v.",
    "proj_attn.": "to_out.0.",
    "q.": "to_q.",
    "k.": "to_k.",
    "v.": "to_v.",
    "proj_out.": "to_out.0.",
    "norm.": "group_norm.",
}


class VAEAttention(nn.Module):
    """Single-head spatial self-attention with a residual, as in the VAE mid blocks."""

    def __init__(self, channels, groups, eps, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.group_norm = operations.GroupNorm(groups, channels, eps=eps, affine=True, **kw)
        self.to_q = operations.Linear(channels, channels, bias=True, **kw)
        self.to_k = operations.Linear(channels, channels, bias=True, **kw)
        self.to_v = operations.Linear(channels, channels, bias=True, **kw)
        self.to_out = nn.ModuleList([operations.Linear(channels, channels, bias=True, **kw)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Accept old diffusers / LDM names and (C, C, 1, 1) conv weights for the projections.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in _ATTN_RENAMES.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            value = state_dict.pop(key)
            if rest.endswith("weight") and not rest.startswith("group_norm") and value.ndim == 4:
                value = value[:, :, 0, 0]
            state_dict[prefix + rest] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q = self.to_q(t).unsqueeze(1)  # one head: (B, 1, HW, C)
        k = self.to_k(t).unsqueeze(1)
        v = self.to_v(t).unsqueeze(1)
        a = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        a = self.to_out[0](a)
        return x + a.transpose(1, 2).reshape(b, c, h, w)


class MidBlock2D(nn.Module):
    def __init__(self, channels, groups, eps, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(channels, channels, groups, eps, **kw), ResnetBlock2D(channels, channels, groups, eps, **kw)]
        )
        self.attentions = nn.ModuleList([VAEAttention(channels, groups, eps, **kw)])

    def forward(self, x):
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_ch, out_ch, num_layers, groups, eps, add_downsample, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, groups, eps, **kw) for i in range(num_layers)]
        )
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch, **kw)]) if add_downsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_ch, out_ch, num_layers, groups, eps, add_upsample, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, groups, eps, **kw) for i in range(num_layers)]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch, **kw)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        ch = cfg.block_out_channels
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.conv_in = operations.Conv2d(cfg.in_channels, ch[0], 3, padding=1, device=device, dtype=dtype)
        blocks = []
        prev = ch[0]
        for i, c in enumerate(ch):
            last = i == len(ch) - 1
            blocks.append(DownEncoderBlock2D(prev, c, cfg.layers_per_block, g, eps, not last, **kw))
            prev = c
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock2D(ch[-1], g, eps, **kw)
        self.conv_norm_out = operations.GroupNorm(g, ch[-1], eps=eps, affine=True, device=device, dtype=dtype)
        # mean and log-variance stacked on channels
        self.conv_out = operations.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x):
        x = self.conv_in(x)
        for blk in self.down_blocks:
            x = blk(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig, operations=nn, device=None, dtype=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        ch = tuple(reversed(cfg.block_out_channels))
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.conv_in = operations.Conv2d(cfg.latent_channels, ch[0], 3, padding=1, device=device, dtype=dtype)
        self.mid_block = MidBlock2D(ch[0], g, eps, **kw)
        blocks = []
        prev = ch[0]
        for i, c in enumerate(ch):
            last = i == len(ch) - 1
            # the decoder has one resnet more per level than the encoder
            blocks.append(UpDecoderBlock2D(prev, c, cfg.layers_per_block + 1, g, eps, not last, **kw))
            prev = c
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = operations.GroupNorm(g, ch[-1], eps=eps, affine=True, device=device, dtype=dtype)
        self.conv_out = operations.Conv2d(ch[-1], cfg.out_channels, 3, padding=1, device=device, dtype=dtype)

    def forward(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for blk in self.up_blocks:
            x = blk(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# --------------------------------------------------------------------------------------------


class AutoencoderKL(nn.Module):
    """KL autoencoder: ``encode`` gives the diagonal-Gaussian posterior, ``decode`` the image.

    Images are (B, 3, H, W) in [-1, 1] with H, W multiples of 2**(levels-1) (8 for SD1.5);
    latents are (B, latent_channels, H/8, W/8) *unscaled* (multiply by
    ``config.scaling_factor`` for the diffusion model, divide before ``decode``).
    """

    def __init__(self, config: Optional[AutoencoderKLConfig] = None, operations=nn, device=None, dtype=None):
        super().__init__()
        self.config = config if config is not None else AutoencoderKLConfig()
        cfg = self.config
        self.encoder = Encoder(cfg, operations, device, dtype)
        self.decoder = Decoder(cfg, operations, device, dtype)
        self.quant_conv = operations.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1, device=device, dtype=dtype)
        self.post_quant_conv = operations.Conv2d(cfg.latent_channels, cfg.latent_channels, 1, device=device, dtype=dtype)

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    def _param_dtype(self):
        return self.post_quant_conv.weight.dtype

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (B, C_in, H, W) in [-1, 1] -> (mean, logvar), each (B, latent_channels, H/f, W/f)."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"AutoencoderKL.encode expects (B, {self.config.in_channels}, H, W) images in [-1, 1], "
                f"got shape {tuple(x.shape)}"
            )
        f = self.downscale_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"AutoencoderKL.encode: H and W must be multiples of {f}, got {tuple(x.shape[-2:])}")
        moments = self.quant_conv(self.encoder(x.to(self._param_dtype())))
        mean, logvar = moments.chunk(2, dim=1)
        # same clamp as the reference posterior, keeps exp() finite
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """mean + std * eps with eps ~ N(0, 1) drawn from ``generator``.

        eps is drawn on the generator's device (then moved), like diffusers' ``randn_tensor``, so
        a CPU generator gives the same latent whatever device the VAE runs on.
        """
        std = torch.exp(0.5 * logvar)
        rand_device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=rand_device, dtype=mean.dtype).to(mean.device)
        return mean + std * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, h, w), unscaled -> images (B, C_out, f*h, f*w), nominally in [-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"AutoencoderKL.decode expects (B, {self.config.latent_channels}, h, w) latents, got {tuple(z.shape)}"
            )
        return self.decoder(self.post_quant_conv(z.to(self._param_dtype())))

    def forward(self, x, generator=None, sample_posterior: bool = False):
        mean, logvar = self.encode(x)
        z = self.sample_posterior(mean, logvar, generator) if sample_posterior else mean
        return self.decode(z)

