"""Benchmarks: `python -m seqlab.bench [--train lstm:S,gru:M] [--sample S,L] [--out FILE]`.

In one run, on one machine: the fp32 matmul ceiling (a 2048^3 JAX matmul);
seqlab's training throughput (chars/s = batch x seq_len / median step time,
after compilation and warm-up), its GFLOP/s counting 6 x parameters x chars
and their fraction of the ceiling, compile time and peak memory; the same
model trained by PyTorch (nn.Embedding -> nn.LSTM/GRU/RNN -> nn.Linear, Adam,
clipping) when torch is installed; and sampling chars/s at batch 1 and 64.
Every measurement runs in its own process (`seqlab.bench.worker`). Prints
markdown tables; `--out` writes everything as JSON.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging

# name -> (num_layers, hidden_size, batch, seq_len)
SHAPES = {
    'smoke': (2, 32, 16, 32),
    'S': (2, 128, 50, 50),  # char-rnn's default
    'M': (2, 256, 32, 256),
    'L': (3, 512, 64, 100),  # the post's model
}

_TRAIN = flags.DEFINE_list('train', ['lstm:S', 'lstm:M', 'gru:M', 'lstm:L'],
                           'cell:shape pairs to train (shapes: smoke, S, M, L); empty: none.')
_SAMPLE = flags.DEFINE_list('sample', ['smoke', 'S', 'L'], 'Shapes to sample from (LSTM).')
_SAMPLE_BATCHES = flags.DEFINE_list('sample_batches', ['1', '64'], 'Sampling batch sizes.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed training steps (median reported).')
_TORCH = flags.DEFINE_bool('torch', True, 'Also train the PyTorch peer (if torch is installed).')
_MODEL = flags.DEFINE_string('model_fields', '{}', 'JSON of extra ModelConfig fields for seqlab, '
                             'e.g. \'{"unroll": 2}\'.')
_BF16 = flags.DEFINE_bool('bf16', False, 'bf16 matmuls: seqlab model.matmul_dtype=bfloat16, '
                          'PyTorch under autocast(bfloat16), and a bf16 matmul ceiling.')
_CPU_DEVICES = flags.DEFINE_list(
    'cpu_devices', None, 'On a CPU: train seqlab split into each of these numbers of devices '
    '(parallel.cpu_devices; the batch is split over them). Default: 1 and one per core.')
_OUT = flags.DEFINE_string('out', None, 'JSON file for all results.')


def measure(kind: str, **args) -> dict:
  """Runs one measurement in a fresh process and returns its JSON result."""
  result = subprocess.run([sys.executable, '-m', 'seqlab.bench.worker', kind, json.dumps(args)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    tail = result.stderr.strip().splitlines()[-1:] or ['(no output)']
    raise RuntimeError(f'benchmark {kind} {args} failed: {tail[0]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {'platform': device.platform, 'device': device.device_kind, 'cpu_count': os.cpu_count(),
          'processor': platform.processor() or platform.machine(), 'jax': jax.__version__,
          'python': platform.python_version()}


def _parse_train(items: list[str]) -> list[tuple[str, str]]:
  pairs = [tuple(item.split(':')) for item in items]
  bad = [i for i, p in zip(items, pairs) if len(p) != 2 or p[1] not in SHAPES
         or p[0] not in ('rnn', 'gru', 'lstm')]
  if bad:
    raise app.UsageError(f'--train {bad}: use cell:shape, cell in rnn/gru/lstm, shape in '
                         f'{sorted(SHAPES)}')
  return pairs


def cpu_device_counts(flag: list[str] | None, platform_name: str) -> list[int]:
  """How many devices to split a CPU into, one row each; [0] (leave as is) on an accelerator."""
  if platform_name != 'cpu':
    return [0]
  if flag is None:
    return sorted({1, os.cpu_count() or 1})
  try:
    counts = [int(c) for c in flag]
  except ValueError:
    counts = []
  if not counts or min(counts) < 1:
    raise app.UsageError(f'--cpu_devices {flag}: use numbers >= 1, e.g. 1,2')
  return counts


def train_rows(pairs, ceiling: float, steps: int, with_torch: bool, fields: dict,
               bf16: bool, device_counts: list[int]) -> list[dict]:
  """One row per (cell, shape, device count); PyTorch runs once per (cell, shape)."""
  rows = []
  for cell, shape in pairs:
    layers, hidden, batch, seq_len = SHAPES[shape]
    args = dict(cell=cell, num_layers=layers, hidden_size=hidden, batch=batch, seq_len=seq_len,
                steps=steps)
    peer = measure('torch_train', **args, bf16=bf16) if with_torch else None
    # On a CPU, PyTorch also under seqlab's malloc settings (seqlab/host_memory.py): they
    # speed it up too, and a fair ratio compares like with like.
    peer_tuned = measure('torch_train', **args, bf16=bf16, malloc_tuning=True) \
        if with_torch and device_counts != [0] and 'missing' not in peer else None
    for count in device_counts:
      if count and batch % count:
        print(f'train {cell}:{shape}: batch {batch} does not split over {count} devices; '
              'skipped', file=sys.stderr, flush=True)
        continue
      ours = measure('train', **args, cpu_devices=count, **fields)
      gflops = 6 * ours['num_params'] * ours['chars_per_sec'] / 1e9
      row = {'shape': shape, 'cell': cell, 'layers': layers, 'hidden': hidden, 'batch': batch,
             'seq_len': seq_len, 'devices': ours['devices'], 'seqlab': ours, 'gflops': gflops,
             'of_ceiling': gflops / ceiling}
      if peer is not None:
        row['torch'] = peer
        if 'chars_per_sec' in peer:
          row['vs_torch'] = ours['chars_per_sec'] / peer['chars_per_sec']
      if peer_tuned is not None:
        row['torch_malloc_tuned'] = peer_tuned
        row['vs_torch_malloc_tuned'] = ours['chars_per_sec'] / peer_tuned['chars_per_sec']
      rows.append(row)
      print(f'train {cell}:{shape} on {ours["devices"]} device(s): '
            f'{ours["chars_per_sec"]:,.0f} chars/s'
            + (f', {row["vs_torch"]:.2f}x PyTorch' if 'vs_torch' in row else '')
            + (f', {row["vs_torch_malloc_tuned"]:.2f}x PyTorch with the same malloc settings'
               if 'vs_torch_malloc_tuned' in row else ''),
            file=sys.stderr, flush=True)
  return rows


def _mib(result: dict, key: str) -> str:
  return f'{result[key]:,.0f}' if result.get(key) is not None else '-'


def train_table(rows: list[dict], ceiling: float, dtype: str = 'fp32') -> str:
  on_device = any(r['seqlab'].get('peak_device_mib') is not None for r in rows)
  memory = 'peak device MiB' if on_device else 'peak RSS MiB'
  tuned = any('torch_malloc_tuned' in r for r in rows)
  tuned_header = ' PyTorch, same malloc, chars/s | seqlab / that |' if tuned else ''
  lines = [f'Training ({dtype} matmul ceiling measured in this run: {ceiling:,.0f} GFLOP/s)', '',
           '| shape | model | batch x seq | devices | seqlab chars/s | GFLOP/s | of ceiling | '
           f'PyTorch chars/s | seqlab / PyTorch |{tuned_header} compile s | '
           f'{memory} (seqlab / PyTorch) |',
           '|---|---|---|' + '---:|' * (10 if tuned else 8)]
  for r in rows:
    ours, peer = r['seqlab'], r.get('torch', {})
    peer_speed = f'{peer["chars_per_sec"]:,.0f}' if 'chars_per_sec' in peer else \
        peer.get('missing', 'not run')
    ratio = f'**{r["vs_torch"]:.2f}x**' if 'vs_torch' in r else '-'
    tuned_cells = ''
    if tuned:
      other = r.get('torch_malloc_tuned')
      tuned_cells = (f' {other["chars_per_sec"]:,.0f} | **{r["vs_torch_malloc_tuned"]:.2f}x** |'
                     if other else ' - | - |')
    key = 'peak_device_mib' if on_device else 'peak_rss_mib'
    lines.append(f'| {r["shape"]} | {r["layers"]}x{r["hidden"]} {r["cell"]} | {r["batch"]} x '
                 f'{r["seq_len"]} | {r["devices"]} | {ours["chars_per_sec"]:,.0f} | '
                 f'{r["gflops"]:.1f} | {r["of_ceiling"]:.0%} | {peer_speed} | {ratio} |'
                 f'{tuned_cells} {ours["compile_s"]:.1f} | {_mib(ours, key)} / {_mib(peer, key)} |')
  return '\n'.join(lines)


def sample_rows(shapes: list[str], batches: list[int], fields: dict) -> list[dict]:
  rows = []
  for shape in shapes:
    layers, hidden, _, _ = SHAPES[shape]
    for batch in batches:
      result = measure('sample', cell='lstm', num_layers=layers, hidden_size=hidden, batch=batch,
                       **fields)
      rows.append({'shape': shape, 'layers': layers, 'hidden': hidden, 'batch': batch, **result})
      print(f'sample {shape} batch {batch}: {result["chars_per_sec"]:,.0f} chars/s',
            file=sys.stderr, flush=True)
  return rows


def sample_table(rows: list[dict]) -> str:
  lines = ['Sampling (2,000 characters per call, temperature 0.8, no top-k)', '',
           '| shape | model | batch | chars/s | first call (compile) s |',
           '|---|---|---:|---:|---:|']
  for r in rows:
    lines.append(f'| {r["shape"]} | {r["layers"]}x{r["hidden"]} lstm | {r["batch"]} | '
                 f'{r["chars_per_sec"]:,.0f} | {r["first_call_s"]:.2f} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  pairs = _parse_train([t for t in _TRAIN.value if t])
  sample_shapes = [s for s in _SAMPLE.value if s]
  if set(sample_shapes) - set(SHAPES):
    raise app.UsageError(f'--sample {sample_shapes}: shapes are {sorted(SHAPES)}')
  info = machine()
  print(f'seqlab.bench on {info["platform"]} ({info["processor"]}, {info["cpu_count"]} CPUs), '
        f'jax {info["jax"]}, python {info["python"]}\n')
  results = {'machine': info, 'bf16': _BF16.value}
  fields = json.loads(_MODEL.value)
  if _BF16.value:
    fields['matmul_dtype'] = 'bfloat16'
  if pairs:
    # 2048^3 saturates a CPU; an accelerator needs a larger product to reach its peak.
    size = 2048 if info['platform'] == 'cpu' else 8192
    ceiling = measure('matmul', size=size,
                      dtype='bfloat16' if _BF16.value else 'float32')['gflops']
    results['matmul_gflops'] = ceiling
    counts = cpu_device_counts(_CPU_DEVICES.value, info['platform'])
    results['train'] = train_rows(pairs, ceiling, _STEPS.value, _TORCH.value, fields, _BF16.value,
                                  counts)
    print(train_table(results['train'], ceiling, 'bf16' if _BF16.value else 'fp32') + '\n')
  if sample_shapes:
    results['sample'] = sample_rows(sample_shapes, [int(b) for b in _SAMPLE_BATCHES.value], fields)
    print(sample_table(results['sample']))
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=2))


def run() -> None:
  """The command: `python -m seqlab.bench`."""
  app.run(main)
