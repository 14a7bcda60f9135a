"""`xdyna preprocess pose|face|render` end to end with the DWPose stand-in models of
test_dwpose.py (their detector finds a person only when the frame's brightest pixel is > 115,
so dim or black frames are "no person" frames)."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")

from tests.conftest import REPO, assets_dir  # noqa: E402
from tests.core.test_dwpose import (  # noqa: E402
    DOT,
    DOT_CENTRE,
    PERSON_A,
    H,
    W,
    make_const_pose_onnx,
    make_dot_pose_onnx,
    standard_detector,
)
from xdyna_core.cli import main as xdyna_main  # noqa: E402
from xdyna_core.preprocess.keypoints import load_keypoints  # noqa: E402
from xdyna_core.preprocess.video import probe_video, read_video, write_video  # noqa: E402

FPS = 8


def dot_frame(dot=True, background=0):
    f = np.full((H, W, 3), background, np.uint8)
    if dot:
        f[DOT] = 255
    return f


@pytest.fixture(scope="module")
def dot_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("dot_models")
    standard_detector(d / "yolox_l.onnx")
    make_dot_pose_onnx(d / "dw-ll_ucoco_384.onnx")
    return d


# Const pose stand-in: a spread-out skeleton and face, in 288x384 crop pixels (x2 in SimCC bins).
def _const_layout():
    rng = np.random.default_rng(3)
    ix = rng.integers(200, 376, 133)  # crop x 100..188
    iy = rng.integers(300, 468, 133)  # crop y 150..234
    # face 23..90 on a 20x24 crop-pixel ellipse around (144, 80)
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    ix[23:91] = np.round(2 * (144 + 10 * np.cos(t))).astype(int)
    iy[23:91] = np.round(2 * (80 + 12 * np.sin(t))).astype(int)
    # body: shoulders, hips, knees far apart so alignment has real segments
    body = {5: (170, 120), 6: (118, 120), 11: (160, 220), 12: (128, 220), 13: (160, 290),
            14: (128, 290), 15: (160, 350), 16: (128, 350), 0: (144, 80)}
    for k, (x, y) in body.items():
        ix[k], iy[k] = 2 * x, 2 * y
    return ix, iy, np.full(133, 0.9, np.float32)


@pytest.fixture(scope="module")
def skeleton_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("skeleton_models")
    standard_detector(d / "yolox_l.onnx")
    make_const_pose_onnx(d / "dw-ll_ucoco_384.onnx", *_const_layout())
    return d


def crop_to_image(x, y):
    """Crop pixel -> image pixel for person A's box (spec: padding 1.25, aspect 288:384)."""
    cx, cy, bw, bh = PERSON_A
    w, h = bw * 1.25, bh * 1.25
    w, h = (w, w * 384 / 288) if w > h * 288 / 384 else (h * 288 / 384, h)
    return x / 288 * w + cx - w / 2, y / 384 * h + cy - h / 2


