import os
from pathlib import Path

import pytest
import torch

# Tiny models are dominated by per-op overhead: one thread is faster on the 2-core CI machine and
# matches the thread count the goldens were made with.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    return Path(os.environ.get("XDYNA_GOLDEN_DIR", REPO.parent / "shared" / "golden"))


def assets_dir() -> Path:
    return Path(os.environ.get("XDYNA_ASSETS_DIR", REPO.parent / "shared" / "assets"))


def spec_dir() -> Path:
    return Path(os.environ.get("XDYNA_SPEC_DIR", REPO.parent / "shared" / "spec"))


@pytest.fixture(scope="session")
def golden():
    """Loader for golden cases: golden('unet_forward') -> (meta dict, {name: fp32 tensor})."""
    import json

    from safetensors.torch import load_file

    root = golden_dir()
    if not (root / "INDEX.json").exists():
        pytest.fail(f"golden directory not found: {root} (set XDYNA_GOLDEN_DIR)")

    cache = {}

    def load(name):
        if name not in cache:
            meta = json.loads((root / f"{name}.json").read_text())
            tensors = load_file(str(root / f"{name}.safetensors"))
            tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
            cache[name] = (meta, tensors)
        return cache[name]

    return load
