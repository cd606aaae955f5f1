#!/usr/bin/env bash
# The zoo rows of `python -m seqlab.bench` on one GPU, in at most 8 minutes (issue 16, Speed).
#
#   OUT=/some/dir bash experiments/performance/zoo_gpu.sh
#
# Run from anywhere; it runs in the repository root. Needs no network: a Python (`$PYTHON`,
# default python3) on which `import jax` sees the GPU (jax[cuda]) and seqlab's dependencies
# (flax, optax, ml_collections, absl-py, numpy) import; torch is optional (with it, the GPT rows
# also train a nanoGPT-style PyTorch peer, eager and then under torch.compile). Nothing is
# installed. Every row trains batch 32 x seq 256 (fp32 with JAX's default TF32 matmuls, 20
# timed steps); the same-size LSTM is in every phase that trains.
#
# Phases, most important first, each a `python -m seqlab.bench` run cut off at the deadline
# (BUDGET_S, default 450 s from the start); each writes $OUT/NAME.json after every measurement
# (so a phase cut short keeps its rows), NAME.md (the tables) and NAME.log (progress, errors):
#   train_08M      every model at 0.8M, the scan models with both scans (which is faster here?)
#   train_5M       every model at 5M, the scan models with the associative scan
#   sample_08M     sampling chars/s at batch 1 and 64 (1,000 chars per call; GPT: 255)
#   gpt_compiled   the GPT rows again, the PyTorch peer under torch.compile (if torch imports)
#   sample_5M      sampling at 5M
#   train_5M_seq   the 5M scan models with the sequential scan
# $OUT/summary.txt says what ran, how long each took, and what was skipped for lack of time.
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/zoo_gpu}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-450}
STEPS=${STEPS:-20}
SMALL=${SMALL:-0.8M}  # SMALL=tiny LARGE=tiny: a quick check of this script on a CPU
LARGE=${LARGE:-5M}
mkdir -p "$OUT"
START=$SECONDS
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

log() { echo "$*" | tee -a "$SUMMARY"; }

log "zoo_gpu.sh started $(date -u +%FT%TZ), budget ${BUDGET_S}s, steps $STEPS"
(nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv) \
  > "$OUT/gpu.txt" 2>&1
"$PY" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import jax, platform
print('python', platform.python_version(), 'jax', jax.__version__, 'devices', jax.devices())
try:
  import torch
  print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
except ImportError:
  print('torch: not installed (the GPT peer rows will say so)')
EOF
cat "$OUT/versions.txt" | tee -a "$SUMMARY"
if "$PY" -c 'import torch' 2>/dev/null; then HAVE_TORCH=1; else HAVE_TORCH=0; fi

phase() {  # phase NAME MIN_SECONDS ARGS...: a bench run, if MIN_SECONDS are left before the deadline
  local name=$1 need=$2 left
  shift 2
  left=$((START + BUDGET_S - SECONDS))
  if [ "$left" -lt "$need" ]; then
    log "skipped $name: ${left}s left, it needs about ${need}s"
    return
  fi
  local t0=$SECONDS
  log "== $name (${left}s left): $PY -m seqlab.bench $*"
  timeout -k 5 "$left" "$PY" -m seqlab.bench "$@" --out "$OUT/$name.json" \
    > "$OUT/$name.md" 2> "$OUT/$name.log"
  log "   $name: exit $? after $((SECONDS - t0))s"
}

ZOO=(mingru minlstm hawk mamba gpt)
rows() {  # rows SIZE: lstm:SIZE,mingru:SIZE,...
  local size=$1
  local out="lstm:$size" m
  for m in "${ZOO[@]}"; do out="$out,$m:$size"; done
  echo "$out"
}
TORCH=--notorch; [ "$HAVE_TORCH" = 1 ] && TORCH=--torch

phase train_08M 60 --train "$(rows "$SMALL")" --scan sequential,associative --sample= \
  --steps "$STEPS" "$TORCH"
phase train_5M 60 --train "$(rows "$LARGE")" --scan associative --sample= --steps "$STEPS" "$TORCH"
phase sample_08M 45 --train= --sample "$(rows "$SMALL")" --sample_batches 1,64 \
  --sample_length 1000 --sample_repeats 3
if [ "$HAVE_TORCH" = 1 ]; then
  phase gpt_compiled 60 --train "gpt:$SMALL,gpt:$LARGE" --sample= --steps "$STEPS" --torch --torch_compile
fi
phase sample_5M 45 --train= --sample "$(rows "$LARGE")" --sample_batches 1,64 \
  --sample_length 1000 --sample_repeats 3
phase train_5M_seq 45 --train "mingru:$LARGE,minlstm:$LARGE,hawk:$LARGE,mamba:$LARGE" \
  --scan sequential \
  --sample= --steps "$STEPS" --notorch
log "zoo_gpu.sh done after $((SECONDS - START))s"
for f in "$OUT"/*.md; do echo "### $f"; cat "$f"; done
