#!/usr/bin/env bash
# Install what ComfyUI-XDyna needs into the current Python environment, never replacing torch:
#   bash install.sh          runtime (+ the MediaPipe zero-download pose/face extractor)
#   bash install.sh --test   the same plus the test dependencies
# Without torch, the CPU build torch==2.13.0 is installed first; on a GPU machine install your CUDA
# torch before running this. Every later pip call is constrained to the torch that is there.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-$(command -v python || command -v python3)}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" -c "import torch; print('torch==' + torch.__version__)" > "$constraints"
"$PY" -m pip install -q -c "$constraints" -r requirements.txt
# MediaPipe 0.10.14: the last release with the bundled legacy models. Its declared deps (jax,
# opencv-contrib, sounddevice, protobuf<5) are not needed; protobuf 6.31-6.33 also satisfies onnx.
"$PY" -m pip install -q -c "$constraints" --no-deps mediapipe==0.10.14
"$PY" -m pip install -q -c "$constraints" absl-py attrs matplotlib "protobuf>=6.31.1,<7"
if [ "${1:-}" = "--test" ]; then
  "$PY" -m pip install -q -c "$constraints" -r requirements-test.txt
fi
"$PY" -c "import torch; print('ComfyUI-XDyna dependencies installed (torch', torch.__version__ + ')')"
