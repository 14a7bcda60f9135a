"""CPU throughput of the preprocessing steps (frames per second), on the driving videos in
tests/data/assets (their first 200 frames; or --videos DIR). Not a test; prints a table.

    python bench/bench_preprocess.py [--frames 120] [--videos DIR] [--models DIR]

Rows:
  decode            PyAV, rgb24, sequential (and with a resize to 256x448)
  encode            h264 crf 18 of rendered pose frames
  render            X-Dyna skeleton renderer (render.render_pose) at 512x896
  dwpose            real yolox_l + dw-ll_ucoco_384 when found (find_dwpose_models), otherwise the
                    tiny stand-in ONNX models of the tests: then only our pre/post-processing is
                    measured (letterbox, decode, NMS, affine crop, SimCC), NOT the networks
  mediapipe pose / holistic   when mediapipe 0.10.14 is installed (tracking mode)
  face patches      face_patches.face_patches from fixed landmarks
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xdyna_core.preprocess.keypoints import Person, PoseFrame  # noqa: E402
from xdyna_core.preprocess.video import iter_frames, probe_video, read_video, write_video  # noqa: E402


def timed(fn, n_items):
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return n_items / dt if dt > 0 else float("inf"), dt


def sample_pose(w=512, h=896) -> PoseFrame:
    """A standing person with both hands (fixed numbers, for the renderer)."""
    body = np.array([
        [256, 150], [256, 220], [206, 222], [190, 320], [185, 410], [306, 222], [322, 320], [327, 410],
        [226, 430], [222, 580], [220, 730], [286, 430], [290, 580], [292, 730], [246, 140], [266, 140],
        [236, 150], [276, 150]], np.float32)
    body = np.concatenate([body * [w / 512, h / 896], np.ones((18, 1), np.float32)], axis=1)
    rng = np.random.default_rng(0)

    def hand(x, y):
        pts = np.array([x, y], np.float32) + rng.uniform(-25, 25, (21, 2)).astype(np.float32)
        return np.concatenate([pts, np.ones((21, 1), np.float32)], axis=1)

    return PoseFrame(w, h, [Person(body, hand(185, 430), hand(327, 430), None)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120, help="frames per video and backend")
    ap.add_argument("--videos", default=str(REPO / "tests" / "data" / "assets" / "driving_video"))
    ap.add_argument("--models", action="append", default=[], help="folder with the real DWPose ONNX files")
    args = ap.parse_args(argv)

    videos = sorted(Path(args.videos).glob("*.mp4"))
    if not videos:
        sys.exit(f"no .mp4 in {args.videos}")
    n = args.frames
    rows = []

    def add(name, fps, frames, note=""):
        rows.append((name, fps, frames, note))
        print(f"  {name}: {fps:.1f} fps", file=sys.stderr)

    # ---- decode
    total, dt_sum = 0, 0.0
    for v in videos:
        count = sum(1 for _ in iter_frames(v))  # warm the file cache
        fps, dt = timed(lambda: sum(1 for _ in iter_frames(v)), count)
        total, dt_sum = total + count, dt_sum + dt
    add("decode (PyAV rgb24)", total / dt_sum, total, f"{len(videos)} videos, all frames")
    info = probe_video(videos[0])
    fps, _ = timed(lambda: sum(1 for _ in iter_frames(videos[0], size=(256, 448))), info.frame_count)
    add("decode + resize 256x448", fps, info.frame_count, "INTER_AREA")

    frames = [read_video(v, frame_count=n)[0] for v in videos]
    n_all = sum(len(f) for f in frames)

    # ---- render / encode
    from xdyna_core.preprocess.render import render_pose

    pose = sample_pose()
    fps, _ = timed(lambda: [render_pose(pose, 512, 896) for _ in range(n)], n)
    add("render 512x896", fps, n, "body + both hands")
    rendered = np.stack([render_pose(pose, 512, 896)] * n)
    with tempfile.TemporaryDirectory() as tmp:
        fps, _ = timed(lambda: write_video(Path(tmp) / "p.mp4", rendered, fps=8), n)
    add("encode h264 crf 18", fps, n, "512x896 pose frames")

    # ---- DWPose
    from xdyna_core.preprocess.dwpose import DWPoseDetector, DWPoseModelsNotFound, find_dwpose_models

    with tempfile.TemporaryDirectory() as tmp:
        try:
            det_path, pose_path = find_dwpose_models(args.models)
            label, note = "dwpose (real models)", f"{det_path.parent}"
        except DWPoseModelsNotFound:
            from tests.core.test_dwpose import make_dot_pose_onnx, standard_detector

            det_path = standard_detector(Path(tmp) / "yolox_l.onnx")
            pose_path = make_dot_pose_onnx(Path(tmp) / "dw-ll_ucoco_384.onnx")
            label = "dwpose STAND-IN models"
            note = "real files absent: pre/post-processing only, networks not measured"
        det = DWPoseDetector(det_path, pose_path)
        det(frames[0][0])  # session warm-up
        fps, _ = timed(lambda: [det(f) for clip in frames for f in clip], n_all)
        add(label, fps, n_all, note + f"; {det.providers[0]}")

    # ---- MediaPipe
    try:
        from xdyna_core.preprocess.mediapipe_backend import MediaPipePoseDetector

        for name, kw in (("mediapipe pose", dict(with_hands=False, with_face=False)),
                         ("mediapipe holistic", dict())):
            mp_det = MediaPipePoseDetector(**kw)
            found = 0

            def run_mp():
                nonlocal found
                for clip in frames:
                    mp_det.reset()
                    found += sum(1 for f in clip if mp_det(f).people)

            fps, _ = timed(run_mp, n_all)
            mp_det.close()
            add(name, fps, n_all, f"tracking mode, person in {found}/{n_all}")
    except ImportError as e:
        rows.append(("mediapipe", float("nan"), 0, f"not installed ({str(e).splitlines()[0][:60]})"))

    # ---- face patches
    from xdyna_core.preprocess.face_patches import face_patches

    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([256 + 20 * np.cos(t), 150 + 25 * np.sin(t)], axis=1).astype(np.float32)
    clip = frames[0]
    fps, _ = timed(lambda: [face_patches(f, lm) for f in clip], len(clip))
    add("face patches 512x896", fps, len(clip), "local + global from 68 landmarks")

    print(f"\nPreprocessing throughput, CPU ({os.cpu_count()} cores), {len(videos)} driving videos, "
          f"{n} frames each where sampled\n")
    print(f"| {'step':<28} | {'frames/s':>9} | {'frames':>6} | note")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 8}|------")
    for name, fps, count, note in rows:
        fps_s = "n/a" if fps != fps else f"{fps:.1f}"
        print(f"| {name:<28} | {fps_s:>9} | {count:>6} | {note}")


if __name__ == "__main__":
    main()
