"""Quality report: PCK, ArcFace identity (stand-in ONNX), window-seam stability, the CLI and plot."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, assets_dir
from xdyna_core.preprocess.keypoints import Person, PoseFrame
from xdyna_core.preprocess.video import read_video, write_video
from xdyna_core.quality import identity as idm
from xdyna_core.quality.pose_agreement import pck
from xdyna_core.quality.stability import seam_weights, stability, window_seams

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402



def _driving(start=100, count=12):
    return read_video(assets_dir() / "driving_video" / "example_1_driving_1.mp4", start=start, frame_count=count)[0]


def _reference(k=1):
    name = {1: "example_1.png", 2: "example_2.jpg", 3: "example_3.png"}[k]
    return read_video(assets_dir() / "reference_image" / name)[0][0]


def _mediapipe():
    pytest.importorskip("mediapipe")


# --------------------------------------------------------------------------- PCK

def _person(rng, dx=0.0, hands=True):
    body = np.c_[rng.uniform(100, 300, (18, 2)) + dx, np.ones(18)].astype(np.float32)
    hand = lambda: np.c_[rng.uniform(100, 300, (21, 2)) + dx, np.ones(21)].astype(np.float32)
    return Person(body, hand() if hands else None, hand() if hands else None)


def test_pck_counts_points_within_the_box_fraction():
    rng = np.random.default_rng(0)
    base = [PoseFrame(400, 400, [_person(rng)]) for _ in range(3)]
    same = pck(base, base)
    assert same.overall["body"] == {0.05: 1.0, 0.1: 1.0} and same.overall["hands"][0.05] == 1.0
    assert same.points == {"body": 54, "hands": 126}

    # every point moved by 7% of the person's diagonal: wrong at 0.05, right at 0.1
    from xdyna_core.quality.pose_agreement import box_diagonal

    moved = []
    for f in base:
        p = f.main.copy()
        shift = 0.07 * box_diagonal(f.main, 0.3)
        for a in (p.body, p.left_hand, p.right_hand):
            a[:, 0] += shift
        moved.append(PoseFrame(400, 400, [p]))
    m = pck(base, moved)
    assert m.overall["body"] == {0.05: 0.0, 0.1: 1.0} and m.overall["hands"] == {0.05: 0.0, 0.1: 1.0}

    # a result frame without a person scores 0 there; a driving frame without one is not scored
    gone = [base[0], PoseFrame(400, 400, []), base[2]]
    g = pck(base, gone)
    assert g.per_frame["body"][0.05] == [1.0, 0.0, 1.0]
    h = pck(gone, base)
    assert math.isnan(h.per_frame["body"][0.05][1]) and h.overall["body"][0.05] == 1.0
    # missing points of the result count as misses, missing driving points are not scored
    half = [f.main.copy() for f in base]
    for p in half:
        p.body[:9, 2] = 0.0
    assert pck(base, [PoseFrame(400, 400, [p]) for p in half]).overall["body"][0.05] == 0.5
    assert pck([PoseFrame(400, 400, [p]) for p in half], base).overall["body"][0.05] == 1.0


def test_driving_video_against_itself_shifted_and_mirrored():
    """Acceptance: self >= 0.99; 5 frames late and mirrored clearly lower (MediaPipe, a shared clip)."""
    _mediapipe()
    from xdyna_core.preprocess.pose_detection import close_quietly, detect_poses, open_pose_detector
    from xdyna_core.quality.pose_agreement import driving_and_result_poses

    frames = _driving(count=10)
    _, detector = open_pose_detector("mediapipe")
    try:
        d, r, _ = driving_and_result_poses(frames[:5], frames[:5], detector)
        own = pck(d, r)
        late = detect_poses(frames[5:10], detector)
        mirror = detect_poses(np.ascontiguousarray(frames[:5, :, ::-1]), detector)
    finally:
        close_quietly(detector)
    pooled = lambda a: (a.overall["body"][0.05] * a.points["body"] + a.overall["hands"][0.05] * a.points["hands"]) / (
        a.points["body"] + a.points["hands"])
    shifted, mirrored = pooled(pck(d, late)), pooled(pck(d, mirror))
    print(f"pck@0.05: self {pooled(own):.3f}, shifted 5 frames {shifted:.3f}, mirrored {mirrored:.3f}")
    assert pooled(own) >= 0.99 and own.points["body"] > 40
    assert shifted < 0.8 and mirrored < 0.5


# --------------------------------------------------------------------------- identity

def make_arcface_onnx(path, dim=64, seed=0):
    """Stand-in recognition net with the ArcFace I/O: [N, 3, 112, 112] -> [N, dim]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 8, 8)).astype(np.float32) * 0.05, "w")
    g = numpy_helper.from_array(rng.standard_normal((8 * 14 * 14, dim)).astype(np.float32) * 0.02, "g")
    nodes = [helper.make_node("Conv", ["data", "w"], ["c"], strides=[8, 8], name="conv0"),
             helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat0"),
             helper.make_node("MatMul", ["f", "g"], ["fc1"], name="fc1")]
    graph_in = [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])]
    graph_out = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", dim])]
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(nodes, "arcface_standin", graph_in, graph_out, initializer=[w, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_arcface_lookup_and_missing_note(tmp_path):
    root = tmp_path / "insightface"
    with pytest.raises(idm.ArcFaceNotFound) as e:
        idm.find_arcface_model([root])
    msg = str(e.value)
    assert "\n" not in msg and "glintr100.onnx" in msg and "w600k_r50.onnx" in msg and str(root) in msg
    buffalo = make_arcface_onnx(root / "models" / "buffalo_l" / "w600k_r50.onnx")
    assert idm.find_arcface_model([root]) == buffalo
    nested = make_arcface_onnx(root / "models" / "antelopev2" / "antelopev2" / "glintr100.onnx")
    assert idm.find_arcface_model([root]) == nested  # antelopev2 first, found one folder deeper


def test_five_point_alignment_puts_points_on_the_template():
    rng = np.random.default_rng(1)
    lm = np.zeros((68, 2))
    target = idm.ARCFACE_TEMPLATE * 2.5 + [40, 60]  # a face 2.5x the template size, shifted
    lm[36:42], lm[42:48], lm[30], lm[48], lm[54] = target[0], target[1], target[2], target[3], target[4]
    M = idm.similarity_transform(idm.five_points(lm), idm.ARCFACE_TEMPLATE)
    mapped = idm.five_points(lm) @ M[:, :2].T + M[:, 2]
    assert np.abs(mapped - idm.ARCFACE_TEMPLATE).max() < 1e-9
    img = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    assert idm.align_face(img, idm.five_points(lm)).shape == (112, 112, 3)


def test_identity_same_face_is_one_and_another_face_lower(tmp_path):
    _mediapipe()
    from xdyna_core.quality.report import ReportOptions, quality_report

    root = tmp_path / "insightface"
    make_arcface_onnx(root / "models" / "antelopev2" / "glintr100.onnx")
    ref, other = _reference(1), _reference(2)
    frames = np.stack([ref, other])
    figures, _ = quality_report(ref, frames, frames, ReportOptions(backend="mediapipe", insightface_dirs=[str(root)]))
    same, different = figures["per_frame"]["identity"]
    print(f"identity (stand-in ArcFace): same face {same:.4f}, another face {different:.4f}")
    assert same == pytest.approx(1.0, abs=1e-6)
    assert different < 0.99
    assert "glintr100.onnx" in figures["identity_note"]


# --------------------------------------------------------------------------- stability

def test_window_seams_follow_the_schedule():
    # 24 frames, windows of 16 with overlap 4: [0..15], [12..23, 0..3]
    assert window_seams(24, 16, 4) == [4, 12, 16]
    assert window_seams(16, 16, 4) == []  # one window, no seam
    assert window_seams(24, 16, 4, offsets=[0, 2]) == [2, 4, 6, 12, 14, 16, 18]  # + [2..17], [14..23, 0..5]
    assert window_seams(30, 8, 0) == [2, 8, 16, 24]  # the last window wraps: [24..29, 0, 1]
    w = seam_weights(24, 16, 4, offsets=[0, 2, 0, 0])
    assert w[4] == w[12] == w[16] == 0.75 and w[2] == w[6] == w[14] == w[18] == 0.25 and w.sum() == 3.25


def test_seam_measure_detects_a_spliced_seam():
    """A cut (8 frames skipped) spliced in at a window seam stands out against its neighbours."""
    clip = _driving(start=200, count=32)
    weights = seam_weights(24, 8, 0)               # seams at 8 and 16
    assert np.flatnonzero(weights).tolist() == [8, 16]
    clean = stability(clip[:24], weights)
    spliced = np.concatenate([clip[:8], clip[16:32]])   # frame 8 onward jumps 8 frames ahead
    cut = stability(spliced, weights)
    print(f"seam excess: clean {clean.seam_excess:.2f}, spliced {cut.seam_excess:.2f}; "
          f"ratio clean {clean.seam_ratio:.2f}, spliced {cut.seam_ratio:.2f}")
    assert cut.excess[8 - 1] == max(cut.excess) and cut.excess[8 - 1] > 3
    assert cut.seam_excess > 2 * clean.seam_excess and cut.seam_ratio > 1.5 * clean.seam_ratio
    assert 0.5 < clean.seam_excess < 1.6
    # the same cut off the seams leaves the seam figures alone
    elsewhere = np.zeros(24)
    elsewhere[[4, 12]] = 1.0
    off = stability(spliced, elsewhere)
    assert off.seam_excess < 1.6


# --------------------------------------------------------------------------- CLI

def test_report_cli_json_and_plot(tmp_path):
    _mediapipe()
    frames = _driving(start=100, count=4)
    result = tmp_path / "result.mp4"
    # near-lossless: at crf 18 MediaPipe may lose a hand in a frame; 16 fps: twice the driving clip's 8
    write_video(result, frames, fps=16, crf=0)
    # the result is the driving clip from frame 100 on, as `animate --start 100` would pair it
    out_json, out_png = tmp_path / "q.json", tmp_path / "q.png"
    cmd = [sys.executable, "-m", "xdyna_core", "report", "--reference", str(assets_dir() / "reference_image" / "example_1.png"),
           "--driving", str(assets_dir() / "driving_video" / "example_1_driving_1.mp4"), "--start", "100",
           "--result", str(result), "--backend", "mediapipe", "--json", str(out_json), "--plot", str(out_png),
           "--context-length", "3", "--context-overlap", "1", "--models", str(tmp_path / "no_models")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out_json.read_text())
    assert figures["frames"] == 4
    assert figures["pck@0.05"] >= 0.99 and figures["pck@0.1"] >= 0.99
    assert figures["seams"] == [1, 2, 3]  # windows [0, 1, 2], [2, 3, 0]
    assert figures["identity"] is None and "glintr100.onnx" in figures["identity_note"]
    assert str(tmp_path / "no_models" / "insightface") in figures["identity_note"]
    # a result shorter than the driving clip (from --start 100) and at another fps: said, with the count
    driving_left = read_video(assets_dir() / "driving_video" / "example_1_driving_1.mp4", start=100)[0].shape[0]
    assert driving_left > 4 and figures["driving_frames"] == driving_left
    assert figures["notes"] == [f"the result has 4 frames, the driving clip {driving_left}: 4 of {driving_left} frames compared",
                                "the result plays at 16 fps, the driving frames at 8 fps: frames are paired by index "
                                "(4 compared), not by time"]
    for note in figures["notes"]:
        assert f"note: {note}" in run.stdout.splitlines()
    # the identity note once, in the summary, and nothing on stderr
    assert (run.stdout + run.stderr).count("not found in <insightface>") == 1 and run.stderr == "", run.stderr
    assert f"identity: skipped: glintr100.onnx (antelopev2) or w600k_r50.onnx (buffalo_l) not found in " \
           f"<insightface>/models/<pack>/ (searched {tmp_path / 'no_models' / 'insightface'})" in run.stdout
    assert len(figures["per_frame"]["pck@0.05/body"]) == 4 and len(figures["per_frame"]["change"]) == 3
    from PIL import Image

    plot = np.asarray(Image.open(out_png))
    assert plot.shape[1] == 960 and plot.shape[0] > 300 and plot.std() > 10
    assert "pck@0.05" in run.stdout

    bad = subprocess.run(cmd[:-4] + ["--context-length", "4", "--context-overlap", "4"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --context-length/--context-overlap")


def test_report_cli_no_face_found_prints_no_native_log(tmp_path):
    """A result without a face (FaceMesh finds none) scores identity n/a; MediaPipe's native `W0000`
    lines stay hidden on the command line (XDYNA_NATIVE_LOGS unset), and the notes agree with equal
    length and fps."""
    _mediapipe()
    root = tmp_path / "models" / "insightface"
    make_arcface_onnx(root / "models" / "antelopev2" / "glintr100.onnx")
    clip = tmp_path / "driving.mp4"
    blank = tmp_path / "blank.mp4"
    write_video(clip, _driving(start=100, count=3), fps=8, crf=0)
    write_video(blank, np.full((3, 896, 512, 3), 128, np.uint8), fps=8, crf=0)
    cmd = [sys.executable, "-m", "xdyna_core", "report", "--reference", str(assets_dir() / "reference_image" / "example_1.png"),
           "--driving", str(clip), "--result", str(blank), "--backend", "mediapipe", "--context-length", "3",
           "--context-overlap", "1", "--models", str(tmp_path / "models")]
    env = {k: v for k, v in os.environ.items() if k != "XDYNA_NATIVE_LOGS"}
    run = subprocess.run(cmd, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "W0000" not in run.stderr and run.stderr == "", run.stderr
    assert "identity: n/a (glintr100.onnx, landmarks" in run.stdout and "face found in 0/3 frames" in run.stdout
    assert "note:" not in run.stdout, run.stdout


def test_pairing_notes_only_when_length_or_fps_differ():
    from xdyna_core.quality.report import pairing_notes

    assert pairing_notes(571, 571, 8.0, 8.0) == [] and pairing_notes(5, 5, None, 8.0) == []
    assert pairing_notes(2, 571, 8.0, 8.0) == ["the result has 2 frames, the driving clip 571: 2 of 571 frames compared"]
    assert pairing_notes(10, 10, 24.0, 8.0)[0].startswith("the result plays at 24 fps, the driving frames at 8 fps")


def test_scheduled_window_offsets_replay_a_real_run(monkeypatch):
    """The replayed offsets are the ones job.run_sampling draws: the first window call of a real run
    (stopped there, before any network runs) gets the replay's first offset, for several seeds."""
    import torch

    from xdyna_core import job
    from xdyna_core.quality.stability import scheduled_window_offsets
    from xdyna_core.reference import LatentMoments, ReferenceEncoding
    from xdyna_core.sampling import pipeline

    class FirstWindow(Exception):
        pass

    seen = []

    def record(n, frames, overlap, offset):
        seen.append(offset)
        raise FirstWindow

    monkeypatch.setattr(pipeline, "context_windows", record)
    n, W, H, steps, C = 40, 64, 96, 7, 16
    rng = torch.Generator().manual_seed(0)
    moments = LatentMoments(torch.randn(1, 4, H // 8, W // 8, generator=rng), torch.zeros(1, 4, H // 8, W // 8))
    enc = ReferenceEncoding(np.zeros((H, W, 3), np.uint8), moments, torch.zeros(1, 16, 8), torch.zeros(1, 16, 8))
    text = torch.zeros(1, 77, 8)
    pose = torch.zeros((n, 3, H, W), dtype=torch.uint8)
    pose[:, :, 10:20, 10:20] = 255  # a non-constant control clip
    replays = []
    for seed in (3, 1234, 7, 99, 2024):
        for latent in ("sample", "mean"):
            settings = job.SamplingSettings(steps=steps, seed=seed, context_length=C, context_overlap=4, latent=latent)
            seen.clear()
            with pytest.raises(FirstWindow):
                job.run_sampling(lambda *a, **k: None, enc, text, text, pose, settings,
                                 pose_controlnet=lambda *a, **k: None)
            replay = scheduled_window_offsets(seed, n, W, H, steps, C, latent=latent)
            assert len(replay) == steps and seen == [replay[0]], (seed, latent, seen, replay)
            replays.append(replay[0])
    assert len(set(replays)) > 3  # the check is not passed by a constant


def test_report_schedule_sources():
    from xdyna_core.quality.report import ReportOptions, _schedule
    from xdyna_core.quality.stability import scheduled_window_offsets

    offsets, note = _schedule(ReportOptions(seed=5, steps=3, context_length=4), 10, 64, 96)
    assert offsets == scheduled_window_offsets(5, 10, 64, 96, 3, 4) and "seed 5" in note
    assert _schedule(ReportOptions(seed=5, window_offsets=[1, 2]), 10, 64, 96)[0] == [1, 2]
    offsets, note = _schedule(ReportOptions(), 10, 64, 96)
    assert offsets == [0] and "offset 0" in note
