#!/usr/bin/env bash
# Issue 17 on one GPU, in at most 8 minutes: nanoGPT's baby GPT (configs/zoo.py:nanogpt, its
# shakespeare_char settings, 5,000 steps) and a recipe trained for the same training time
# (the sum of train-step times, results.json's train_time), both scored under both protocols.
#
#   OUT=/some/dir bash experiments/zoo/gpu.sh
#   RECIPE=configs/shakespeare.py OUT=... bash experiments/zoo/gpu.sh  # another recipe
# The default recipe is the CPU study's best, configs/zoo.py:hawk_cpu15 (Hawk at 5M).
#
# Runs in the repository root; needs no network: a Python ($PYTHON, default python3) on which
# `import jax` sees the GPU, seqlab's dependencies, and tiny Shakespeare under $SEQLAB_DATA_DIR
# (default ../shared/data). Steps:
#   1. the baby GPT, GPT_STEPS steps (default 5000), every 500 steps both protocols, window 256;
#   2. a 100-step speed probe of RECIPE (seconds per train step);
#   3. RECIPE for the GPT's train_time at that speed, both protocols, window 256.
# Writes $OUT/{gpt,probe,recipe}/ (run directories without checkpoints), $OUT/*.log and
# $OUT/summary.md (the two rows: steps, train_time, val loss stream / windows +- stderr, and
# nanoGPT's reported 1.4697 for reference). A check on a CPU: SMOKE=1 (the ,smoke variants).
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/zoo_gpu}
PY=${PYTHON:-python3}
RECIPE=${RECIPE:-configs/zoo.py:hawk_cpu15}
GPT_STEPS=${GPT_STEPS:-5000}
SMOKE=${SMOKE:-0}
export SEQLAB_DATA_DIR=${SEQLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
mkdir -p "$OUT"
suffix=""; recipe_suffix=""; extra=()
if [ "$SMOKE" = 1 ]; then
  suffix=",smoke"; GPT_STEPS=20
  case "$RECIPE" in *:*) recipe_suffix=",smoke" ;; *) recipe_suffix=":smoke" ;; esac
fi
common=(--config.log.novelty_num_samples=0 --config.log.sample_every_steps=1000000
        --config.eval.both_protocols=True)

run() {  # NAME CONFIG ARGS...: a fresh run directory $OUT/NAME, its output in $OUT/NAME.log
  local name=$1 config=$2; shift 2
  rm -rf "${OUT:?}/$name"
  "$PY" launch.py --config "$config" --workdir "$OUT/$name" "${common[@]}" "$@" \
      > "$OUT/$name.log" 2>&1
  local status=$?
  rm -rf "${OUT:?}/$name/checkpoints"  # what comes back is the numbers, not the weights
  tail -n 3 "$OUT/$name.log"
  return $status
}

field() {  # RUN_DIR KEY: a results.json field
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1] + '/results.json'))[sys.argv[2]])" "$1" "$2"
}

if [ "$SMOKE" = 1 ]; then
  extra=(--config.eval.window=32)
  gpt_window=(--config.eval.window=32)
else
  extra=(--config.eval.window=256)
  gpt_window=(--config.eval.window=256 --config.eval.every_steps=500)
fi
run gpt "configs/zoo.py:nanogpt$suffix" --config.train.num_steps="$GPT_STEPS" "${gpt_window[@]}" \
  || { echo "the GPT run failed: $OUT/gpt.log"; exit 1; }
budget=$(field "$OUT/gpt" train_time)
run probe "$RECIPE$recipe_suffix" --config.train.num_steps=100 --config.eval.every_steps=100 \
    --config.data.test_fraction=0.0 "${extra[@]}" \
  || { echo "the recipe's probe failed: $OUT/probe.log"; exit 1; }
per_step=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1]+'/results.json')); \
c=json.load(open(sys.argv[1]+'/config.json')); \
print(c['data']['batch_size']*c['data']['seq_len']/r['chars_per_sec'])" "$OUT/probe")
steps=$("$PY" -c "import sys; print(max(1, int(float(sys.argv[1]) / float(sys.argv[2]))))" "$budget" "$per_step")
every=$(( steps / 10 > 0 ? steps / 10 : 1 ))
run recipe "$RECIPE$recipe_suffix" --config.train.num_steps="$steps" --config.eval.every_steps="$every" \
    --config.log.checkpoint_every_steps="$every" "${extra[@]}" \
  || { echo "the recipe's run failed: $OUT/recipe.log"; exit 1; }
{
  echo "| run | config | steps | train_time (s) | val loss, stream | val loss, windows | params |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for name in gpt recipe; do
    "$PY" - "$OUT/$name" "$name" <<'EOF'
import json, sys
run, name = sys.argv[1], sys.argv[2]
r = json.load(open(run + '/results.json'))
c = json.load(open(run + '/config.json'))
model = c['model'].get('name', 'char_rnn')
print(f"| {name} | {model} | {r['steps']} | {r['train_time']:.1f} | {r['val_loss_stream']:.4f} | "
      f"{r['val_loss_windows']:.4f} +- {r['val_loss_windows_stderr'] or 0:.4f} | {r['num_params']:,} |")
EOF
  done
  echo
  echo "nanoGPT reports 1.4697 for its baby GPT (its own protocol: 200 random windows of 256)."
  echo "The GPT's stream column is sliding windows of 256 scoring their second half."
} > "$OUT/summary.md"
cat "$OUT/summary.md"
