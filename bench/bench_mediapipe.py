"""MediaPipe extractors side by side: legacy 0.10.14 (mp.solutions Holistic) and the Tasks runtime
(mediapipe 1.2.3 with the rewritten 0.10.14 models) cannot share a venv, so this runs one child
per given interpreter, in one run, on the same clip, and prints one table:

    python bench/bench_mediapipe.py --python VENV311/bin/python --python VENV313/bin/python

Per interpreter: mediapipe version; CPU speed in frames/s of the pose extractor as the job uses it
(video mode: tracking, body + hands + face) and as the coverage test uses it (static images);
and, with --coverage, the coverage of each shared example's official pose video (the acceptance
measure, xdyna_core/preprocess/mediapipe_coverage.py). Threads: OMP/TFLite as the process gets them
(set OMP_NUM_THREADS to compare on a loaded machine).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(assets: str, frames_n: int, coverage: bool) -> dict:
    sys.path.insert(0, str(REPO))
    from xdyna_core.preprocess import mediapipe_coverage as cov
    from xdyna_core.preprocess.mediapipe_backend import installed_mediapipe, open_pose_detector

    drv, _ = cov.example_videos(assets, 1)
    clip = cov.sampled_frames(drv, step=1, count=frames_n)
    out = {"python": platform.python_version(), "mediapipe": installed_mediapipe(), "frames": len(clip),
           "clip": os.path.basename(drv)}
    for name, static in (("video_fps", False), ("static_fps", True)):
        with open_pose_detector(static_image_mode=static) as det:
            det(clip[0])  # graph/model set-up outside the timing
            if hasattr(det, "reset"):
                det.reset()
            t = time.perf_counter()
            for f in clip:
                det(f)
            out[name] = round(len(clip) / (time.perf_counter() - t), 2)
    if coverage:
        with open_pose_detector(static_image_mode=True) as det:
            for k in cov.EXAMPLES:
                d, p = cov.example_videos(assets, k)
                out[f"coverage_{k}"] = round(cov.official_coverage(det, cov.sampled_frames(d), cov.sampled_frames(p)).covered, 4)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", action="append", default=[], help="interpreter to measure (repeat)")
    p.add_argument("--assets", default=os.environ.get("XDYNA_ASSETS_DIR", str(REPO / "tests" / "data" / "assets")))
    p.add_argument("--frames", type=int, default=48, help="consecutive frames of example 1's driving clip")
    p.add_argument("--coverage", action="store_true", help="also measure the official-pose-video coverage")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(child(a.assets, a.frames, a.coverage)))
        return 0
    rows = []
    for py in a.python or [sys.executable]:
        cmd = [py, __file__, "--child", "--assets", a.assets, "--frames", str(a.frames)] + (["--coverage"] if a.coverage else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        line = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            print(f"{py}: failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        rows.append(json.loads(line[-1][7:]))
    keys = ["python", "mediapipe", "clip", "frames", "video_fps", "static_fps"] + \
        [k for k in ("coverage_1", "coverage_2", "coverage_3") if rows and k in rows[0]]
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r.get(k, "")) for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
