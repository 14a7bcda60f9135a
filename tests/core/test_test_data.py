"""The repository carries the data its tests read: a bare clone (no shared folder beside it) runs them all."""
import json
import re
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, assets_dir, golden_dir, spec_dir

# The parent's shared folder (either slash) or a path built from a part named so: Path(...) / NAME,
# join(..., NAME). The examples below are assembled from pieces so this file does not name the folder.
SHARED = re.compile(r"\.\.[/\\]shared\b|/\s*[\"']shared[\"']|join\([^)]*[\"']shared[\"']|/w[o]rk/shared\b")
TEXT = {".py", ".sh", ".js", ".json", ".md", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".ini", ""}
# Everything the suite, CI and the installers run (bench/RESULTS.md is a record of past runs).
SCANNED = ["tests/**/*", "xdyna_core/**/*", "nodes/**/*", "bench/*.py", ".ci/*", "install.sh", "install.py",
           "__init__.py"]


def _text_files():
    for pattern in SCANNED:
        for f in sorted(REPO.glob(pattern)):
            # this file spells the forbidden paths out to test the pattern
            if f.is_file() and f.suffix in TEXT and "__pycache__" not in f.parts and f != Path(__file__):
                yield f


def test_no_file_the_suite_runs_names_shared():
    hits = []
    for f in _text_files():
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if SHARED.search(line):
                hits.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "files name the shared folder (a bare clone has none; use tests/data):\n" + "\n".join(hits)


def test_the_pattern_finds_the_usual_spellings():
    name, work, q, qq = "sha" + "red", "wo" + "rk", "'", '"'
    for bad in [f"REPO.parent / {qq}{name}{qq} / {qq}golden{qq}", f"../{name}/assets", rf"..\{name}\golden",
                f"os.path.join(root, {q}{name}{q}, {q}spec{q})", f"/{work}/{name}/golden"]:
        assert SHARED.search(bad), bad
    for fine in ["the shared assets", "shared = sampler(x)", "frames shared by windows", "shared_dir",
                 f'"--transfer", {qq}{name}{qq})', f'in ("store", {qq}{name}{qq})']:
        assert not SHARED.search(fine), fine


def test_defaults_are_the_repository_copies(monkeypatch):
    for var in ("XDYNA_GOLDEN_DIR", "XDYNA_ASSETS_DIR", "XDYNA_SPEC_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert golden_dir() == DATA / "golden" and assets_dir() == DATA / "assets" and spec_dir() == DATA / "spec"
    monkeypatch.setenv("XDYNA_GOLDEN_DIR", "/elsewhere/golden")
    assert str(golden_dir()) == "/elsewhere/golden"


def test_the_repository_copies_are_complete():
    index = json.loads((DATA / "golden" / "INDEX.json").read_text())
    for name in index["weights_files"] + index["case_files"]:
        assert (DATA / "golden" / name).is_file(), name
        assert (DATA / "golden" / name).with_suffix(".json").is_file(), name
    for k, ext in ((1, "png"), (2, "jpg"), (3, "png")):
        assert (DATA / "assets" / "reference_image" / f"example_{k}.{ext}").is_file()
        assert (DATA / "assets" / "driving_video" / f"example_{k}_driving_{k}.mp4").is_file()
        assert (DATA / "assets" / "poses" / f"example_{k}_pose_{k}.mp4").is_file()
    assert "Apache" in (DATA / "assets" / "NOTICE").read_text()
    for name in ("xdyna_unet", "pose_controlnet", "face_controlnet", "ip_adapter_image_proj"):
        assert (DATA / "spec" / "checkpoint_keys" / f"{name}.json").is_file()


@pytest.mark.parametrize("clip, frames", [("driving_video/example_1_driving_1.mp4", 232),
                                          ("driving_video/example_2_driving_2.mp4", 200),
                                          ("driving_video/example_3_driving_3.mp4", 200),
                                          ("poses/example_1_pose_1.mp4", 200),
                                          ("poses/example_2_pose_2.mp4", 200),
                                          ("poses/example_3_pose_3.mp4", 200)])
def test_clips_hold_the_frames_the_tests_read(clip, frames):
    """Coverage of the official pose videos reads every 5th of the first 200 frames of each example; the
    seam measure reads example 1's driving frames 200-231."""
    av = pytest.importorskip("av")
    with av.open(str(DATA / "assets" / clip)) as c:
        stream = c.streams.video[0]
        assert (stream.width, stream.height, float(stream.average_rate)) == (512, 896, 8.0)
        assert sum(1 for p in c.demux(stream) if p.size) >= frames
