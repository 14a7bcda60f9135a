"""SD1.5 prompt -> CLIP token ids for the standalone path (ComfyUI tokenizes with its own CLIP).

``transformers.CLIPTokenizer`` reads the ``vocab.json`` + ``merges.txt`` (and the optional
``tokenizer_config.json``) of the SD1.5 ``tokenizer/`` folder, called as the official pipeline
does: ``padding="max_length", max_length=77, truncation=True`` -> ``[BOS] tokens[:75] [EOS]``
padded with SD1.5's pad token ``<|endoftext|>``.

The empty prompt — X-Dyna's default for both prompt and negative prompt — needs no files at all:
its ids are known (BOS, EOS, then EOS padding).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

__all__ = ["tokenize", "find_tokenizer_dir", "BOS_ID", "EOS_ID", "MAX_LENGTH", "TOKENIZER_FILES"]

BOS_ID = 49406  # <|startoftext|> in the CLIP vocabulary
EOS_ID = 49407  # <|endoftext|>, also SD1.5's padding token
MAX_LENGTH = 77  # SD1.5's text encoder positions
TOKENIZER_FILES = ("vocab.json", "merges.txt")
ENV_VAR = "XDYNA_TOKENIZER_DIR"


def _candidate_dirs(vocab_dir: Optional[Union[str, os.PathLike]]) -> List[Path]:
    if vocab_dir is not None:
        d = Path(vocab_dir)
        return [d, d / "tokenizer"]
    dirs = []
    if os.environ.get(ENV_VAR):
        d = Path(os.environ[ENV_VAR])
        dirs += [d, d / "tokenizer"]
    if os.environ.get("COMFYUI_DIR"):
        dirs.append(Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer")
    return dirs


def find_tokenizer_dir(vocab_dir: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """First directory holding both ``vocab.json`` and ``merges.txt``: ``vocab_dir`` (or its
    ``tokenizer/`` subfolder, i.e. a diffusers SD1.5 folder) when given; otherwise
    ``$XDYNA_TOKENIZER_DIR`` (or its ``tokenizer/``), then ``$COMFYUI_DIR/comfy/sd1_tokenizer``."""
    for d in _candidate_dirs(vocab_dir):
        if all((d / f).is_file() for f in TOKENIZER_FILES):
            return d
    return None


@lru_cache(maxsize=4)
def _load(directory: str):
    import transformers

    # a local folder: from_pretrained reads it and never contacts a hub
    return transformers.CLIPTokenizer.from_pretrained(directory, local_files_only=True)


def tokenize(prompt: Union[str, Sequence[str]], vocab_dir: Optional[Union[str, os.PathLike]] = None,
             max_length: int = MAX_LENGTH) -> torch.LongTensor:
    """Prompt(s) -> LongTensor (B, max_length) of CLIP ids (B = 1 for a single string).

    Empty prompts need no vocabulary; anything else needs the tokenizer files (see
    :func:`find_tokenizer_dir`). An explicit ``vocab_dir`` without them is an error even for the
    empty prompt.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("tokenize: no prompt given")
    found = find_tokenizer_dir(vocab_dir)
    if found is None and (vocab_dir is not None or any(p.strip() for p in prompts)):
        looked = [str(d) for d in _candidate_dirs(vocab_dir)]
        if vocab_dir is None:
            looked += [f"${v} (unset)" for v in (ENV_VAR, "COMFYUI_DIR") if not os.environ.get(v)]
        raise FileNotFoundError(
            "a non-empty prompt needs SD1.5's CLIP tokenizer files vocab.json and merges.txt: place them in "
            "models/xdyna/tokenizer/ (or use an SD1.5 diffusers folder, which has them in tokenizer/), or set "
            f"${ENV_VAR} to their folder; looked in: {', '.join(looked)}. Only the empty prompt works without them."
        )
    if found is None:
        # what the SD1.5 tokenizer gives for "": BOS, EOS, then padding with EOS
        row = [BOS_ID, EOS_ID] + [EOS_ID] * (max_length - 2)
        return torch.tensor([row] * len(prompts), dtype=torch.long)
    tok = _load(str(found.resolve()))
    return tok(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
