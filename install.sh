#!/usr/bin/env bash
# Install what ComfyUI-XDyna needs into the current Python environment (standalone use; ComfyUI users
# need only requirements.txt). An installed torch is never replaced.
#   bash install.sh               requirements.txt (everything needed at run time), then install.py
#   bash install.sh --mediapipe   ... plus the optional MediaPipe 0.10.14 extractor (Python 3.10-3.12);
#                                 exits non-zero when that extractor does not open afterwards
#   bash install.sh --test        ... plus MediaPipe (when it installs) and the test dependencies
#   --torch pypi|cpu|cuda|skip    which torch==2.13.0 to install when there is none (or XDYNA_TORCH):
#     pypi (default)  whatever pip's index serves: PyPI's Linux x86_64 wheel is the CUDA 13.0 build
#                     (~5 GB with its nvidia packages), its Windows and macOS wheels are CPU builds
#     cpu             the CPU build (PyTorch's CPU index; PyPI's wheel on macOS), ~200 MB
#     cuda            the CUDA 13.0 build (PyPI on Linux x86_64, else PyTorch's cu130 index)
#     skip            no torch: install your own build first
#   --dry-run                     print the pip commands instead of running them (the checks still run)
# Every pip call is constrained to the torch there is, and torch is not imported before numpy is in.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-$(command -v python || command -v python3)}"
TORCH_VERSION=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
CUDA_INDEX=https://download.pytorch.org/whl/cu130
usage="usage: bash install.sh [--mediapipe] [--test] [--torch pypi|cpu|cuda|skip] [--dry-run]"
mediapipe=0 require_mediapipe=0 tests=0 dry=0 torch_choice="${XDYNA_TORCH:-pypi}"
while [ $# -gt 0 ]; do
  case "$1" in
    --mediapipe) mediapipe=1 require_mediapipe=1 ;;
    --test) mediapipe=1 tests=1 ;;
    --dry-run) dry=1 ;;
    --torch) torch_choice="${2:-}"; shift ;;
    --torch=*) torch_choice="${1#--torch=}" ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
case "$torch_choice" in
  pypi|cpu|cuda|skip) ;;
  *) echo "install.sh: --torch (or XDYNA_TORCH) must be pypi, cpu, cuda or skip, got '$torch_choice'" >&2; exit 2 ;;
esac

pip() {
  if [ "$dry" = 1 ]; then echo "would run: $PY -m pip $*"; else "$PY" -m pip "$@"; fi
}
# The installed torch's version from its package metadata: importing torch before numpy is installed
# prints torch's "Failed to initialize NumPy" warning.
installed_torch() {
  "$PY" -c "from importlib.metadata import version, PackageNotFoundError
try: print(version('torch'))
except PackageNotFoundError: pass"
}
platform="$("$PY" -c "import platform, sys; print(sys.platform, platform.machine().lower())")"

torch_version="$(installed_torch)"
if [ -n "$torch_version" ]; then
  [ "$torch_choice" = pypi ] || echo "keeping the installed torch $torch_version (--torch $torch_choice applies only where there is none)"
elif [ "$torch_choice" = skip ]; then
  echo "no torch installed (--torch skip): install a torch build before using ComfyUI-XDyna (see README)"
else
  source_args=()
  case "$torch_choice:$platform" in
    pypi:*) echo "installing torch==$TORCH_VERSION from pip's index (PyPI's: CUDA 13.0 on Linux x86_64, ~5 GB; --torch cpu for the CPU build)" ;;
    cpu:darwin*) echo "installing torch==$TORCH_VERSION, CPU build (PyPI's macOS wheel)" ;;
    cpu:*) echo "installing torch==$TORCH_VERSION, CPU build ($CPU_INDEX)"; source_args=(--index-url "$CPU_INDEX") ;;
    cuda:darwin*) echo "install.sh: --torch cuda: there is no CUDA torch for macOS (use --torch cpu)" >&2; exit 2 ;;
    cuda:"linux x86_64") echo "installing torch==$TORCH_VERSION, CUDA 13.0 build (PyPI's Linux x86_64 wheel, ~5 GB)" ;;
    cuda:*) echo "installing torch==$TORCH_VERSION, CUDA 13.0 build ($CUDA_INDEX)"; source_args=(--index-url "$CUDA_INDEX") ;;
  esac
  pip install -q "torch==$TORCH_VERSION" ${source_args[@]+"${source_args[@]}"}  # bash 3.2 (macOS): no empty "${a[@]}" under set -u
  torch_version="$(installed_torch)"
  [ -n "$torch_version" ] || torch_version="$TORCH_VERSION"  # dry run
fi

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
[ -z "$torch_version" ] || echo "torch==$torch_version" > "$constraints"
pip install -q -c "$constraints" -r requirements.txt
if [ "$tests" = 1 ]; then
  pip install -q -c "$constraints" -r requirements-test.txt
fi
if [ "$mediapipe" = 1 ]; then
  if "$PY" -c "import sys; sys.exit(sys.version_info >= (3, 13))"; then
    # MediaPipe 0.10.14: the last release with bundled legacy models. Its declared deps (jax,
    # opencv-contrib, sounddevice, protobuf<5) are not needed: install the few it uses first, then
    # the wheel itself without deps and last, so pip has no declared conflict to report.
    # protobuf 6.31-6.33 runs it (see mediapipe_backend.py) and satisfies onnx.
    pip install -q -c "$constraints" absl-py attrs matplotlib flatbuffers "protobuf>=6.31.1,<7"
    pip install -q -c "$constraints" --no-deps mediapipe==0.10.14
  else
    echo "MediaPipe 0.10.14 has no wheel for Python 3.13+: install.py sets up the MediaPipe Tasks runtime instead"
  fi
fi
if [ "$dry" = 1 ]; then "$PY" install.py --check; else "$PY" install.py; fi  # install.py installs MediaPipe (Tasks)
if [ "$require_mediapipe" = 1 ]; then
  # asked for by name: an extractor that does not open is a failed install
  if ! err="$("$PY" -c "from xdyna_core.preprocess.detectors import make_pose_detector
make_pose_detector('mediapipe', static_images=True)" 2>&1 >/dev/null)"; then
    echo "install.sh: --mediapipe: the MediaPipe pose extractor does not open with $PY: $(tail -n 1 <<< "$err")" >&2
    exit 1
  fi
  echo "ComfyUI-XDyna: the MediaPipe pose extractor opens"
fi
if [ "$dry" = 1 ]; then
  echo "dry run: nothing installed (torch ${torch_version:-none})"
else
  echo "ComfyUI-XDyna dependencies installed (torch ${torch_version:-none})"
fi
