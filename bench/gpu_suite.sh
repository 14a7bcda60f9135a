#!/usr/bin/env bash
# The GPU figures of the speed/memory issues in one go (one H100/H200). Logs go to $OUT
# (or ./out). Run from the repository root:
#
#   bash bench/gpu_suite.sh [official-checkout]
#
# PARTS picks groups (default: all, about 15 min; one device call may run 10 min at most, so split it:
# PARTS="base official" then PARTS="speedups fp8 compile"):
#   base      16/48/192 frames fp16 (+ fp32 difference), bf16
#   official  the official code in the same call (bench/official_compare.py)
#   speedups  window batching, channels-last, torch.compile, the layout leak, each vs plain fp16;
#             VAE decode: four-phase upsampler and frames per call vs literal and the official loop
#   fp8       fp8 weight storage: sampler speed/memory, output difference (bench_fp8.py)
#   compile   Inductor vs eager vs fp64 on the tiny, tiny-wide and full configs (bench_compile.py)
#
# The official comparison runs when an X-Dyna checkout is given (default: ./.official, an ignored
# folder holding its animatediff/ and configs/) and diffusers imports; wheels in ./.whl are
# installed into /tmp/site first when present (machines without network).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
OFFICIAL=${1:-.official}
PARTS=${PARTS:-base official speedups fp8 compile}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
log() { echo "== $*" | tee -a "$OUT/suite.log"; }
run() { log "$*"; "$@" 2>&1 | grep -v "it/s\]" | tee -a "$OUT/suite.log"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/suite.log"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/suite.log"

has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }

if has base; then
  # 16 and 48 frames, 25 steps, fp16, with the fp16-vs-fp32 difference; 192 frames timed on 3 steps.
  run python3 bench/bench_speed.py --frames 16 48 --steps 25 --dtype fp16 --compare-fp32
  run python3 bench/bench_speed.py --frames 192 --steps 25 --time-steps 3 --dtype fp16
  run python3 bench/bench_speed.py --frames 16 --steps 25 --dtype bf16
fi

if has official; then
  if [ -f "$OFFICIAL/animatediff/pipelines/pipeline_xdyna.py" ] && python3 -c "import diffusers" 2>/dev/null; then
    run python3 bench/official_compare.py --official-repo "$OFFICIAL" --frames 16 --steps 25 --dtype fp16 \
      --repeat 2 --json "$OUT/official_16.json"
  else
    log "official comparison skipped (no checkout at $OFFICIAL or no diffusers)"
  fi
fi

# Speed-ups, each against the plain fp16 16-frame run of the same call (printed first).
if has speedups; then
  run python3 bench/bench_speed.py --frames 16 --steps 25 --dtype fp16                       # before
  run python3 bench/bench_speed.py --frames 16 --steps 25 --dtype fp16 --window-batch 2      # 2 windows per UNet call
  run python3 bench/bench_speed.py --frames 16 48 --steps 25 --dtype fp16 --channels-last
  run python3 bench/bench_speed.py --frames 16 48 --steps 25 --dtype fp16 --compile default  # compile time printed apart
  run python3 bench/bench_layout.py --device cuda --latent 112 64 --rounds 5                 # layout leak, fp32
  run python3 bench/bench_decode.py --device cuda --dtype fp16 --frames 16 --size 512x896 --chunks 1 4 8
fi

# fp8 weight storage: memory and speed in the sampler, output difference of single calls.
if has fp8; then
  run python3 bench/bench_speed.py --frames 16 --steps 25 --dtype fp16 --weights fp8
  run python3 bench/bench_fp8.py --device cuda --compute fp16 --latent 112 64 --frames 16
fi

# torch.compile accuracy (Inductor vs eager vs fp64) and recompiles over timesteps.
if has compile; then
  run python3 bench/bench_compile.py --config tiny --device cuda
  run python3 bench/bench_compile.py --config tiny-wide --device cuda
  run python3 bench/bench_compile.py --config full --device cuda --dtype fp16 --frames 16 --latent 112 64
fi
