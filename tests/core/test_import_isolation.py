"""xdyna_core must never import ComfyUI (`comfy`, `folder_paths`, `nodes`)."""
import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "xdyna_core"
FORBIDDEN = {"comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "server", "execution"}


def test_no_comfyui_imports_in_core_sources():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(CORE.parent)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_core_imports_without_comfyui_present():
    code = (
        "import sys, importlib, pkgutil, xdyna_core\n"
        "for m in pkgutil.walk_packages(xdyna_core.__path__, 'xdyna_core.'):\n"
        "    if m.name.endswith('__main__'): continue\n"
        "    try: importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        if any(f in str(e) for f in ('comfy', 'folder_paths')): raise\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'comfy', 'folder_paths', 'comfy_extras'}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CORE.parent)
