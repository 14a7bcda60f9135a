"""CLIP byte-level BPE tokenizer for SD1.5 prompts (standalone pipeline; ComfyUI uses its own).

Reads the ``vocab.json`` + ``merges.txt`` pair of the SD1.5 ``tokenizer/`` folder. Behaviour
matches ``transformers.CLIPTokenizer`` (slow, without ftfy) called as SD pipelines do:
``padding="max_length", max_length=77, truncation=True`` -> ``[BOS] tokens[:75] [EOS] [EOS]...``
(SD1.5's pad token is ``<|endoftext|>``).

The empty prompt — X-Dyna's default for both prompt and negative prompt — needs no files at all.
"""
from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

__all__ = ["CLIPTokenizer", "tokenize", "find_tokenizer_dir", "BOS_ID", "EOS_ID", "MAX_LENGTH"]

BOS_ID = 49406  # <|startoftext|> in the CLIP vocabulary
EOS_ID = 49407  # <|endoftext|>, also the padding token for SD1.5
MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# CLIP uses only the first 49152 - 256 - 2 merges of its merges file
_NUM_MERGES = 49152 - 256 - 2
ENV_VAR = "XDYNA_TOKENIZER_DIR"


@lru_cache(maxsize=None)
def _bytes_to_unicode() -> Dict[int, str]:
    """Reversible byte -> printable character table of GPT-2/CLIP BPE (whitespace and control
    bytes are moved to code points >= 256 so BPE symbols never contain them)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _normalise(text: str) -> str:
    """Text clean-up of the HF tokenizer's no-ftfy path: drop NUL/U+FFFD/control characters, map
    whitespace to spaces, isolate CJK ideographs, NFC, lowercase, single spaces."""
    out = []
    for ch in text:
        cp = ord(ch)
        if ch in (" ", "\t", "\n", "\r") or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif cp == 0 or cp == 0xFFFD or unicodedata.category(ch).startswith("C"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFC", "".join(out))
    return " ".join(t.lower() for t in text.split())


class CLIPTokenizer:
    """Byte-level BPE with the CLIP vocabulary (``vocab.json``) and merge list (``merges.txt``)."""

    def __init__(self, vocab_file: Union[str, os.PathLike], merges_file: Union[str, os.PathLike]):
        try:
            import regex
        except ImportError as e:  # pragma: no cover - regex ships with every ComfyUI/transformers install
            raise ImportError("CLIPTokenizer needs the 'regex' package for Unicode classes: pip install regex") from e
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder: Dict[str, int] = json.load(f)
        with open(merges_file, encoding="utf-8") as f:
            lines = f.read().strip().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [tuple(line.split()) for line in lines[:_NUM_MERGES]]
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        for tok in (BOS_TOKEN, EOS_TOKEN):
            if tok not in self.encoder:
                raise ValueError(f"CLIPTokenizer: {vocab_file} has no {tok!r} entry; is it a CLIP vocab.json?")
        self.bos_id = self.encoder[BOS_TOKEN]
        self.eos_id = self.encoder[EOS_TOKEN]
        self.byte_encoder = _bytes_to_unicode()
        self._pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._special = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")
        self._cache: Dict[str, List[str]] = {BOS_TOKEN: [BOS_TOKEN], EOS_TOKEN: [EOS_TOKEN]}

    @classmethod
    def from_dir(cls, directory: Union[str, os.PathLike]) -> "CLIPTokenizer":
        d = Path(directory)
        return cls(d / "vocab.json", d / "merges.txt")

    def _bpe(self, token: str) -> List[str]:
        if token in self._cache:
            return self._cache[token]
        # the last symbol carries the end-of-word marker
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            ranked = [(self.bpe_ranks.get(p, None), i) for i, p in enumerate(zip(word[:-1], word[1:], strict=True))]
            ranked = [(r, i) for r, i in ranked if r is not None]
            if not ranked:
                break
            # merge every occurrence of the best-ranked adjacent pair, left to right
            _, j = min(ranked)
            first, second = word[j], word[j + 1]
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without BOS/EOS or padding."""
        ids: List[int] = []
        # literal special tokens are kept whole, as the HF tokenizer does for its added tokens
        for chunk in self._special.split(text):
            if chunk in (BOS_TOKEN, EOS_TOKEN):
                ids.append(self.encoder[chunk])
                continue
            for piece in self._pattern.findall(_normalise(chunk)):
                if piece.lower() in (BOS_TOKEN, EOS_TOKEN):
                    ids.append(self.encoder[piece.lower()])
                    continue
                mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder.get(sym, self.eos_id) for sym in self._bpe(mapped))
        return ids

    def __call__(self, prompt: Union[str, Sequence[str]], max_length: int = MAX_LENGTH) -> torch.LongTensor:
        """(B, max_length) ids: BOS, up to max_length-2 tokens, EOS, EOS padding."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        rows = []
        for p in prompts:
            body = self.encode(p)[: max_length - 2]
            row = [self.bos_id] + body + [self.eos_id]
            rows.append(row + [self.eos_id] * (max_length - len(row)))
        return torch.tensor(rows, dtype=torch.long)


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
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            return d
    return None


@lru_cache(maxsize=4)
def _load(directory: str) -> CLIPTokenizer:
    return CLIPTokenizer.from_dir(directory)


def tokenize(prompt: Union[str, Sequence[str]], vocab_dir: Optional[Union[str, os.PathLike]] = None,
             max_length: int = MAX_LENGTH) -> torch.LongTensor:
    """Prompt(s) -> LongTensor (B, 77) of CLIP ids (B = 1 for a single string).

    Empty prompts need no vocabulary ([49406, 49407, 49407, ...]); anything else needs the
    tokenizer files (see :func:`find_tokenizer_dir`). An explicit ``vocab_dir`` without them is an
    error even for the empty prompt.
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
            "CLIP tokenizer files vocab.json + merges.txt not found; looked in: " + ", ".join(looked)
            + f". Pass the SD1.5 'tokenizer' folder (or the SD1.5 diffusers folder) as vocab_dir, or set "
            f"${ENV_VAR}. Only the empty prompt works without them."
        )
    if found is None:
        row = [BOS_ID, EOS_ID] + [EOS_ID] * (max_length - 2)
        return torch.tensor([row] * len(prompts), dtype=torch.long)
    return _load(str(found.resolve()))(prompts, max_length=max_length)
