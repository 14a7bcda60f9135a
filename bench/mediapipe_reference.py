"""Measure the legacy MediaPipe 0.10.14 extractor's coverage of each shared example's official pose
video and store it, with provenance, as the reference the Tasks extractor is tested against
(tests/core/test_mediapipe_coverage.py). 0.10.14 and the Tasks runtime (mediapipe 1.2.3) are the
same package and cannot share a venv, so the figure is measured once, here, in a venv with 0.10.14:

    python bench/mediapipe_reference.py    (the shared examples: tests/data/assets, or --assets DIR)

Writes tests/core/mediapipe_legacy_reference.json: the coverage figures, and the legacy graphs'
landmarks (pose on the demo reference image, face mesh and hands on square crops of it) that
tests/core/test_mediapipe_tasks.py compares the rewritten models' Tasks output with.
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


def _crop(image, box, size):
    import cv2
    import numpy as np

    x0, y0, x1, y1 = box
    s = size / (x1 - x0)
    M = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def legacy_landmarks(mp) -> dict:
    """Legacy Pose / FaceMesh / Hands (static image mode) on the demo reference image and on square
    crops of it (boxes stored, in image pixels); points in pixels of what each graph was fed."""
    import numpy as np

    from xdyna_core.cli.animate import DEMO_ASSETS
    from xdyna_core.preprocess.face_landmarks import face_box_from_pose
    from xdyna_core.preprocess.mediapipe_backend import body_from_blazepose
    from xdyna_core.preprocess.mediapipe_tasks import hand_box
    from xdyna_core.preprocess.keypoints import Person
    from xdyna_core.preprocess.video import read_video

    image = read_video(DEMO_ASSETS / "reference.jpg", frame_count=1)[0][0]
    clip = read_video(DEMO_ASSETS / "driving.mp4", frame_count=1)[0][0]  # hands: its first frame
    h, w = image.shape[:2]
    pts = lambda lms, W, H: [[round(p.x * W, 3), round(p.y * H, 3)] for p in lms]
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        lm = pose.process(image).pose_landmarks.landmark
    vis = [round(p.visibility, 3) for p in lm]
    out = {"image": "xdyna_core/demo_assets/reference.jpg", "crop_size": 256,
           "pose": {"points": pts(lm, w, h), "visibility": vis}}
    box = [round(float(v), 2) for v in face_box_from_pose(Person(body_from_blazepose(lm, w, h)))]
    c, half = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), (box[2] - box[0])  # crop: 2x the face box
    fbox = [round(c[0] - half, 2), round(c[1] - half, 2), round(c[0] + half, 2), round(c[1] + half, 2)]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as fm:
        face = fm.process(_crop(image, fbox, 256)).multi_face_landmarks[0].landmark
    out["face"] = {"box": fbox, "points": pts(face, 256, 256)}
    out["hands"] = []
    ch, cw = clip.shape[:2]
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        clm = pose.process(clip).pose_landmarks.landmark
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1) as hands:
        for side in ("left", "right"):
            found = hand_box(clm, cw, ch, side)
            if found is None:
                continue
            hbox = [round(float(v), 2) for v in found[0]]
            res = hands.process(_crop(clip, hbox, 256))
            for hl in res.multi_hand_landmarks or []:
                out["hands"].append({"image": "xdyna_core/demo_assets/driving.mp4 frame 0", "box": hbox,
                                     "points": pts(hl.landmark, 256, 256)})
    print(f"landmarks: pose 33, face {len(face)}, hands {len(out['hands'])}")
    return out


def main(argv=None) -> int:
    from xdyna_core.preprocess import mediapipe_coverage as cov
    from xdyna_core.preprocess.mediapipe_backend import MediaPipePoseDetector, import_mediapipe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", default=os.environ.get("XDYNA_ASSETS_DIR", str(REPO / "tests" / "data" / "assets")))
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
    doc_landmarks = legacy_landmarks(mp)
    doc = {
        "what": "coverage of the official pose video by the legacy MediaPipe extractor "
                "(xdyna_core.preprocess.mediapipe_backend, static_image_mode=True; protocol in "
                "xdyna_core/preprocess/mediapipe_coverage.py)",
        "made_by": "bench/mediapipe_reference.py",
        "mediapipe": mp.__version__, "python": platform.python_version(),
        "protocol": {"sample_step": cov.SAMPLE_STEP, "samples": cov.SAMPLES, "tolerance_px": cov.TOLERANCE_PX},
        "examples": examples,
        "landmarks": doc_landmarks,
    }
    Path(a.out).write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items()) + "\n}\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
