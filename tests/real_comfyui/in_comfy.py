"""Scripts run in ComfyUI's own venv, with ComfyUI importable (``--cpu``) and this pack imported the
way ComfyUI imports a custom node folder: as a package named after the folder, so the pack's
package-relative imports work and its ``nodes`` never shadows ComfyUI's ``nodes.py``. The pack's
``__init__`` is not run (no node registration): a script imports the modules it tests with
``ours("nodes.loaders")``."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.real_comfyui.support import EXT_NAME, REPO

PRELUDE = """
import importlib, sys, types
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, COMFY)
import comfy.options
comfy.options.enable_args_parsing()
_pack = types.ModuleType(PACK)
_pack.__path__, _pack.__package__ = [REPO], PACK
sys.modules[PACK] = _pack


def ours(module):
    return importlib.import_module(PACK + "." + module)
"""


def run_in_comfy(body: str, tmp_path: Path, name: str, timeout: float = 600, **values) -> str:
    """Run ``body`` after the prelude (``values`` become module-level constants of the script); it
    must print "ok" last. Returns its stdout."""
    consts = dict(COMFY=os.environ["COMFYUI_DIR"], REPO=str(REPO), PACK=EXT_NAME, **values)
    script = tmp_path / f"{name}.py"
    script.write_text("".join(f"{k} = {v!r}\n" for k, v in consts.items()) + PRELUDE + body)
    python = Path(os.environ["COMFY_VENV"]) / "bin" / "python"
    r = subprocess.run([str(python), str(script)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout
