#!/usr/bin/env bash
# Trials per hour of a fused group sharded over every device of the host, against one trial at a
# time (issue 18, "Measured", on a GPU). At most ~5 minutes on one GPU.
#
#   OUT=/some/dir bash experiments/sweeps/gpu_trials_per_hour.sh
#
# Runs in the repository root; needs no network: a Python (`$PYTHON`, default python3) on which
# `import jax` sees the GPUs and seqlab's dependencies import. Writes $OUT/trials_per_hour.md
# (the table of experiments.sweeps.sharded_step_time) and $OUT/trials_per_hour.log.
# A quick check on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=2 HIDDEN=32 PER_DEVICE=1,2
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/trials_per_hour}
PY=${PYTHON:-python3}
HIDDEN=${HIDDEN:-64,256,512}
PER_DEVICE=${PER_DEVICE:-1,4,16}
mkdir -p "$OUT"
export SEQLAB_DATA_DIR=${SEQLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
"$PY" -c 'import jax; print(jax.devices())' > "$OUT/trials_per_hour.log" 2>&1
timeout "${BUDGET_S:-300}" "$PY" -m experiments.sweeps.sharded_step_time --hidden "$HIDDEN" \
    --per_device "$PER_DEVICE" > "$OUT/trials_per_hour.md" 2>> "$OUT/trials_per_hour.log"
status=$?
cat "$OUT/trials_per_hour.md"
exit $status
