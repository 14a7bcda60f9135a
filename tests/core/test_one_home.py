"""One home per concept: each guard fails when a second copy of a rule, a constant or a helper
appears, or when two modules import each other again."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from xdyna_core.pixels import to_uint8

CORE = REPO / "xdyna_core"
FRONTS = (CORE, REPO / "nodes")


def _sources(roots=FRONTS):
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            yield path, path.read_text(encoding="utf-8")


def _places(pattern, roots=FRONTS):
    rx = re.compile(pattern)
    return [f"{p.relative_to(REPO)}:{i}" for p, text in _sources(roots)
            for i, line in enumerate(text.splitlines(), 1) if rx.search(line.split("#")[0])]


# ------------------------------------------------------------------ constants and rules


def test_sd_vae_scale_has_one_home():
    assert _places(r"0\.18215") == ["xdyna_core/sd15.py:8"], "use xdyna_core.sd15.VAE_SCALING_FACTOR"


def test_size_rule_has_one_home():
    assert _places(r"%\s*8\b|multiple of 8|\bSIZE_MULTIPLE\s*=") == ["xdyna_core/working_size.py:19"], \
        "use xdyna_core.working_size (check_output_size, SIZE_RULE)"


def test_float_to_uint8_has_one_home():
    """x*255 rounded (either way) to uint8 is written once, in pixels.to_uint8."""
    places = _places(r"\*\s*255(\.0*)?\s*\+\s*0?\.5|\*\s*255(\.0*)?\s*\)\s*\.round\(|255(\.0*)?\)\.round\(")
    assert [p.split(":")[0] for p in places] == ["xdyna_core/pixels.py"] * 2, places


def test_atomic_replace_has_one_home():
    """Every file the core writes goes through outputs (temporary file, fsync, rename)."""
    assert [p.split(":")[0] for p in _places(r"os\.replace\(|os\.rename\(|\.rename\(|os\.fsync\(", (CORE,))] == \
        ["xdyna_core/outputs.py"] * 2


# ------------------------------------------------------------------ float -> uint8


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_to_uint8_rounds_half_up_and_clamps(kind):
    k = np.arange(256, dtype=np.float64)
    cases = {
        "exact": (k / 255, k),                                   # k/255 -> k, every level
        "half": ((k[:-1] + 0.5) / 255, k[:-1] + 1),              # (k + 0.5)/255 -> k + 1 (half up)
        "below_half": ((k[:-1] + 0.49) / 255, k[:-1]),
        "edges": (np.array([0.0, 1.0, -0.25, 1.5, 0.5 / 255, 254.5 / 255]), np.array([0, 255, 0, 255, 1, 255])),
    }
    for name, (x, want) in cases.items():
        x32 = x.astype(np.float32)  # IMAGE batches and decoded frames are float32
        got = to_uint8(torch.from_numpy(x32)).numpy() if kind == "torch" else to_uint8(x32)
        assert got.dtype == np.uint8 and got.tolist() == want.astype(np.uint8).tolist(), name


def test_to_uint8_keeps_type_and_shape():
    t = to_uint8(torch.rand(2, 3, 4, 3, dtype=torch.float16))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == (2, 3, 4, 3)
    a = to_uint8(np.full((1, 2, 3), 0.5, dtype=np.float64))
    assert isinstance(a, np.ndarray) and a.shape == (1, 2, 3) and (a == 128).all()


# ------------------------------------------------------------------ import circles


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set) -> set:
    """Modules of xdyna_core this file imports, at the top or inside a function."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}  # `from . import keys` imports a module
    return {m for m in found if m in modules and m != me}


def test_no_import_cycles_in_core():
    paths = {(_module_name(p)): p for p in CORE.rglob("*.py")}
    graph = {m: _imports(p, set(paths)) for m, p in paths.items()}
    # a package's __init__ importing its own submodules is not a cycle of concepts
    graph = {m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
             for m, deps in graph.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other (directly or around a circle): {cycles}"


def test_loading_imports_models_at_the_top():
    """loading depends on models: importing them inside functions only hides the dependency."""
    late = []
    for path in sorted((CORE / "loading").glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{path.name}:{n.lineno}" for n in ast.walk(fn)
                         if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("models")]
    assert not late, late


# ------------------------------------------------------------------ one model-file recogniser


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from xdyna_core.loading.tiny import write_tiny_set

    root = tmp_path_factory.mktemp("models")
    write_tiny_set(root, seed=3, dtype="fp32")
    return root


def test_dropdowns_and_command_line_recognise_files_by_one_rule(tiny, tmp_path):
    """Content (safetensors header, torch-zip index) before name before unknown, for the dropdowns
    (serves) and the command line's lookup (find_model_files) alike; the index is read without
    reading tensor data (a NaN in the weights is found only when they load)."""
    import shutil

    from safetensors.torch import load_file

    from xdyna_core.loading import recognise as R
    from xdyna_core.loading.bundle import find_model_files
    from xdyna_core.loading.files import CheckpointError, load_state_dict

    models = tmp_path / "models"
    shutil.copytree(tiny, models)
    xd = models / "xdyna"
    face = load_file(str(xd / "xdyna_face_controlnet.safetensors"))
    first = next(k for k, v in face.items() if v.is_floating_point())
    face[first] = face[first].clone().fill_(float("nan"))
    torch.save({"state_dict": {"module." + k: v for k, v in face.items()}}, xd / "model_a.ckpt")  # neutral name
    (xd / "xdyna_face_controlnet.safetensors").unlink()
    (xd / "xdyna_pose_controlnet.safetensors").rename(xd / "face_controlnet_v2.safetensors")  # misleading name
    (xd / "sface_controlnet.ckpt").write_bytes(b"not a checkpoint")  # unreadable: its name speaks
    (xd / "notes.bin").write_bytes(b"nothing")                        # unreadable, name says nothing

    assert R.file_role(xd / "model_a.ckpt") == R.FACE_CONTROLNET
    assert R.file_role(xd / "face_controlnet_v2.safetensors") == R.POSE_CONTROLNET
    assert R.file_role(xd / "sface_controlnet.ckpt") == R.FACE_CONTROLNET
    assert R.file_role(xd / "notes.bin") is None and R.serves(xd / "notes.bin", R.UNET)
    assert not R.serves(xd / "model_a.ckpt", R.POSE_CONTROLNET)

    files = find_model_files(models)
    assert files.pose_controlnet.name == "face_controlnet_v2.safetensors"
    assert files.face_controlnet.name == "model_a.ckpt"  # known by content beats known by name ("face" in it)
    for role in (R.UNET, R.POSE_CONTROLNET, R.FACE_CONTROLNET, R.IP_ADAPTER, R.CLIP_VISION, R.SD15):
        assert R.serves(getattr(files, role), role), role  # what the command line picks, the dropdown lists
    with pytest.raises(CheckpointError, match="non-finite"):
        load_state_dict(xd / "model_a.ckpt")


def test_dependency_lists_have_one_source():
    """pyproject.toml takes its dependencies and extras from the requirements files (what
    ComfyUI-Manager installs is what `pip install .` installs): no list of its own to drift."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from tests.conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "dependencies" not in project["project"] and "optional-dependencies" not in project["project"]
    assert set(project["project"]["dynamic"]) >= {"dependencies", "optional-dependencies"}
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    for extra, spec in dynamic["optional-dependencies"].items():
        (name,) = spec["file"]
        assert name == f"requirements-{extra}.txt" and (REPO / name).is_file(), (extra, spec)
