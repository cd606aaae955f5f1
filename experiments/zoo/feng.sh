#!/usr/bin/env bash
# Feng et al. 2024 ("Were RNNs All We Needed?") on one GPU, in at most about 8 minutes:
# configs/zoo.py's feng_mingru, feng_minlstm, feng_mamba and feng_gpt (their shakespeare_char
# setting: 3x384, dropout 0.2, AdamW 1e-3, batch 64 x 256, clip 0.25, 5,000 steps), one after
# another, each scored under both protocols and set beside the paper's numbers.
#
#   OUT=/some/dir bash experiments/zoo/feng.sh
#   MODELS="feng_mingru feng_gpt" TOTAL_SECONDS=900 OUT=... bash experiments/zoo/feng.sh
#
# Runs in the repository root; needs no network: a Python ($PYTHON, default python3) on which
# `import jax` sees the GPU, seqlab's dependencies, and tiny Shakespeare under $SEQLAB_DATA_DIR
# (default ../shared/data). The time limit: TOTAL_SECONDS (default 450) for all the models,
# shared out as they go: each model's training process may run (what is left) / (models left)
# minus FINISH_SECONDS (default 30, kept for the step below), so a model that finishes early
# leaves its time to the next. A model still training at its limit gets SIGTERM, stops after
# its current step with a checkpoint (seqlab's preemption path), and is then finished by
# re-running it with train.num_steps set to the step it reached: the final evaluation (both
# protocols) and results.json of that shorter run. Its learning rate followed the 5,000-step
# schedule until the cut (the first S steps of the paper's run, not a run of S steps), and the
# summary says so. Evaluation every 250 steps (the variants'; EVERY=25 for the paper's cadence,
# at 10x the evaluation time).
# Writes $OUT/<variant>/ (run directories without checkpoints), $OUT/<variant>.log and
# $OUT/summary.md: per model its steps, train_time, final val loss under both protocols
# (stream; windows of 256 +- stderr), the best of each over the evaluations and the step, and
# the paper's reported test loss and best step. A check on a CPU: SMOKE=1 (the ,smoke variants,
# 40 steps each, a minute or two in all); SMOKE=1 STEPS=3000 TOTAL_SECONDS=200 also exercises
# the cut.
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/zoo_feng}
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
MODELS=${MODELS:-feng_mingru feng_minlstm feng_mamba feng_gpt}
TOTAL_SECONDS=${TOTAL_SECONDS:-450}
FINISH_SECONDS=${FINISH_SECONDS:-30}
EVERY=${EVERY:-}
export SEQLAB_DATA_DIR=${SEQLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
mkdir -p "$OUT"
suffix=""
if [ "$SMOKE" = 1 ]; then
  suffix=",smoke"; STEPS=${STEPS:-40}
else
  STEPS=${STEPS:-5000}
fi
common=(--config.train.num_steps="$STEPS" --config.log.novelty_num_samples=0
        --config.log.sample_steps="()" --config.log.sample_every_steps=1000000
        --config.eval.both_protocols=True)
[ -n "$EVERY" ] && common+=(--config.eval.every_steps="$EVERY")

latest_step() {  # RUN_DIR: the step of its newest complete 'latest' checkpoint, or nothing
  ls "$1/checkpoints/latest" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1
}

start=$SECONDS
set -- $MODELS
left_models=$#
for name in $MODELS; do
  config="configs/zoo.py:$name$suffix"
  left=$(( TOTAL_SECONDS - (SECONDS - start) ))
  limit=$(( left / left_models - FINISH_SECONDS ))
  left_models=$(( left_models - 1 ))
  rm -rf "${OUT:?}/$name" "$OUT/$name.log" "$OUT/$name.status"
  if [ "$limit" -lt 30 ]; then
    echo "skipped: $limit s left for it" > "$OUT/$name.status"
    echo "$name: skipped, the time is spent"; continue
  fi
  t0=$SECONDS
  echo "$name: training, at most $limit s ($config)"
  timeout -s TERM -k 60 "$limit" "$PY" launch.py --config "$config" --workdir "$OUT/$name" \
      "${common[@]}" > "$OUT/$name.log" 2>&1
  status=$?
  if [ -f "$OUT/$name/results.json" ]; then
    echo "complete" > "$OUT/$name.status"
  elif step=$(latest_step "$OUT/$name") && [ -n "$step" ]; then
    echo "$name: cut at step $step of $STEPS by the time limit; finishing it (final evaluation)"
    echo "=== feng.sh: cut at step $step (exit status $status); finished with" \
         "--config.train.num_steps=$step ===" >> "$OUT/$name.log"
    timeout -s TERM -k 30 $(( 3 * FINISH_SECONDS )) "$PY" launch.py --config "$config" \
        --workdir "$OUT/$name" "${common[@]}" --config.train.num_steps="$step" \
        >> "$OUT/$name.log" 2>&1
    if [ -f "$OUT/$name/results.json" ]; then
      echo "cut $step" > "$OUT/$name.status"
    else
      echo "failed: the finishing run wrote no results.json" > "$OUT/$name.status"
    fi
  else
    echo "failed: exit status $status, no checkpoint (see $name.log)" > "$OUT/$name.status"
  fi
  rm -rf "${OUT:?}/$name/checkpoints"  # what comes back is the numbers, not the weights
  echo "$name: $(cat "$OUT/$name.status"), $(( SECONDS - t0 )) s"
  tail -n 3 "$OUT/$name.log"
done

"$PY" - "$OUT" "$STEPS" "$SMOKE" "$TOTAL_SECONDS" $MODELS > "$OUT/summary.md" <<'EOF'
import json, pathlib, re, sys
out, steps, smoke, total = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1', sys.argv[4]
models = sys.argv[5:]
# Feng et al. 2024, the shakespeare_char table: test loss and the step of the best.
PAPER = {'feng_mingru': ('minGRU', 1.548, 575), 'feng_minlstm': ('minLSTM', 1.555, 625),
         'feng_mamba': ('Mamba', 1.575, 400), 'feng_gpt': ('Transformer', 1.547, 2000)}
EVAL = re.compile(r'^step (\d+)/\d+ \| val loss ([\d.]+) \| val bpc [\d.]+ \((\w+)\)'
                  r'(?: \| (\w+) ([\d.]+))?', re.M)
print('| model | params | steps | train_time (s) | final val loss, stream | final, windows '
      '| best, stream (step) | best, windows (step) | paper: test loss (best step) |')
print('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
notes = []
for name in models:
  label, paper_loss, paper_step = PAPER.get(name.split(',')[0], (name, float('nan'), 0))
  status_file = out / f'{name}.status'
  status = status_file.read_text().strip() if status_file.exists() else 'not run'
  paper = f'{paper_loss:.3f} ({paper_step:,})'
  results_file = out / name / 'results.json'
  if not results_file.exists():
    print(f'| {label} | | | | {status} | | | | {paper} |')
    continue
  r = json.loads(results_file.read_text())
  log = (out / f'{name}.log').read_text()
  seen = {'stream': [], 'windows': []}  # (loss, step) of every evaluation, then the final one
  for m in EVAL.finditer(log):
    seen[m[3]].append((float(m[2]), int(m[1])))
    if m[4]:
      seen[m[4]].append((float(m[5]), int(m[1])))
  for protocol in seen:
    if r.get(f'val_loss_{protocol}') is not None:
      seen[protocol].append((r[f'val_loss_{protocol}'], r['steps']))
  best = {p: (f'{min(v)[0]:.4f} ({min(v)[1]:,})' if v else '') for p, v in seen.items()}
  stderr = r.get('val_loss_windows_stderr')
  windows = f"{r['val_loss_windows']:.4f}" + (f' +- {stderr:.4f}' if stderr else '')
  cut = status.startswith('cut')
  step_text = f"{r['steps']:,} of {steps:,}" + (' (cut)' if cut else '')
  print(f"| {label} | {r['num_params']:,} | {step_text} | {r['train_time']:.1f} | "
        f"{r['val_loss_stream']:.4f} | {windows} | {best['stream']} | {best['windows']} | {paper} |")
  if cut:
    notes.append(f'{label}: cut at step {r["steps"]:,} of {steps:,} by the time limit; its '
                 f'learning rate followed the {steps:,}-step schedule until then (the first '
                 f'{r["steps"]:,} steps of the full run, not a finished shorter run).')
  elif status != 'complete':
    notes.append(f'{label}: {status}')
print()
if smoke:
  print('SMOKE=1: the ,smoke variants (tiny models, a few steps) on this machine: a check of the '
        'script, not results.')
print(f'Time limit: {total} s for all the models (TOTAL_SECONDS), shared out as they went.')
for note in notes:
  print(f'- {note}')
print('Val is nanoGPT\'s val split (111,540 chars), which the paper calls test. "windows": '
      'every non-overlapping window of eval.window (256; the smoke GPT: 32) from the zero state, '
      'the loss over all their characters +- its standard error over windows (nanoGPT\'s '
      'protocol on the whole split; nanoGPT itself averages 200 random windows); "stream": the '
      'split read with the state carried (the GPT: sliding windows scoring their second half). '
      'The paper does not say how its test loss was computed; it evaluated every 25 steps and '
      'reports the best. Best here: over the evaluations (every 250 steps unless EVERY is set) '
      'and the final one.')
EOF
cat "$OUT/summary.md"
