"""Parse-time value types of every command line (argparse ``type=``): a bad value is reported with the
option's name before anything is loaded."""
from __future__ import annotations

import argparse
import math
import re

from .working_size import check_output_size


def _fail(expected: str, text: str):
    raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        _fail("a whole number >= 1", text)
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        _fail("a whole number >= 0", text)
    return v


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        _fail("a finite number", text)
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        _fail("a positive number", text)
    return v


def seed(text: str) -> int:
    from .sampling.settings import SEED_MAX, SEED_MIN, SEED_RANGE

    try:
        v = int(text)
    except ValueError:
        _fail(SEED_RANGE, text)
    if not SEED_MIN <= v <= SEED_MAX:
        _fail(SEED_RANGE, text)
    return v


def frame_size(text: str):
    """WxH, the working size rule of :mod:`.working_size` (multiples of 8 within its bounds)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        _fail("WIDTHxHEIGHT such as 512x896", text)
    try:
        return check_output_size(int(m.group(1)), int(m.group(2)))
    except ValueError as e:  # the rule's own message says which bound and why
        raise argparse.ArgumentTypeError(str(e)) from None


def any_size(text: str):
    """WxH, any positive size (preprocessing outputs need not go to the sampler)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        _fail("WIDTHxHEIGHT such as 512x896", text)
    return int(m.group(1)), int(m.group(2))


# Storage dtypes of written model files (torch's names; the loaders map them to torch dtypes).
DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def device_name(text: str) -> str:
    if not re.fullmatch(DEVICE_PATTERN, text):
        _fail("auto, cpu, cuda, cuda:N or mps", text)
    return text


def positive_seconds(text: str) -> float:
    v = positive_float(text)
    if v == math.inf:
        _fail("a positive number of seconds", text)
    return v
