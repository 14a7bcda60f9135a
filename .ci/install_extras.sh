#!/usr/bin/env bash
# The zero-download pose backend the suite exercises: MediaPipe 0.10.14 (the last release with the
# bundled legacy models) installed without its heavy declared deps (jax, opencv-contrib, sounddevice).
# protobuf 6.31–6.33 satisfies onnx and still runs MediaPipe's graphs (see mediapipe_backend.py).
set -euo pipefail
constraints="${1:?constraints file}"
python -m pip install -q -c "$constraints" --no-deps mediapipe==0.10.14
python -m pip install -q -c "$constraints" absl-py attrs matplotlib "protobuf>=6.31.1,<7"
