r"""Where a zoo model's train step goes: `python experiments/performance/zoo_profile.py MODEL SIZE`.

  python experiments/performance/zoo_profile.py mingru 0.8M --devices 2 --rounds 5

In one process, this compiles variants of the bench's train step (seqlab/bench/measures.py;
batch 32 x seq 256 for 0.8M and 5M) for one zoo row (seqlab/bench/zoo.py) and times them in
alternation (round-robin, `--rounds` times; median per variant), so that the load of this
shared machine, which moves from minute to minute, hits every variant alike:

  model        the model as the bench trains it (its config's scan form)
  other scan   the other scan form (sequential <-> associative), for a model with a scan
  no scan      its linear recurrence replaced by elementwise work without the time loop
               (its declared stub_scans: seqlab.bench.measures.stub_model_scans): the model
               without its scan
  matmuls      only the weight matmuls that the FLOP count counts (seqlab.models.flops.matrices),
               at the step's shapes: x (B*T x in) @ W forward and both backward products, with
               the batch split over the devices as in training. What its 6N FLOPs cost alone.
  ceiling      the bench's 2048^3 fp32 matmul (the denominator of "of ceiling"), its rows
               split over the devices

Prints one line per variant (ms per step, chars/s, GFLOP/s by the model's own count) and, with
`--out`, JSON. model - no scan = the scan's time; no scan - matmuls = everything else
(norms, gates, activations, residuals, the loss, Adam, the devices' all-reduce). For each train
step variant it also prints XLA's own cost analysis per character (`flops`, `bytes accessed`:
every fused op's operands and results, an upper bound on the memory traffic; the program is
one device's, its numbers are scaled to the whole batch). XLA counts a
while loop's body once, not once per step: a variant with a sequential scan is undercounted.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
from seqlab import host_memory

host_memory.reuse_freed_memory()  # as launch.py and the bench's train worker


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('model')
  parser.add_argument('size')
  parser.add_argument('--devices', type=int, default=0, help='CPU devices (0: JAX default)')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--out', default=None)
  args = parser.parse_args()

  from seqlab import parallel
  parallel.use_cpu_devices(args.devices)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from seqlab.models import flops
  from seqlab.bench import measures
  from seqlab.bench import zoo
  from seqlab.bench.timing import VOCAB
  from seqlab.models import registry

  batch, seq_len = zoo.SIZES[args.size]
  placement = parallel.Placement()
  variants = {}
  group = zoo.group(args.model, args.size)
  config = registry.config_of(group, VOCAB)
  count = flops.per_char(config)
  variants['model'] = measures.build_step(config, placement, batch, seq_len, 100)[0]
  if zoo.has_scan(args.model):
    other = 'associative' if group['scan'] == 'sequential' else 'sequential'
    variants[f'{other} scan'] = measures.build_step(
        registry.config_of({**group, 'scan': other}, VOCAB), placement, batch, seq_len, 100)[0]
    # The last step built: the stubs stay for the rest of the process, and nothing else here
    # traces a model (the steps above are compiled already).
    measures.stub_model_scans()
    variants['no scan'] = measures.build_step(config, placement, batch, seq_len, 100)[0]

  rows = batch * seq_len
  rng = np.random.default_rng(0)
  mats = flops.matrices(config)
  put = lambda a, sharding: jax.device_put(a, sharding)
  xs = [put(rng.standard_normal((rows, i), np.float32), placement.batch_split) for _, i, _ in mats]
  gs = [put(rng.standard_normal((rows, o), np.float32), placement.batch_split) for _, _, o in mats]
  ws = [put(rng.standard_normal((i, o), np.float32) / np.sqrt(i), placement.replicated)
        for _, i, o in mats]

  @jax.jit
  def matmuls(xs, ws, gs):
    out = []
    for x, w, g in zip(xs, ws, gs):
      y, vjp = jax.vjp(jnp.matmul, x, w)
      out.append((y, *vjp(g)))
    return out
  variants['matmuls'] = lambda: jax.block_until_ready(matmuls(xs, ws, gs))

  # The bench's ceiling is a 2048^3 matmul on one device using every core; here, with the
  # rows of `a` split over the devices (one per core), the same product on every core.
  a = put(rng.standard_normal((2048, 2048), np.float32), placement.batch_split)
  b = put(rng.standard_normal((2048, 2048), np.float32), placement.replicated)
  dot = jax.jit(jnp.dot)
  variants['ceiling'] = lambda: jax.block_until_ready(dot(a, b))

  for fn in variants.values():  # warm-up (and the first run of each compiled step)
    fn()
    fn()
  times = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name, fn in variants.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  ceiling = 2 * 2048 ** 3 / statistics.median(times['ceiling']) / 1e9
  result = {'model': args.model, 'size': args.size, 'describe': registry.describe(config),
            'group': group, 'devices': placement.num_devices, 'batch': batch, 'seq_len': seq_len,
            'flops_per_char': count, 'ceiling_gflops': ceiling, 'rounds': args.rounds,
            'step_s': {}, 'spread_s': {}}
  print(f'{args.model}:{args.size} ({result["describe"]}) on {placement.num_devices} device(s), '
        f'batch {batch} x seq {seq_len}; {ceiling:.0f} GFLOP/s 2048^3 matmul ceiling')
  result['xla_cost_per_char'] = {}
  for name, fn in variants.items():
    if hasattr(fn, 'compiled'):
      cost = fn.compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      # The compiled program is one device's (SPMD): its share of the batch, rows / devices.
      result['xla_cost_per_char'][name] = {
          k: cost.get(k, 0) * placement.num_devices / rows for k in ('flops', 'bytes accessed')}
  for name, ts in times.items():
    if name == 'ceiling':
      continue
    seconds = statistics.median(ts)
    result['step_s'][name] = seconds
    result['spread_s'][name] = [min(ts), max(ts)]
    work = count['matmul'] if name == 'matmuls' else count['total']
    gflops = work * rows / seconds / 1e9
    print(f'  {name:18s} {seconds * 1e3:7.0f} ms/step ({min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f})'
          f' {rows / seconds:9,.0f} chars/s  {gflops:6.1f} GFLOP/s  {gflops / ceiling:4.0%} of '
          'ceiling' + (' (XLA per char: {:,.0f} FLOPs, {:,.0f} bytes)'.format(
              *result['xla_cost_per_char'][name].values())
                       if name in result['xla_cost_per_char'] else ''))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  main()
