"""An environment with no pose extractor at all (no DWPose files, no MediaPipe of any form,
simulated): `animate --pose` / `--keypoints` still run and say in one line what they skipped, the
demo runs on the keypoints shipped with its clip and says so, and anything that does need an
extractor stops with one sentence before a model is built or loaded."""
import sys

import numpy as np
import pytest

from xdyna_core.cli import animate as cli
from xdyna_core.cli import build_parser
from xdyna_core.preprocess import detectors, dwpose, mediapipe_backend
from xdyna_core.preprocess.keypoints import load_keypoints
from xdyna_core.preprocess.render import render_sequence
from xdyna_core.preprocess.video import read_video, write_video

FAST = ["--steps", "1", "--size", "192x320", "--frame-count", "2", "--quiet"]


@pytest.fixture
def no_extractor(monkeypatch):
    """DWPose files found nowhere, no mediapipe importable, its metadata says not installed."""
    def no_dwpose(*a, **k):
        raise dwpose.DWPoseModelsNotFound("DWPose model file(s) not found: yolox_l.onnx (simulated)")

    monkeypatch.setattr(dwpose, "find_dwpose_models", no_dwpose)
    monkeypatch.setattr(mediapipe_backend, "installed_mediapipe", lambda: None)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # any `import mediapipe` fails
    monkeypatch.setattr(mediapipe_backend, "_mp", None)
    assert detectors.pose_extractor_problem("auto") is not None


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from xdyna_core.loading.tiny import write_tiny_set

    root = tmp_path_factory.mktemp("models")
    write_tiny_set(root, seed=3)
    return root


def _main(capsys, *args):
    """The command line in this process (so that the simulation applies): (exit code, stderr)."""
    args = build_parser().parse_args([str(a) for a in args])
    try:
        code = args.func(args)
    except Exception as e:  # what main() prints as its one error line
        code, err = 2, f"error: {e}"
        return code, capsys.readouterr().err + err
    return code, capsys.readouterr().err


def _notes(err):
    return [line for line in err.splitlines() if line.startswith("note:")]


def _sentence(msg):
    assert "\n" not in msg and msg.count("install.py") == 1, msg
    assert "mediapipe==0.10.14" not in msg  # no install line that fails on Python 3.13
    return msg


def test_animate_with_own_pose_runs_without_an_extractor(no_extractor, tiny_models, tmp_path, capsys):
    ref, drv = cli.DEMO_ASSETS / "reference.jpg", cli.DEMO_ASSETS / "driving.mp4"
    kp = load_keypoints(cli.DEMO_KEYPOINTS)
    pose_video = tmp_path / "pose.mp4"
    write_video(pose_video, render_sequence(kp, kp[0].width, kp[0].height), 8.0)

    for own, extra, given in ((["--pose", pose_video], [], "pose video"),
                              (["--keypoints", cli.DEMO_KEYPOINTS], ["--align"], "keypoints")):
        out = tmp_path / f"result_{own[0][2:]}.mp4"
        code, err = _main(capsys, "animate", "--reference", ref, "--driving", drv, "--models", tiny_models,
                          "--out", out, "--face", "off", *own, *extra, *FAST)
        assert code == 0, err
        frames, _ = read_video(out)
        assert frames.shape == (2, 320, 192, 3) and frames.std() > 1.0
        notes = [n for n in _notes(err) if "pose extractor" in n]
        assert len(notes) == 1 and "reference person check" in notes[0] and given in notes[0], err
        assert ("--align" in notes[0]) == bool(extra)


def test_animate_that_needs_extraction_stops_before_loading(no_extractor, tiny_models, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setattr(cli, "_load", lambda *a: pytest.fail("models loaded before the extractor check"))
    code, err = _main(capsys, "animate", "--reference", cli.DEMO_ASSETS / "reference.jpg", "--driving",
                      cli.DEMO_ASSETS / "driving.mp4", "--models", tiny_models, "--out", tmp_path / "o.mp4", *FAST)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: pose backend 'auto' is not available: no pose extractor")
    _sentence(line)
    # asked for MediaPipe explicitly, with --keypoints: still an error (the user chose that backend)
    code, err = _main(capsys, "animate", "--reference", cli.DEMO_ASSETS / "reference.jpg", "--driving",
                      cli.DEMO_ASSETS / "driving.mp4", "--models", tiny_models, "--out", tmp_path / "o.mp4",
                      "--keypoints", cli.DEMO_KEYPOINTS, "--backend", "mediapipe", "--face", "off", *FAST)
    assert code == 2 and "MediaPipe is not available" in err


def test_demo_uses_its_shipped_keypoints_without_an_extractor(no_extractor, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDYNA_MODELS_DIR", str(tmp_path / "no_models"))
    out = tmp_path / "demo.mp4"
    code, err = _main(capsys, "demo", "--work", tmp_path / "work", "--out", out, "--frame-count", 2, "--steps", 1,
                      "--quiet")
    assert code == 0, err
    said = [n for n in _notes(err) if "keypoints shipped with its clip" in n]
    assert len(said) == 1, err
    _sentence(said[0])
    # the extractor check comes before the model set is built
    assert err.index("keypoints shipped with its clip") < err.index("NO X-DYNA WEIGHTS FOUND")
    frames, _ = read_video(out)
    assert frames.shape == (2, 448, 5 * 256, 3)
    # the pose panel shows the shipped skeleton (not black), the face panel the shipped faces
    assert frames[:, :, 2 * 256:3 * 256].max() > 200 and frames[:, 40:, 3 * 256:4 * 256].max() > 50


def test_demo_with_a_backend_asked_for_stops_before_building_models(no_extractor, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDYNA_MODELS_DIR", str(tmp_path / "no_models"))
    code, err = _main(capsys, "demo", "--work", tmp_path / "work", "--out", tmp_path / "d.mp4", "--backend",
                      "mediapipe", "--quiet")
    assert code == 2 and "NO X-DYNA WEIGHTS" not in err and not (tmp_path / "work").exists()
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: pose backend 'mediapipe' is not available: MediaPipe is not available")
    _sentence(line)


def test_messages_are_one_sentence_each():
    assert _sentence(detectors.no_extractor_message("mediapipe is not installed")).startswith(
        "no pose extractor available (mediapipe is not installed): run `python install.py`")
    assert "models/xdyna/detectors/" in detectors.NO_POSE_EXTRACTOR
    _sentence(detectors.mediapipe_message("mediapipe is not installed"))
