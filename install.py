"""Run by ComfyUI-Manager after `pip install -r requirements.txt` (and at the end of install.sh).

Everything ComfyUI-XDyna needs installs from requirements.txt, so this installs nothing and never
downloads: it says in one line which pose/face extractor this set-up gets, or which file to place
where when there is none. It never fails the install.
"""
import os
import sys


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        from xdyna_core.preprocess.detectors import pose_extractor_status

        print(f"ComfyUI-XDyna: {pose_extractor_status()}")
    except Exception as e:  # a report only: an unexpected problem must not fail the install
        print(f"ComfyUI-XDyna: could not check the pose extractor ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
