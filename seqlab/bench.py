"""Benchmarks: `python -m seqlab.bench [--only sampling] [--models smoke,L] [--out FILE]`.

Sampling: chars/s of `seqlab.sampling` (one jitted lax.scan) at batch 1 and 64,
after compilation, timed with `block_until_ready`; random weights (speed does
not depend on them). Prints a markdown table and writes the rows as JSON.
"""

import json
import os
import pathlib
import platform
import statistics
import sys
import time

from absl import app
from absl import flags
import jax

from seqlab import model as model_lib
from seqlab import sampling

# Reference shapes: name -> (model fields, training batch, training seq_len). 65 = tiny Shakespeare.
SHAPES = {
    'smoke': (dict(cell='lstm', num_layers=2, hidden_size=32), 16, 32),
    'S': (dict(cell='lstm', num_layers=2, hidden_size=128), 50, 50),  # char-rnn's default
    'M': (dict(cell='lstm', num_layers=2, hidden_size=256), 32, 256),
    'L': (dict(cell='lstm', num_layers=3, hidden_size=512), 64, 100),  # the post's model
}
VOCAB = 65

_ONLY = flags.DEFINE_list('only', ['sampling'], 'Benchmarks to run: sampling.')
_MODELS = flags.DEFINE_list('models', ['smoke', 'S', 'L'], f'Shapes, from {sorted(SHAPES)}.')
_SAMPLE_BATCHES = flags.DEFINE_list('sample_batches', ['1', '64'], 'Batch sizes for sampling.')
_SAMPLE_LENGTH = flags.DEFINE_integer('sample_length', 2000, 'Symbols generated per timing.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repetitions (the median is reported).')
_OUT = flags.DEFINE_string('out', None, 'JSON file for the results (default: print only).')


def model_config(shape: str, cell: str | None = None) -> model_lib.ModelConfig:
  fields = dict(SHAPES[shape][0])
  if cell:
    fields['cell'] = cell
  return model_lib.ModelConfig(vocab_size=VOCAB, **fields)


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_sampling(shape: str, batch: int, length: int, repeats: int) -> dict:
  config = model_config(shape)
  model = model_lib.CharLM(config)
  params = model_lib.init_params(config, seed=0)
  sample = sampling.make_sampler(model, length)
  key = jax.random.PRNGKey(0)
  start = time.perf_counter()
  jax.block_until_ready(sample(params, [0], batch, key, 0.8))
  compile_s = time.perf_counter() - start
  seconds = _median_seconds(lambda: sample(params, [0], batch, key, 0.8), repeats)
  return {'bench': 'sampling', 'shape': shape, 'model': f'{config.num_layers}x'
          f'{config.hidden_size} {config.cell}', 'batch': batch, 'length': length,
          'chars_per_sec': batch * length / seconds, 'seconds': seconds,
          'first_call_s': compile_s}


def machine() -> dict:
  device = jax.devices()[0]
  return {'platform': device.platform, 'device': device.device_kind,
          'cpu_count': os.cpu_count(), 'processor': platform.processor(),
          'jax': jax.__version__, 'python': platform.python_version()}


def markdown(rows: list[dict]) -> str:
  lines = ['| shape | model | batch | chars/s | first call (compile) s |', '|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["shape"]} | {r["model"]} | {r["batch"]} | {r["chars_per_sec"]:,.0f} | '
                 f'{r["first_call_s"]:.2f} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  unknown = [m for m in _MODELS.value if m not in SHAPES]
  if unknown or set(_ONLY.value) - {'sampling'}:
    print(f'error: unknown --models {unknown} or --only {_ONLY.value}; models: {sorted(SHAPES)}, '
          'benchmarks: sampling', file=sys.stderr)
    sys.exit(2)
  rows = []
  for shape in _MODELS.value:
    for batch in map(int, _SAMPLE_BATCHES.value):
      rows.append(bench_sampling(shape, batch, _SAMPLE_LENGTH.value, _REPEATS.value))
      print(f'sampling {shape} batch {batch}: {rows[-1]["chars_per_sec"]:,.0f} chars/s',
            file=sys.stderr, flush=True)
  info = machine()
  print(f'Sampling on {info["platform"]} ({info["device"]}, {info["cpu_count"]} CPUs), '
        f'jax {info["jax"]}:\n')
  print(markdown(rows))
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps({'machine': info, 'rows': rows}, indent=2))


if __name__ == '__main__':
  app.run(main)
