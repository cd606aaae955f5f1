"""Trials per hour of a fused group sharded over every device, against one trial at a time.

  python -m experiments.sweeps.sharded_step_time --hidden 64,256,512 --per_device 1,2,4,8,16

On D devices, a fused group of K x D trials of eight_trials.py's shape (2xH LSTM, batch 32 x 64)
takes one vmapped step whose trial axis is sharded over the devices (`fused.trial_mesh`, as
`--fused` runs it); the baselines are one trial's step on one device, run one trial at a time
(1 / t_one trials per unit time) or one trial per device at once (D / t_one, ideal: no
startup, no contention). Prints the median step times and both ratios for each (H, K).
On a CPU, force devices with XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""
import pathlib
import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.sweeps import eight_trials
from seqlab import steps
from seqlab import train
from seqlab.models import char_rnn
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import fused

flags.DEFINE_list('hidden', ['64', '256'], 'LSTM hidden sizes.')
flags.DEFINE_list('per_device', ['1', '2', '4', '8'], 'Fused trials per device (K).')
flags.DEFINE_integer('repeats', 20, 'Timed steps (median) after two warm-up steps.')


def median_step_seconds(step, repeats: int) -> float:
  step(), jax.block_until_ready(step())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure(hidden: int, per_device: int, repeats: int) -> dict:
  devices = jax.local_devices()
  num_trials = per_device * len(devices)
  base = eight_trials.get_config()
  base.model.hidden_size = hidden
  trials = sweep.make_trials(base, sweep.axis('seed', list(range(num_trials))))
  setups = [train.build(t.config, pathlib.Path('/tmp/unused') / t.name) for t in trials]
  first = setups[0]
  model = char_rnn.CharLM(first.model_config)
  mesh = fused.trial_mesh(num_trials)
  by_trial = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(fused.TRIAL_AXIS))
  step_fn = fused.make_fused_step(model, base.optim, base.train.num_steps,
                                  first.batches.batches_per_epoch)
  fused_step = jax.jit(step_fn, in_shardings=by_trial, out_shardings=by_trial, donate_argnums=0)
  batch = base.data.batch_size
  states = fused._stack([steps.init_state(s.model_config, s.optimizer, batch, t.config.seed)  # pylint: disable=protected-access
                         for s, t in zip(setups, trials)])
  values = {k: np.asarray([fused.trial_values(t.config)[k] for t in trials], np.float32)
            for k in fused.trial_values(base)}
  batches = [s.batches.batch(0) for s in setups]
  inputs = np.stack([b[0] for b in batches])
  targets = np.stack([b[1] for b in batches])
  resets = np.asarray([b[2] for b in batches])
  box = {'fused': jax.device_put(states, by_trial)}
  args = jax.device_put((inputs, targets, resets, values, np.ones(num_trials, np.float32)),
                        by_trial)

  def fused_once():
    box['fused'], metrics = fused_step(box['fused'], *args)
    return metrics

  one_step = jax.jit(steps.make_train_step(model, first.optimizer, first.schedule),
                     donate_argnums=0)
  box['one'] = jax.device_put(steps.init_state(first.model_config, first.optimizer, batch, 0),
                              devices[0])
  one_batch = jax.device_put(batches[0], devices[0])

  def one_once():
    box['one'], metrics = one_step(box['one'], *one_batch)
    return metrics

  t_fused = median_step_seconds(fused_once, repeats)
  t_one = median_step_seconds(one_once, repeats)
  return {'device': devices[0].device_kind, 'devices': len(devices), 'hidden': hidden,
          'trials': num_trials, 'mesh': mesh.size, 'fused_ms': t_fused * 1e3,
          'one_ms': t_one * 1e3, 'vs_one_at_a_time': num_trials * t_one / t_fused,
          'vs_one_per_device': num_trials * t_one / t_fused / len(devices)}


def main(argv):
  del argv
  f = flags.FLAGS
  print('| device | devices | LSTM | trials (K x D) | fused ms/step | one trial ms/step | '
        'trials/hour vs one at a time | vs one per device |')
  print('|---|---:|---|---:|---:|---:|---:|---:|')
  for hidden in (int(h) for h in f.hidden):
    for per_device in (int(k) for k in f.per_device):
      r = measure(hidden, per_device, f.repeats)
      print(f"| {r['device']} | {r['devices']} | 2x{hidden} | {r['trials']} "
            f"({per_device} x {r['mesh']}) | {r['fused_ms']:.2f} | {r['one_ms']:.2f} | "
            f"{r['vs_one_at_a_time']:.2f}x | {r['vs_one_per_device']:.2f}x |", flush=True)


if __name__ == '__main__':
  app.run(main)