@pytest.fixture(scope="module")
def dot_video(tmp_path_factory):
    """5 frames: dot, dot, dot, black (no person), dot."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, [dot_frame(i != 3) for i in range(5)], fps=FPS, crf=0)
    return path


def run(args, capsys):
    rc = xdyna_main(["preprocess", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return rc, out, err


def is_black(img, tol=12):
    return int(img.max()) <= tol


# ------------------------------------------------------------------------ pose

def test_pose_dwpose_end_to_end(tmp_path, dot_video, dot_models, capsys):
    rc, out, err = run(["pose", dot_video, "--out", tmp_path, "--backend", "dwpose", "--models", dot_models,
                        "--quiet"], capsys)
    assert rc == 0, err
    kp = load_keypoints(tmp_path / "clip_keypoints.json")
    assert [len(f.people) for f in kp] == [1, 1, 1, 0, 1]
    for i in (0, 1, 2, 4):
        body = kp[i].people[0].body
        assert np.all(np.abs(body[:, :2] - DOT_CENTRE) < 2.5)
    raw = json.loads((tmp_path / "clip_keypoints.json").read_text())
    assert raw[3] == {"people": [], "canvas_height": H, "canvas_width": W}
    frames, fps = read_video(tmp_path / "clip_pose.mp4")
    assert frames.shape == (5, H, W, 3) and fps == FPS
    assert is_black(frames[3])  # no person -> black frame
    # every keypoint sits on the dot, so the render is a small blob there and nothing elsewhere
    for i in (0, 1, 2, 4):
        ys, xs = np.nonzero(frames[i].max(axis=2) > 50)
        assert len(xs) > 0
        assert abs(xs.mean() - DOT_CENTRE[0]) < 4 and abs(ys.mean() - DOT_CENTRE[1]) < 4
    assert "4 frames" not in out and "5 frames" in out and "1 without a person" in out


def test_pose_stride_and_max_frames(tmp_path, dot_video, dot_models, capsys):
    rc, _, err = run(["pose", dot_video, "--out", tmp_path, "--backend", "dwpose", "--models", dot_models,
                      "--stride", 2, "--quiet"], capsys)
    assert rc == 0, err
    assert [len(f.people) for f in load_keypoints(tmp_path / "clip_keypoints.json")] == [1, 1, 1]  # 0, 2, 4
    assert probe_video(tmp_path / "clip_pose.mp4").fps == FPS / 2
    rc, _, _ = run(["pose", dot_video, "--out", tmp_path, "--backend", "dwpose", "--models", dot_models,
                    "--start", 2, "--frame-count", 2, "--name", "part", "--quiet"], capsys)
    assert [len(f.people) for f in load_keypoints(tmp_path / "part_keypoints.json")] == [1, 0]  # 2, 3


def test_pose_size_stretch_and_crop(tmp_path, dot_video, dot_models, capsys):
    base = ["pose", dot_video, "--backend", "dwpose", "--models", dot_models, "--frame-count", 1, "--quiet"]
    assert run(base + ["--out", tmp_path / "s", "--size", "256x448", "--fit", "stretch"], capsys)[0] == 0
    f = load_keypoints(tmp_path / "s" / "clip_keypoints.json")[0]
    assert (f.width, f.height) == (256, 448)
    assert np.all(np.abs(f.people[0].body[:, :2] - np.array(DOT_CENTRE) / 2) < 1.5)
    assert read_video(tmp_path / "s" / "clip_pose.mp4")[0].shape == (1, 448, 256, 3)

    # crop2ratio to a square: full width 512, height 512 starting at (896 - 512) // 4 = 96, then / 2
    assert run(base + ["--out", tmp_path / "c", "--size", "256x256"], capsys)[0] == 0
    f = load_keypoints(tmp_path / "c" / "clip_keypoints.json")[0]
    assert (f.width, f.height) == (256, 256)
    expected = ((DOT_CENTRE[0] + 0.5) / 2 - 0.5, (DOT_CENTRE[1] - 96 + 0.5) / 2 - 0.5)
    assert np.all(np.abs(f.people[0].body[:, :2] - expected) < 1.5)


def test_one_frame_video_and_still_image(tmp_path, dot_models, capsys):
    write_video(tmp_path / "one.mp4", [dot_frame()], fps=FPS)
    import cv2

    cv2.imwrite(str(tmp_path / "still.png"), dot_frame())
    for name in ("one.mp4", "still.png"):
        rc, _, err = run(["pose", tmp_path / name, "--out", tmp_path / "o", "--backend", "dwpose",
                          "--models", dot_models, "--quiet"], capsys)
        assert rc == 0, err
        stem = name.split(".")[0]
        assert [len(f.people) for f in load_keypoints(tmp_path / "o" / f"{stem}_keypoints.json")] == [1]
        assert read_video(tmp_path / "o" / f"{stem}_pose.mp4")[0].shape[0] == 1


def test_unreadable_and_missing_video_one_line_exit_2(tmp_path, dot_models, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    for path in (junk, tmp_path / "absent.mp4"):
        rc, out, err = run(["pose", path, "--out", tmp_path / "o", "--backend", "dwpose", "--models", dot_models],
                           capsys)
        assert rc == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and path.name in lines[0], err
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unreadable_file_via_python_m(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    proc = subprocess.run([sys.executable, "-m", "xdyna_core.preprocess", "pose", str(junk), "--out",
                           str(tmp_path), "--backend", "dwpose"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "junk.mp4" in proc.stderr


def test_missing_models_names_files_and_folders(tmp_path, dot_video, capsys, monkeypatch):
    for var in ("XDYNA_DWPOSE_DIR", "XDYNA_MODELS_DIR", "AUX_ANNOTATOR_CKPTS_PATH"):
        monkeypatch.delenv(var, raising=False)
    rc, _, err = run(["pose", dot_video, "--out", tmp_path, "--backend", "dwpose", "--models", tmp_path / "m"],
                     capsys)
    assert rc == 2
    assert "yolox_l.onnx" in err and "dw-ll_ucoco_384.onnx" in err and str(tmp_path / "m") in err


def test_bad_arguments_exit_2(tmp_path, dot_video, capsys):
    for bad in (["--stride", "0"], ["--size", "12by3"], ["--frame-count", "-1"]):
        with pytest.raises(SystemExit) as ei:
            xdyna_main(["preprocess", "pose", str(dot_video), "--out", str(tmp_path)] + bad)
        assert ei.value.code == 2
    capsys.readouterr()


# ------------------------------------------------------------------------ render

def test_render_from_json_matches_pose_video(tmp_path, dot_video, dot_models, capsys):
    assert run(["pose", dot_video, "--out", tmp_path / "a", "--backend", "dwpose", "--models", dot_models,
                "--quiet"], capsys)[0] == 0
    rc, _, err = run(["render", tmp_path / "a" / "clip_keypoints.json", "--out", tmp_path / "b", "--fps", FPS,
                      "--quiet"], capsys)
    assert rc == 0, err
    a, _ = read_video(tmp_path / "a" / "clip_pose.mp4")
    b, fps = read_video(tmp_path / "b" / "clip_pose.mp4")
    assert fps == FPS and a.shape == b.shape
    assert np.abs(a.astype(int) - b).max() <= 2  # same drawing, same encoder settings

    foreign = tmp_path / "foreign.json"  # normalised coordinates from some other tool
    foreign.write_text(json.dumps([{"people": [{"pose_keypoints_2d": [0.5, 0.2, 1, 0.5, 0.3, 1] + [0] * 48}],
                                    "canvas_width": 64, "canvas_height": 128}]))
    rc, _, err = run(["render", foreign, "--out", tmp_path / "c", "--size", "128x256", "--quiet"], capsys)
    assert rc == 0, err
    img = read_video(tmp_path / "c" / "foreign_pose.mp4")[0][0]
    ys, xs = np.nonzero(img.max(axis=2) > 50)
    assert abs(xs.mean() - 64) < 3 and 45 < ys.mean() < 83  # the neck-nose stick, x 0.5, y 0.2..0.3

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"people": [{"pose_keypoints_2d": [1, 2]}], "canvas_width": 5, "canvas_height": 5}]))
    rc, _, err = run(["render", bad, "--out", tmp_path / "d"], capsys)
    assert rc == 2 and "bad.json" in err and "frame 0, person 0" in err


# ------------------------------------------------------------------------ alignment

def test_pose_alignment_to_reference(tmp_path, skeleton_models, capsys):
    # Driving frames 512x896; the reference is the same picture at half size, so the fitted
    # similarity is scale 0.5, no shift, and the output canvas is the reference's 256x448.
    clip = tmp_path / "drv.mp4"
    write_video(clip, [dot_frame(), dot_frame()], fps=FPS, crf=0)
    import cv2

    ref = cv2.resize(dot_frame(), (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    ref[DOT[0].start // 2:DOT[0].start // 2 + 2, DOT[1].start // 2:DOT[1].start // 2 + 2] = 255
    cv2.imwrite(str(tmp_path / "ref.png"), ref)
    common = ["pose", clip, "--out", tmp_path / "plain", "--backend", "dwpose", "--models", skeleton_models,
              "--quiet"]
    assert run(common, capsys)[0] == 0
    plain = load_keypoints(tmp_path / "plain" / "drv_keypoints.json")[0].people[0].body
    common[3] = tmp_path / "al"
    rc, _, err = run(common + ["--align-reference", tmp_path / "ref.png", "--align-frame", 1], capsys)
    assert rc == 0, err
    assert "alignment on driving frame 1" in err and "scale 0.5" in err
    f = load_keypoints(tmp_path / "al" / "drv_keypoints.json")[0]
    assert (f.width, f.height) == (W // 2, H // 2)
    present = plain[:, 2] > 0
    np.testing.assert_allclose(f.people[0].body[present, :2], plain[present, :2] / 2, atol=0.5)
    assert read_video(tmp_path / "al" / "drv_pose.mp4")[0].shape == (2, H // 2, W // 2, 3)

    rc, _, err = run(common + ["--align-reference", tmp_path / "ref.png", "--align-frame", 7], capsys)
    assert rc == 2 and "--align-frame 7" in err
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((64, 64, 3), np.uint8))
    rc, _, err = run(common + ["--align-reference", tmp_path / "empty.png"], capsys)
    assert rc == 2 and "no person found in the reference image" in err


# ------------------------------------------------------------------------ face

@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """bright (person + face), dim (no person, content), bright: the dim frame has no face."""
    path = tmp_path_factory.mktemp("face") / "faces.mp4"
    write_video(path, [dot_frame(True, 150), np.full((H, W, 3), 60, np.uint8), dot_frame(True, 150)],
                fps=FPS, crf=0)
    return path


def expected_face_box():
    ix, iy, _ = _const_layout()
    xs, ys = crop_to_image(ix[23:91] / 2, iy[23:91] / 2)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    L, cx, cy = max(x1 - x0, y1 - y0), (x0 + x1) / 2, (y0 + y1) / 2
    return cx - 1.35 * L, cy - 1.25 * L, cx + 1.35 * L, cy + 1.45 * L  # spec §5


def nonzero_box(img, thr=30):
    ys, xs = np.nonzero(img.max(axis=2) > thr)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_face_patches_dwpose_landmarks_with_carry(tmp_path, face_clip, skeleton_models, capsys):
    rc, out, err = run(["face", face_clip, "--out", tmp_path, "--backend", "dwpose", "--models", skeleton_models,
                        "--landmarks", "dwpose", "--quiet"], capsys)
    assert rc == 0, err
    assert "face found in 2/3 frames" in out
    local, fps = read_video(tmp_path / "faces_face_local.mp4")
    glob, _ = read_video(tmp_path / "faces_face_global.mp4")
    assert local.shape == glob.shape == (3, H, W, 3) and fps == FPS
    left, top, right, bottom = expected_face_box()
    for i, level in ((0, 150), (1, 60), (2, 150)):  # frame 1: carried geometry, its own pixels
        x0, y0, x1, y1 = nonzero_box(glob[i])
        assert abs(x0 - left) <= 2 and abs(x1 - right) <= 2 and abs(y0 - top) <= 2 and abs(y1 - bottom) <= 2
        assert abs(np.median(glob[i][y0:y1, x0:x1]) - level) < 4
        lx0, ly0, lx1, ly1 = nonzero_box(local[i])
        assert lx0 >= x0 - 1 and ly0 >= y0 - 1 and lx1 <= x1 + 1 and ly1 <= y1 + 1
        assert 0 < (local[i].max(axis=2) > 30).sum() < (glob[i].max(axis=2) > 30).sum()


def test_face_no_carry_and_no_face_at_all(tmp_path, face_clip, skeleton_models, capsys):
    rc, _, err = run(["face", face_clip, "--out", tmp_path, "--backend", "dwpose", "--models", skeleton_models,
                      "--no-carry", "--quiet"], capsys)
    assert rc == 0, err
    local, _ = read_video(tmp_path / "faces_face_local.mp4")
    glob, _ = read_video(tmp_path / "faces_face_global.mp4")
    assert is_black(local[1]) and is_black(glob[1]) and not is_black(glob[0])

    dim = tmp_path / "dim.mp4"
    write_video(dim, [np.full((H, W, 3), 60, np.uint8)] * 2, fps=FPS)
    rc, out, err = run(["face", dim, "--out", tmp_path, "--backend", "dwpose", "--models", skeleton_models,
                        "--quiet"], capsys)
    # the same rule as the graph's pose node: a driving clip must show a person
    assert rc == 2 and "no person found in any of the 2 frames" in err
    assert not (tmp_path / "dim_face_global.mp4").exists()


def test_face_landmarks_dwpose_needs_dwpose_backend(tmp_path, face_clip, capsys):
    rc, _, err = run(["face", face_clip, "--out", tmp_path, "--backend", "mediapipe", "--landmarks", "dwpose"],
                     capsys)
    assert rc == 2 and "--backend dwpose" in err


# ------------------------------------------------------------------------ misc

def test_progress_bar_shows_count_and_real_rate():
    import re

    from xdyna_core.progress import Progress

    buf = io.StringIO()
    bar = Progress(20, "detect", stream=buf)
    for _ in range(20):
        bar.update()
    bar.close()
    final = buf.getvalue().split("\r")[-1]
    assert final.startswith("detect: 100%") and "20/20" in final and final.endswith("\n")
    rate = re.search(r"([\d.]+)(frame/s|s/frame)", final)
    assert rate and float(rate.group(1)) > 0  # a measured rate, in the unit given
    silent = io.StringIO()
    q = Progress(5, "x", stream=silent, enabled=False)
    q.update()
    q.close()
    assert silent.getvalue() == ""


def test_mediapipe_backend_on_real_frames(tmp_path, capsys):
    pytest.importorskip("mediapipe")
    video = assets_dir() / "driving_video" / "example_1_driving_1.mp4"
    rc, out, err = run(["pose", video, "--out", tmp_path, "--backend", "mediapipe", "--frame-count", 2,
                        "--quiet"], capsys)
    assert rc == 0, err
    kp = load_keypoints(tmp_path / "example_1_driving_1_keypoints.json")
    assert [len(f.people) for f in kp] == [1, 1]
    assert kp[0].people[0].body[1, 2] > 0  # neck found on a real dancer


def test_face_patches_follow_the_alignment(tmp_path, face_clip, skeleton_models, capsys):
    import cv2

    ref = cv2.resize(dot_frame(True, 150), (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "ref.png"), ref)
    rc, _, err = run(["face", face_clip, "--out", tmp_path, "--backend", "dwpose", "--models", skeleton_models,
                      "--align-reference", tmp_path / "ref.png", "--align-frame", 0, "--quiet"], capsys)
    assert rc == 0, err
    glob, _ = read_video(tmp_path / "faces_face_global.mp4")
    assert glob.shape == (3, H // 2, W // 2, 3)  # the reference's canvas
    left, top, right, bottom = (v / 2 for v in expected_face_box())  # scale 0.5, no shift
    x0, y0, x1, y1 = nonzero_box(glob[0])
    assert abs(x0 - left) <= 2 and abs(x1 - right) <= 2 and abs(y0 - top) <= 2 and abs(y1 - bottom) <= 2
