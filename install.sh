#!/usr/bin/env bash
# Install what ComfyUI-XDyna needs into the current Python environment, never replacing torch:
#   bash install.sh               requirements.txt (everything needed at run time)
#   bash install.sh --mediapipe   ... plus the optional MediaPipe 0.10.14 extractor (Python 3.10-3.12)
#   bash install.sh --test        ... plus MediaPipe and the test dependencies
# Without torch, the CPU build torch==2.13.0 is installed first (the one thing requirements.txt
# cannot do: ComfyUI brings its own torch); on a GPU machine install your CUDA torch before this.
# Every later pip call is constrained to the torch that is there.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-$(command -v python || command -v python3)}"
mediapipe=0 tests=0
for arg in "$@"; do
  case "$arg" in
    --mediapipe) mediapipe=1 ;;
    --test) mediapipe=1 tests=1 ;;
    *) echo "usage: bash install.sh [--mediapipe] [--test]" >&2; exit 2 ;;
  esac
done
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" -c "import torch; print('torch==' + torch.__version__)" > "$constraints"
"$PY" -m pip install -q -c "$constraints" -r requirements.txt
if [ "$tests" = 1 ]; then
  "$PY" -m pip install -q -c "$constraints" -r requirements-test.txt
fi
if [ "$mediapipe" = 1 ]; then
  if "$PY" -c "import sys; sys.exit(sys.version_info >= (3, 13))"; then
    # MediaPipe 0.10.14: the last release with bundled legacy models. Its declared deps (jax,
    # opencv-contrib, sounddevice, protobuf<5) are not needed: install the few it uses first, then
    # the wheel itself without deps and last, so pip has no declared conflict to report.
    # protobuf 6.31-6.33 runs it (see mediapipe_backend.py) and satisfies onnx.
    "$PY" -m pip install -q -c "$constraints" absl-py attrs matplotlib flatbuffers "protobuf>=6.31.1,<7"
    "$PY" -m pip install -q -c "$constraints" --no-deps mediapipe==0.10.14
  else
    echo "MediaPipe 0.10.14 has no wheel for Python 3.13+: skipped (DWPose files are the pose extractor there)"
  fi
fi
"$PY" install.py
"$PY" -c "import torch; print('ComfyUI-XDyna dependencies installed (torch', torch.__version__ + ')')"
