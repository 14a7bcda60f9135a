"""Run by ComfyUI-Manager after `pip install -r requirements.txt` (and at the end of install.sh).

Sets up the zero-file pose extractor (xdyna_core.preprocess.mediapipe_models.set_up): MediaPipe's
Tasks runtime (mediapipe 1.2.3, a py3-none wheel, installed with --no-deps so that its
opencv-contrib-python does not clash with our opencv-python-headless) and the three .task bundles
built from the models of the sha256-pinned mediapipe 0.10.14 wheel. Both are registry downloads
made here, once; nothing is downloaded at run time. Left alone: an installed mediapipe 0.10.14
(legacy solutions, used as is) and any other installed mediapipe (another pack's; never replaced).

Prints one line saying what it did and which extractor this set-up gets. It never fails the
install: without network it says so and exits 0. `--check`: report only, install nothing.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, HERE)
    did = ""
    try:
        if "--check" not in argv:
            try:
                from xdyna_core.preprocess.mediapipe_models import set_up

                did = set_up() + "; "
            except Exception as e:  # no network, no wheel for this platform...: report, never fail the install
                did = f"MediaPipe not set up ({type(e).__name__}: {e}); "
        from xdyna_core.preprocess.detectors import pose_extractor_status

        print(f"ComfyUI-XDyna: {did}{pose_extractor_status()}")
    except Exception as e:  # a report only: an unexpected problem must not fail the install
        print(f"ComfyUI-XDyna: {did}could not check the pose extractor ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
