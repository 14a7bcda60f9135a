"""Run by ComfyUI-Manager after `pip install -r requirements.txt` (and at the end of install.sh).

Sets up the zero-file pose extractor when this Python has none: MediaPipe's Tasks runtime
(mediapipe 1.2.3, a py3-none wheel, installed with --no-deps so that its opencv-contrib-python
does not clash with our opencv-python-headless) and the three .task bundles built from the models
of the sha256-pinned mediapipe 0.10.14 wheel (xdyna_core/preprocess/mediapipe_models.py). Both are
registry downloads made here, once; nothing is downloaded at run time. Left alone: DWPose files
(then MediaPipe is optional and still set up), an installed mediapipe 0.10.14 (legacy solutions,
used as is) and any other installed mediapipe (another pack's; never replaced).

Prints one line saying what it did and which extractor this set-up gets. It never fails the
install: without network it says so and exits 0. `--check`: report only, install nothing.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: What the Tasks runtime needs besides numpy (the versions mediapipe 1.2.3 declares); its other
#: declared deps (opencv-contrib-python, sounddevice) are not used by the landmarkers.
TASKS_DEPS = ("absl-py~=2.3", "flatbuffers~=25.9", "certifi", "matplotlib")
TASKS_DEP_MODULES = ("absl", "flatbuffers", "certifi", "matplotlib")
PIP_TIMEOUT_S = 900


def _pip(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args],
                       capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed: "
                           f"{(r.stderr.strip().splitlines() or ['no output'])[-1]}")


def set_up_mediapipe() -> str:
    """Install the Tasks runtime and build the bundles where missing; returns what was done."""
    import importlib
    import importlib.util

    from xdyna_core.preprocess import mediapipe_backend as mpb
    from xdyna_core.preprocess import mediapipe_models as mm

    v = mpb.installed_mediapipe()
    if mpb.is_legacy(v) or (v is not None and v != mm.TASKS_VERSION):
        return f"kept the installed mediapipe {v}"
    done = []
    if v is None:
        _pip("--no-deps", f"mediapipe=={mm.TASKS_VERSION}")
        done.append(f"installed mediapipe {mm.TASKS_VERSION} (Tasks runtime)")
    if any(importlib.util.find_spec(m) is None for m in TASKS_DEP_MODULES):
        _pip(*TASKS_DEPS)
        done.append(f"installed {', '.join(TASKS_DEPS)}")
    importlib.invalidate_caches()
    try:
        mm.find_bundles()
    except FileNotFoundError:
        mm.download_and_build()
        done.append(f"built the MediaPipe models in {mm.models_dir()}")
    return ", ".join(done) or "MediaPipe already set up"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, HERE)
    did = ""
    try:
        if "--check" not in argv:
            try:
                did = set_up_mediapipe() + "; "
            except Exception as e:  # no network, no wheel for this platform...: report, never fail the install
                did = f"MediaPipe not set up ({type(e).__name__}: {e}); "
        from xdyna_core.preprocess.detectors import pose_extractor_status

        print(f"ComfyUI-XDyna: {did}{pose_extractor_status()}")
    except Exception as e:  # a report only: an unexpected problem must not fail the install
        print(f"ComfyUI-XDyna: {did}could not check the pose extractor ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
