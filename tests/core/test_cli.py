"""The command line is one parser tree (xdyna_core/cli): `--help` shows every sub-command with its
options, a usage error in any sub-command is one line with exit status 2, and every error class the
core raises for the user shares one base (and one exit code)."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from xdyna_core.cli import build_parser, main

# Every leaf command and options only it has (so a command whose options vanished from --help fails).
COMMANDS = {
    ("animate",): ["--reference", "--keypoints", "--context-length", "--panels"],
    ("demo",): ["--work", "--memory"],
    ("preprocess", "pose"): ["--max-people", "--align-reference"],
    ("preprocess", "face"): ["--no-carry", "--insightface-dir"],
    ("preprocess", "render"): ["keypoints", "--fps"],
    ("convert",): ["--dtype", "input", "output"],
    ("tiny",): ["--with-variants"],
    ("batch",): ["--workflow", "--per-server", "--job-timeout"],
    ("report",): ["--window-offsets", "--latent"],
}


def _cli(*args, prog="-m"):
    cmd = [sys.executable, "-m", "xdyna_core", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_help_lists_every_command_with_its_options():
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for words, options in COMMANDS.items():
        line = next((ln for ln in text.split("\n\n") if f"xdyna_core {' '.join(words)} [" in ln), None)
        assert line is not None, f"{' '.join(words)} missing from --help"
        for opt in options:
            assert opt in line, f"{opt} of {' '.join(words)} missing from --help"


def test_help_covers_the_parser_tree():
    """No sub-command is left out of COMMANDS above (a new one must be listed, so its help is tested)."""
    from xdyna_core.cli import _leaf_parsers

    leaves = {tuple(p.prog.split()[3:]) for p in _leaf_parsers(build_parser().commands)}
    assert leaves == set(COMMANDS)


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_usage_error_is_one_line_exit_2(words):
    proc = _cli(*words, "--no-such-option")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # argparse names missing required arguments before unknown ones: either is the one line
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "--no-such-option" in lines[0] or "required" in lines[0], proc.stderr
    assert f"xdyna_core {' '.join(words)} --help" in lines[0]   # the sub-command's own name, as typed


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_each_command_has_its_own_help(words):
    proc = _cli(*words, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m xdyna_core {' '.join(words)} ")
    assert all(opt in proc.stdout for opt in COMMANDS[words])
    assert "every command and its options" not in proc.stdout   # the root's listing is the root's only


def test_unknown_command_is_one_line():
    proc = _cli("animat")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice" in lines[0] and "animate" in lines[0]


def test_user_errors_share_one_base_and_exit_2(tmp_path, capsys):
    """Every user-facing error class derives from XDynaError; main() maps any of them to exit 2, one line."""
    import importlib
    import inspect
    import pkgutil

    import xdyna_core
    from xdyna_core.errors import XDynaError

    found = []
    for info in pkgutil.walk_packages(xdyna_core.__path__, "xdyna_core."):
        if info.name.endswith("__main__") or info.name.startswith("xdyna_core.preprocess.__main__"):
            continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError:   # an optional engine that is not installed
            continue
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == info.name:
                found.append(obj)
    outside = [c.__qualname__ for c in found if not issubclass(c, XDynaError) and c.__name__ != "SamplingCancelled"]
    assert len(found) >= 15 and not outside, outside

    # a missing input of convert (a user error) is exit 2 and one line, like every other command
    assert main(["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.ckpt" in err[0]
