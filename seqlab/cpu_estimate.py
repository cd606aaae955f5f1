"""How long a run will take on this CPU, said at once when the config is sized for an accelerator.

`note(platform, num_devices, num_params, chars_per_step, num_steps)` returns the
one line `note: this config is sized for an accelerator: about 2h41m for 6,000
steps on this CPU; configs/shakespeare.py:cpu trains in about 7 min`, or None:
on a GPU/TPU, or when the estimate is under THRESHOLD_S.

The estimate is the training FLOPs, 6 x parameters x characters (forward and
backward; the recurrent kernels are parameters, so the recurrence's matmuls are
counted; its elementwise gate math, a few percent, is not), over this host's
float32 matmul rate, measured by one small timed JAX matmul (0.1-0.3 s, and only
for configs big enough to need it), times the fraction of that rate that
training reaches (EFFICIENCY_*). Imports no JAX until it measures.
"""

import math
import os
import time
from typing import Callable

THRESHOLD_S = 30 * 60

# The fraction of the measured matmul rate that training reaches, end to end (steps, evaluation,
# checkpoints), on one CPU device and on a host split into one device per core. Calibrated on
# the 2-core CPU of README.md (results; experiments/performance), whose 2048^3 matmul ceiling
# measured 172-208 GFLOP/s: the 3x512 LSTM took 23 min per 1,000 steps on one device (87% of
# 172 in its steps alone; 90% split in two), :cpu 4,900 steps in 7.3 min split in two (70% end to
# end); smaller models reach less (2x128 LSTM: 50% on one device, 64% split). At 172 GFLOP/s
# these give 31 min (one device) and 27 min (split) per 1,000 steps of the 3x512 LSTM, and
# 6.8 min for :cpu: within 1.35x of what was measured.
EFFICIENCY_ONE_DEVICE = 0.65
EFFICIENCY_SPLIT = 0.75

# What the note recommends instead: configs/shakespeare.py:cpu (a 2x256 LSTM on tiny
# Shakespeare, batch 32 x 64, 4,900 steps, 2 CPU devices); tests/test_config_checks.py keeps
# these numbers equal to the config's.
CPU_VARIANT = 'configs/shakespeare.py:cpu'
CPU_VARIANT_PARAMS = 871_745
CPU_VARIANT_CHARS_PER_STEP = 32 * 64
CPU_VARIANT_STEPS = 4_900
CPU_VARIANT_DEVICES = 2

# No CPU core does more than this (fp32, two AVX-512 FMA units at 4 GHz: 256 GFLOP/s): a config
# that would finish under THRESHOLD_S even at this rate needs no measurement.
_MAX_FLOPS_PER_CORE = 300e9


def training_flops(num_params: int, chars_per_step: int, num_steps: int) -> float:
  return 6.0 * num_params * chars_per_step * num_steps


def estimate_seconds(num_params: int, chars_per_step: int, num_steps: int, num_devices: int,
                     flops_per_second: float) -> float:
  """Training time on a CPU whose float32 matmul rate is `flops_per_second`."""
  efficiency = EFFICIENCY_ONE_DEVICE if num_devices <= 1 else EFFICIENCY_SPLIT
  return training_flops(num_params, chars_per_step, num_steps) / (efficiency * flops_per_second)


def measure_flops_per_second(budget_s: float = 0.1) -> float:
  """This host's float32 matmul rate: the best of a few 1024^3 JAX matmuls on the default device
  (one compilation, then `budget_s` of repeats; XLA spreads one matmul over every core). It
  reads within a few percent of seqlab.bench's 2048^3 ceiling, in a fraction of its time."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = 1024
  x = jnp.full((n, n), 0.5, jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  matmul(x).block_until_ready()  # compile
  best, start = math.inf, time.perf_counter()
  while True:
    t = time.perf_counter()
    matmul(x).block_until_ready()
    best = min(best, time.perf_counter() - t)
    if time.perf_counter() - start >= budget_s:
      return 2.0 * n ** 3 / best


def about(seconds: float) -> str:
  """`7 min`, `2h41m`, `3.5 days`."""
  if seconds < 3600:
    return f'{max(1, round(seconds / 60))} min'
  if seconds < 48 * 3600:
    minutes = round(seconds / 60)
    return f'{minutes // 60}h{minutes % 60:02d}m'
  return f'{seconds / 86400:.1f} days'


def note(platform: str, num_devices: int, num_params: int, chars_per_step: int, num_steps: int,
         *, flops_per_second: float | None = None,
         measure: Callable[[], float] = measure_flops_per_second,
         threshold_s: float = THRESHOLD_S) -> str | None:
  """One line saying how long this run will take here and what suits a CPU better, or None.

  None unless `platform` is 'cpu' and the estimate exceeds `threshold_s`.
  `num_steps`: the steps still to train. `flops_per_second`: the host's matmul
  rate if known, else `measure()` runs, and only when the config could take
  that long even on the fastest CPU.
  """
  if platform != 'cpu' or num_steps <= 0:
    return None
  if flops_per_second is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    fastest = (cores or 1) * _MAX_FLOPS_PER_CORE
    if estimate_seconds(num_params, chars_per_step, num_steps, num_devices,
                        fastest) <= threshold_s:
      return None
  rate = flops_per_second or measure()
  seconds = estimate_seconds(num_params, chars_per_step, num_steps, num_devices, rate)
  if seconds <= threshold_s:
    return None
  variant = estimate_seconds(CPU_VARIANT_PARAMS, CPU_VARIANT_CHARS_PER_STEP, CPU_VARIANT_STEPS,
                             CPU_VARIANT_DEVICES, rate)
  return (f'note: this config is sized for an accelerator: about {about(seconds)} for '
          f'{num_steps:,} steps on this CPU; {CPU_VARIANT} trains in about {about(variant)}')
