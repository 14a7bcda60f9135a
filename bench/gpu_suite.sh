#!/usr/bin/env bash
# The GPU figures of the speed/memory issue in one go (one H100/H200, ~6 min). Logs go to $OUT
# (or ./out). Run from the repository root:
#
#   bash bench/gpu_suite.sh [official-checkout]
#
# The official comparison runs when an X-Dyna checkout is given (default: ./.official, an ignored
# folder holding its animatediff/ and configs/) and diffusers imports; wheels in ./.whl are
# installed into /tmp/site first when present (machines without network).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
OFFICIAL=${1:-.official}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
log() { echo "== $*" | tee -a "$OUT/suite.log"; }
run() { log "$*"; "$@" 2>&1 | grep -v "it/s\]" | tee -a "$OUT/suite.log"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/suite.log"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/suite.log"

# 16 and 48 frames, 25 steps, fp16, with the fp16-vs-fp32 difference; 192 frames timed on 3 steps.
run python3 bench/bench_speed.py --frames 16 48 --steps 25 --dtype fp16 --compare-fp32
run python3 bench/bench_speed.py --frames 192 --steps 25 --time-steps 3 --dtype fp16
run python3 bench/bench_speed.py --frames 16 --steps 25 --dtype bf16
run python3 bench/bench_speed.py --frames 16 --steps 25 --dtype fp16 --window-batch 2

if [ -f "$OFFICIAL/animatediff/pipelines/pipeline_xdyna.py" ] && python3 -c "import diffusers" 2>/dev/null; then
  run python3 bench/official_compare.py --official-repo "$OFFICIAL" --frames 16 --steps 25 --dtype fp16 \
    --repeat 2 --json "$OUT/official_16.json"
else
  log "official comparison skipped (no checkout at $OFFICIAL or no diffusers)"
fi
