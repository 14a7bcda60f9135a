import importlib
import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# Tiny models are dominated by per-op overhead: one thread is faster on the 2-core CI machine and
# matches the thread count the goldens were made with.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


class _PackAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Tests import the node modules as ``nodes.x`` and the core as ``xdyna_core.x``, while the node
    modules import the core package-relatively (``from ..xdyna_core ...``), as ComfyUI imports the pack.
    So ``nodes.x`` is ``xdyna_pack.nodes.x`` (the repository as a package), and ``xdyna_pack.xdyna_core.x``
    is the very module ``xdyna_core.x``: one copy of each module, whichever name a test uses."""

    PACK = "xdyna_pack"

    def _target(self, fullname):
        if fullname == "nodes" or fullname.startswith("nodes."):
            return f"{self.PACK}.{fullname}"
        core = f"{self.PACK}.xdyna_core"
        if fullname == core or fullname.startswith(core + "."):
            return fullname[len(self.PACK) + 1:]
        return None

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.PACK:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        if self._target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec):
        if spec.name == self.PACK:
            return None
        return importlib.import_module(self._target(spec.name))

    def exec_module(self, module):
        if module.__name__ == self.PACK and getattr(module, "__path__", None) is not None:
            module.__path__[:] = [str(REPO)]


if not any(isinstance(f, _PackAliases) for f in sys.meta_path):
    sys.meta_path.insert(0, _PackAliases())


# The repository carries the data its tests read (tests/data/README.md); an environment variable
# points a run at another copy.
DATA = Path(__file__).resolve().parent / "data"


def golden_dir() -> Path:
    return Path(os.environ.get("XDYNA_GOLDEN_DIR", DATA / "golden"))


def assets_dir() -> Path:
    return Path(os.environ.get("XDYNA_ASSETS_DIR", DATA / "assets"))


def spec_dir() -> Path:
    return Path(os.environ.get("XDYNA_SPEC_DIR", DATA / "spec"))


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
