"""What a weights file holds, read from its header without loading the weights.

`read_shapes(path)` -> ``{key: shape}`` (keys cleaned as the loaders clean them): the JSON header of a
.safetensors file, or the pickle of a torch zip checkpoint with its tensors memory-mapped (their data
is never read). Legacy (pre-zip) pickles have no index: they return None (recognised only when
loaded). `recognise(path)` adds the kind (`keys.identify`) and, for a ControlNet, the number of
condition channels (3 = pose, 6 = S-Face), so the command line can name a wrong or swapped file in
a second, before gigabytes of weights are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import keys as K
from .files import CheckpointError, load_state_dict, resolve_file

CONTROLNET_COND_KEY = "controlnet_cond_embedding.conv_in.weight"
MOTION_PE_SUFFIX = ".pos_encoder.pe"   # motion modules' positional encoding (1, max_len, C)


def read_shapes(path) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Tensor names and shapes of a weights file or diffusers folder, or None for legacy pickles."""
    path, fmt = resolve_file(path)
    if fmt == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the .safetensors header ({e}); the file is probably "
                                  f"truncated or corrupt") from e
        try:
            return K.normalize_keys(shapes)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from e
    if fmt == "torch_zip":  # memory-mapped: only the pickled index is read here
        return {k: tuple(v.shape) for k, v in load_state_dict(path).items()}
    return None


@dataclass(frozen=True)
class Header:
    path: Path
    kind: Optional[str]                       # keys.identify kind; None when unknown before loading
    shapes: Optional[Dict[str, Tuple[int, ...]]]

    @property
    def condition_channels(self) -> Optional[int]:
        """ControlNet condition channels (3 pose, 6 S-Face), None if not a ControlNet."""
        shape = (self.shapes or {}).get(CONTROLNET_COND_KEY)
        return int(shape[1]) if shape is not None and len(shape) > 1 else None

    @property
    def motion_max_len(self) -> Optional[int]:
        """Frames the UNet's motion modules take at most (their positional encoding's length), None when
        the file holds no motion module."""
        lengths = [shape[1] for k, shape in (self.shapes or {}).items() if k.endswith(MOTION_PE_SUFFIX)]
        return int(min(lengths)) if lengths else None


def recognise(path) -> Header:
    shapes = read_shapes(path)
    return Header(Path(path), None if shapes is None else K.identify(shapes), shapes)
