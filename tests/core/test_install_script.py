"""install.sh: which torch it installs for each --torch choice, that an installed torch is kept and not
imported, and that a missing extractor fails the install only when asked for by name (--mediapipe).
Dry runs (pip commands printed, not run) with a Python that sees no site-packages."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="install.sh is a bash script")


@pytest.fixture
def bare_python(tmp_path):
    """A Python with no packages at all (no torch, no numpy), plus PYTHONPATH from `path`."""
    def make(path=""):
        exe = tmp_path / "python"
        exe.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec "{sys.executable}" -S "$@"\n')
        exe.chmod(0o755)
        return exe
    return make


def install(*args, python=None):
    env = {k: v for k, v in os.environ.items() if k != "XDYNA_TORCH"}
    if python is not None:
        env["PYTHON"] = str(python)
    r = subprocess.run(["bash", str(REPO / "install.sh"), "--dry-run", *args], env=env, capture_output=True,
                       text=True, timeout=120)
    return r, [line.split(" -m pip ", 1)[1] for line in r.stdout.splitlines() if line.startswith("would run:")]


@pytest.mark.parametrize("choice, torch_line", [
    (None, "install -q torch==2.13.0"),
    ("pypi", "install -q torch==2.13.0"),
    ("cpu", "install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"),
    ("cuda", "install -q torch==2.13.0" if sys.platform == "linux" and os.uname().machine == "x86_64"
     else "install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"),
    ("skip", None),
])
def test_torch_choice_when_there_is_none(bare_python, choice, torch_line):
    if sys.platform == "darwin" and choice in ("cpu", "cuda"):
        pytest.skip("macOS: the CPU build is PyPI's, and there is no CUDA build")
    r, pips = install(*(["--torch", choice] if choice else []), python=bare_python())
    assert r.returncode == 0, r.stderr
    torch_calls = [p for p in pips if "torch==" in p]
    assert torch_calls == ([torch_line] if torch_line else [])
    req = pips.index(next(p for p in pips if p.endswith("-r requirements.txt")))
    assert all(pips.index(t) < req for t in torch_calls)  # torch first: the rest is constrained to it
    said = r.stdout.splitlines()[0]  # what is installed, said before the download
    if choice in (None, "pypi"):
        assert "CUDA 13.0 on Linux x86_64" in said and "--torch cpu for the CPU build" in said, said
    elif choice == "skip":
        assert "no torch installed" in said, said
    else:
        assert f"{choice.upper()}" in said.upper(), said


def test_installed_torch_is_kept_and_not_imported(bare_python, tmp_path):
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    marker = tmp_path / "torch_was_imported"
    (site / "torch" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (site / "torch-2.13.0+cu130.dist-info").mkdir()
    (site / "torch-2.13.0+cu130.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\n"
                                                                    "Version: 2.13.0+cu130\n")
    r, pips = install("--torch", "cpu", python=bare_python(site))
    assert r.returncode == 0, r.stderr
    assert "keeping the installed torch 2.13.0+cu130" in r.stdout
    assert not any("torch==" in p for p in pips), pips  # no torch install: the CUDA build stays
    assert not marker.exists()  # found from its metadata: importing it before numpy warns


def test_missing_extractor_fails_only_when_asked_for(bare_python):
    python = bare_python()
    r, _ = install(python=python)
    assert r.returncode == 0, r.stderr
    r, _ = install("--test", python=python)  # installs MediaPipe where it can, but did not ask for it by name
    assert r.returncode == 0, r.stderr
    r, _ = install("--mediapipe", python=python)
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("install.sh: --mediapipe: the MediaPipe pose extractor does not open"), line


def test_bad_torch_choice_is_one_line():
    r, pips = install("--torch", "gpu")
    assert r.returncode == 2 and not pips
    assert r.stderr.strip() == "install.sh: --torch (or XDYNA_TORCH) must be pypi, cpu, cuda or skip, got 'gpu'"
