"""Per-step time of 8 fused trials (one vmapped step) vs one trial's step, same shape.

Usage: python -m experiments.sweeps.fused_step_time 64 256   (hidden sizes)
"""
import pathlib
import sys
import time

import jax
import numpy as np

from experiments.sweeps import eight_trials as E
from seqlab.sweeps import fused
from seqlab.models import char_rnn as model_lib
from seqlab import steps
from seqlab.sweeps import declare as sweep
from seqlab import train


def timed(fn, n=20):
  fn(); jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(n):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / n


for hidden in [int(h) for h in sys.argv[1:]] or [64]:
  base = E.get_config()
  base.model.hidden_size = hidden
  trials = sweep.make_trials(base, E.get_sweep())
  setups = [train.build(t.config, pathlib.Path('/tmp/nonexist') / t.name) for t in trials]
  s0, K = setups[0], len(trials)
  model = model_lib.CharLM(s0.model_config)
  fstep = jax.jit(fused.make_fused_step(model, base.optim, 300, s0.batches.batches_per_epoch),
                  donate_argnums=0)
  box = {'f': jax.device_put(fused._stack([steps.init_state(s.model_config, s.optimizer, 32, t.config.seed)
                                           for s, t in zip(setups, trials)]))}
  values = {k: np.asarray([fused.trial_values(t.config)[k] for t in trials], np.float32)
            for k in fused.trial_values(base)}
  bs = [s.batches.batch(0) for s in setups]
  inp, tgt = np.stack([b[0] for b in bs]), np.stack([b[1] for b in bs])
  rst, lr = np.asarray([b[2] for b in bs]), np.ones(K, np.float32)

  def fused_once():
    box['f'], m = fstep(box['f'], inp, tgt, rst, values, lr)
    return m
  single = jax.jit(steps.make_train_step(model_lib.CharLM(setups[2].model_config), s0.optimizer,
                                         s0.schedule), donate_argnums=0)
  box['s'] = jax.device_put(steps.init_state(setups[2].model_config, s0.optimizer, 32, 0))

  def single_once():
    box['s'], m = single(box['s'], bs[0][0], bs[0][1], bs[0][2])
    return m
  tf, ts = timed(fused_once), timed(single_once)
  print(f'{jax.devices()[0].device_kind} 2x{hidden} LSTM batch 32 x 64: fused K={K} '
        f'{tf*1e3:.2f} ms/step, one trial {ts*1e3:.2f} ms/step -> fused trains '
        f'{K * ts / tf:.2f}x the trials per unit time', flush=True)
