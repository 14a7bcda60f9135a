"""Measure the legacy MediaPipe 0.10.14 extractor's coverage of each shared example's official pose
video and store it, with provenance, as the reference the Tasks extractor is tested against
(tests/core/test_mediapipe_coverage.py). 0.10.14 and the Tasks runtime (mediapipe 1.2.3) are the
same package and cannot share a venv, so the figure is measured once, here, in a venv with 0.10.14:

    python bench/mediapipe_reference.py --assets ../shared/assets

Writes tests/core/mediapipe_legacy_reference.json.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "tests" / "core" / "mediapipe_legacy_reference.json"


def main(argv=None) -> int:
    from xdyna_core.preprocess import mediapipe_coverage as cov
    from xdyna_core.preprocess.mediapipe_backend import MediaPipePoseDetector, import_mediapipe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", default=os.environ.get("XDYNA_ASSETS_DIR", str(REPO.parent / "shared" / "assets")))
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    mp = import_mediapipe()  # ImportError unless this venv has mediapipe 0.10.14
    examples = {}
    with MediaPipePoseDetector(static_image_mode=True) as det:
        for k in cov.EXAMPLES:
            drv, pose = cov.example_videos(a.assets, k)
            frames, official = cov.sampled_frames(drv), cov.sampled_frames(pose)
            t = time.perf_counter()
            r = cov.official_coverage(det, frames, official)
            dt = time.perf_counter() - t
            examples[str(k)] = {
                "coverage": round(r.covered, 4), "precision": round(r.precision, 4),
                "frames": r.frames, "driving_frames_sha256": cov.frames_digest(frames),
                "official_frames_sha256": cov.frames_digest(official),
            }
            print(f"example {k}: coverage {r.covered:.4f} precision {r.precision:.4f} ({len(frames) / dt:.1f} frames/s)")
    doc = {
        "what": "coverage of the official pose video by the legacy MediaPipe extractor "
                "(xdyna_core.preprocess.mediapipe_backend, static_image_mode=True; protocol in "
                "xdyna_core/preprocess/mediapipe_coverage.py)",
        "made_by": "bench/mediapipe_reference.py",
        "mediapipe": mp.__version__, "python": platform.python_version(),
        "protocol": {"sample_step": cov.SAMPLE_STEP, "samples": cov.SAMPLES, "tolerance_px": cov.TOLERANCE_PX},
        "examples": examples,
    }
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
