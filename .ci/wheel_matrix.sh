#!/usr/bin/env bash
# Every line of requirements.txt must install from wheels (no source build) on the platforms
# ComfyUI users have: CPython 3.10-3.13 on Windows x64 (the portable build), Linux x86_64 and
# macOS arm64. Resolver dry runs against the package registry (all at once: they mostly wait on
# the network); nothing is installed. Prints the versions chosen for the main packages.
#   bash .ci/wheel_matrix.sh [requirements file]
set -uo pipefail
cd "$(dirname "$0")/.."
REQ="${1:-requirements.txt}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Linux: manylinux2014 plus glibc 2.28 (onnxruntime publishes manylinux_2_27/2_28 wheels only).
# macOS: 13+ on Apple silicon (PyAV 14.2+ has no wheel for older macOS).
PLATFORMS=(win_amd64 "manylinux2014_x86_64 manylinux_2_28_x86_64" macosx_13_0_arm64)
combos=()
for pyver in 3.10 3.11 3.12 3.13; do
  for platform in "${PLATFORMS[@]}"; do
    i=${#combos[@]}
    combos+=("cp${pyver/./} $platform")
    # shellcheck disable=SC2046
    ( "$PY" -m pip install --dry-run --quiet --report "$work/$i.json" --only-binary=:all: --ignore-installed \
        --target "$work/t$i" --python-version "$pyver" $(printf -- "--platform %s " $platform) -r "$REQ" \
        > "$work/$i.log" 2>&1; echo $? > "$work/$i.rc" ) &
  done
done
wait
fail=0
for i in "${!combos[@]}"; do
  if [ "$(cat "$work/$i.rc")" = 0 ]; then
    picks=$("$PY" -c '
import json, sys
keys = ("numpy", "onnxruntime", "av", "opencv-python-headless", "transformers", "tokenizers", "aiohttp")
got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
print(" ".join(f"{k}=={got[k]}" for k in keys if k in got))' "$work/$i.json")
    echo "ok   ${combos[$i]}: $picks"
  else
    echo "FAIL ${combos[$i]}:"
    grep -E "ERROR" "$work/$i.log" | head -3
    fail=1
  fi
done
exit $fail
